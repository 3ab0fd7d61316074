"""The GradregError hierarchy: each error is one clear line that names the thing, states the rule
and echoes the value."""

from __future__ import annotations


class GradregError(Exception):
    """Base class of every error gradreg raises on bad input or a failed run."""

    exit_code = 2  # usage or input error (see README: exit status)


class DataError(GradregError, ValueError):
    """A data source is missing, unreadable or breaks a rule (non-numeric cell, missing value...)."""


class ConfigError(GradregError, ValueError):
    """An option has a value outside its allowed range."""


class ModelFileError(GradregError, ValueError):
    """A model file is missing, corrupted, truncated or from an unknown format version."""


class DivergenceError(GradregError, RuntimeError):
    """Training diverged: the loss became NaN/inf or grew by 1000x."""

    exit_code = 1  # a run-time failure, not bad input


class MissingDependencyError(GradregError):
    """An optional package that the requested feature needs (matplotlib for plots) is missing."""

    exit_code = 1  # the input was fine; this machine lacks a package


def cell(source: str, line: int | None = None, column: str | None = None) -> str:
    """Format the 'where' part of a message: ``file.csv, line 7, column 'rainfall'``."""
    parts = [source]
    if line is not None:
        parts.append(f"line {line}")
    if column is not None:
        parts.append(f"column {column!r}")
    return ", ".join(parts)
