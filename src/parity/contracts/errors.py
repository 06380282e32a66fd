"""Errors of the contracts package: every one names the file, line and column concerned."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import ParityError

__all__ = ["Problem", "ContractError", "MissingDependencyError"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong (or worth a warning) at a place in a contract file.

    Example:
        >>> print(Problem("c.yaml", 3, 5, "unknown key 'statment'"))
        c.yaml:3:5: unknown key 'statment'
    """

    path: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}: {self.message}"

    def to_dict(self) -> dict[str, object]:
        return {"path": self.path, "line": self.line, "column": self.column, "message": self.message}

    @classmethod
    def from_dict(cls, d: dict) -> Problem:
        return cls(str(d["path"]), int(d["line"]), int(d["column"]), str(d["message"]))


class ContractError(ParityError):
    """A contract file breaks the schema: an unknown or misspelled key, a duplicate key, a wrong
    type, a dangling reference. ``problems`` lists every one found (file, line, column, what was
    expected); the message shows them all.

    Example:
        >>> e = ContractError([Problem("c.yaml", 2, 1, "duplicate key 'id' (first at line 1)")])
        >>> str(e), e.line
        ("c.yaml:2:1: duplicate key 'id' (first at line 1)", 2)
    """

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        first = self.problems[0] if self.problems else Problem("?", 0, 0, "invalid contract")
        text = "\n".join(str(p) for p in self.problems[:50])
        if len(self.problems) > 50:
            text += f"\n... and {len(self.problems) - 50} more problems"
        super().__init__(text)
        self.path = os.fspath(first.path)
        self.line, self.column = first.line, first.column


class MissingDependencyError(ParityError):
    """An optional dependency of the contracts feature (PyYAML) is not installed.

    >>> from parity.contracts._yaml import require_yaml
    >>> require_yaml().__name__  # installed here; without PyYAML this raises MissingDependencyError
    'yaml'
    >>> from parity import exitcodes
    >>> e = MissingDependencyError("parity contract needs PyYAML; install it with pip install PyYAML.")
    >>> isinstance(e, parity.ParityError), exitcodes.for_exception(e)  # a could-not-compare error
    (True, 2)
    """
