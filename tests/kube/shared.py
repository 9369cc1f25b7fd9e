"""Where the maintainers' shared folder is: `../shared` beside the repository.

CI clones the repository with a copy of `shared/` beside it; the maintainers update that
folder over time, so the tests read it there rather than from a copy in the repository.
In a git worktree the folder sits beside the main checkout instead. Without it the tests
that need it are skipped, except in CI (`CI=true`), where they fail.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _candidates() -> list[Path]:
    found = [REPO / ".." / "shared"]
    git = REPO / ".git"
    if git.is_file():  # a worktree: .git says "gitdir: <main>/.git/worktrees/<name>"
        gitdir = Path(git.read_text().split(":", 1)[1].strip())
        found.append(gitdir.parents[2] / ".." / "shared")
    return found


def shared_path(name: str) -> Path:
    """`shared/<name>`, or skip (fail in CI) naming where it was looked for.

    Callable at module level: a test module that needs the folder is skipped whole.
    """
    for base in _candidates():
        if (base / name).exists():
            return (base / name).resolve()
    where = " or ".join(str(base.resolve()) for base in _candidates())
    message = (
        f"shared/{name} not found (looked in {where}); "
        "CI keeps a copy of shared/ beside the repository"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message, allow_module_level=True)
