"""Reading a YAML file that must hold one mapping, with errors that name the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def read_text(path: Path, error: type[ValueError]) -> str:
    """The file's text, or `error` naming the file and why it cannot be read."""
    try:
        return path.read_text()
    except OSError as err:
        raise error(f"{path}: cannot read: {err.strerror}") from None


def yaml_mapping(text: str, source: str, what: str, error: type[ValueError]) -> dict[str, Any]:
    """The mapping in `text`, or `error` saying why not (bad YAML, or not a mapping)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise error(f"{source}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise error(f"{source}: a {what} is a YAML mapping, got {type(data).__name__}")
    return data
