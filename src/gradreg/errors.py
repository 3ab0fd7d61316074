"""The GradregError hierarchy: each error is one clear line that names the thing, states the rule
and echoes the value."""

from __future__ import annotations

import os
import re
import sys
import warnings
from collections.abc import Mapping
from typing import Any

_PLACEHOLDER = re.compile(r"\{(\w+)(=?)\}")


class GradregError(Exception):
    """Base class of every error gradreg raises on bad input or a failed run.

    A message names options as placeholders, so that each audience reads its own spelling:
    ``{cov_type}`` is the option's name and ``{cov_type=}`` the name with its value, given as a
    keyword. ``str(e)`` is what Python callers see (``cov_type='HC9'``); the CLI calls
    :meth:`render` with its table of flags (``--cov HC9``).

    Parameters
    ----------
    message : str
        One line: the thing, the rule and the value.
    **values
        The value of each option the message names; the first is ``e.field``.

    Examples
    --------
    >>> e = ConfigError("{cov_type} must be one of HC0, HC1; got {cov_type=}", cov_type="HC9")
    >>> str(e), e.render({"cov_type": "--cov"}), e.field
    ("cov_type must be one of HC0, HC1; got cov_type='HC9'", '--cov must be one of HC0, HC1; got --cov HC9', 'cov_type')
    """

    exit_code = 2  # usage or input error (see README: exit status)

    def __init__(self, message: str = "", **values: Any) -> None:
        self.template, self.values = message, values
        self.field = next(iter(values), None)  # the option the message is about, if any
        super().__init__(self.render() if values else message)

    def render(self, flags: Mapping[str, str] | None = None) -> str:
        """The message with each placeholder spelled as ``flags`` maps it (a CLI's flags), else
        as the Python argument.

        Parameters
        ----------
        flags : mapping of str to str, optional
            Option name → flag, e.g. ``{"cov_type": "--cov", "fit_intercept": "--no-intercept"}``.

        Returns
        -------
        str
        """
        if not self.values:
            return self.template

        def spell(m: re.Match) -> str:
            name, with_value = m.group(1), m.group(2)
            if name not in self.values:
                return m.group(0)  # braces that are not a placeholder stay as they are
            flag = (flags or {}).get(name)
            if not with_value:
                return flag or name
            value = self.values[name]
            if flag is None:
                return f"{name}={value!r}"
            return flag if isinstance(value, bool) else f"{flag} {value}"  # a switch is its own value

        return _PLACEHOLDER.sub(spell, self.template)


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


_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def warn_user(message: str | Warning, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` attributed to the first caller outside gradreg, so that Python shows the
    user's own line, not a line of gradreg's (``skip_file_prefixes`` needs Python 3.12).

    Parameters
    ----------
    message : str or Warning
    category : type of Warning
        Ignored when ``message`` is a Warning instance.
    """
    level, frame = 2, sys._getframe(1)  # stacklevel 2 is our caller, sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE + os.sep):
        level, frame = level + 1, frame.f_back
    warnings.warn(message, category, stacklevel=level)
