"""Small helpers for the one-line errors every command gives."""

from __future__ import annotations


def one_line(exc: BaseException | str, limit: int | None = 300) -> str:
    """The text of ``exc`` on one line (runs of whitespace, newlines included, become one space), cut at
    ``limit`` characters (``None``: whole); an exception without a message gives its type's name."""
    text = " ".join(str(exc).split())
    if not text and isinstance(exc, BaseException):
        text = type(exc).__name__
    return text if limit is None else text[:limit]
