"""`phalanx ...` run in-process, its output rendered a given number of columns wide.

`controller.cli` makes its rich console when it is imported, and rich then fixes the
console's width to COLUMNS if that is set (pytest-xdist workers run with COLUMNS=80), so
COLUMNS given to one invocation would not reach it: the console is swapped for one of
the width asked for, for the call.
"""

from __future__ import annotations

from collections.abc import Sequence
from unittest import mock

from click.testing import Result
from rich.console import Console
from typer.testing import CliRunner

from controller import cli


def invoke(args: Sequence[str], columns: int) -> Result:
    """The CLI's result for `args`, typer's and our own output `columns` wide."""
    with mock.patch.object(cli, "console", Console(width=columns)):
        return CliRunner().invoke(cli.app, list(args), env={"COLUMNS": str(columns)})
