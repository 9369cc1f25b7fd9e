"""Errors the engine raises for bad input: each says what is wrong and where."""

from __future__ import annotations


class InvalidInput(ValueError):
    """Input the engine cannot accept; `where` names the object and field at fault."""

    def __init__(self, where: str, what: str) -> None:
        super().__init__(f"{where}: {what}")
        self.where = where
        self.what = what
