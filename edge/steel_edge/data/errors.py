"""Data errors that name the file and line, and the raise-or-skip policy the loaders share."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NoReturn

log = logging.getLogger("steel_edge.data")

OnError = Literal["raise", "skip"]


@dataclass(frozen=True)
class Issue:
    """One problem in a data set, located as precisely as we can: file, and line for CSV rows."""

    path: Path
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else str(self.path)
        return f"{where}: {self.message}"


class DataError(ValueError):
    """A data set that cannot be used as it is; ``issue`` says where and why."""

    def __init__(self, issue: Issue) -> None:
        super().__init__(str(issue))
        self.issue = issue

    @property
    def path(self) -> Path:
        return self.issue.path

    @property
    def line(self) -> int | None:
        return self.issue.line


class IssueLog:
    """Collects issues under one policy: ``raise`` stops at the first, ``skip`` warns and goes on."""

    def __init__(self, on_error: OnError) -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
        self.on_error = on_error
        self.issues: list[Issue] = []

    def report(self, path: Path, line: int | None, message: str) -> None:
        """Record a problem with one row or file; raises DataError under the ``raise`` policy."""
        issue = Issue(Path(path), line, message)
        if self.on_error == "raise":
            raise DataError(issue)
        log.warning("skipped: %s", issue)
        self.issues.append(issue)

    def fatal(self, path: Path, line: int | None, message: str) -> NoReturn:
        """A problem no policy can skip past (a missing or unreadable label file)."""
        raise DataError(Issue(Path(path), line, message))
