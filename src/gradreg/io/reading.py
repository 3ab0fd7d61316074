"""Files as people write them: the delimiter detected from a file's head, decimal commas,
thousands separators, and date columns turned into numbers.

:class:`ReadOptions` holds how a table is read (``--delimiter``, ``--decimal``, ``--thousands``,
``--dates``); :func:`sniff_delimiter` picks a delimiter that was not given; :func:`convert` turns
text with thousands separators into numbers and date columns into numeric features, so that
column selection then sees ordinary numeric columns.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, DataError

__all__ = ["ReadOptions", "sniff_delimiter", "convert", "date_features", "DATE_PARTS", "DATES_AS"]

CANDIDATES = (",", ";", "\t", "|")
SHOWN = {",": "','", ";": "';'", "\t": "tab", "|": "'|'"}
DECIMALS = (".", ",")
THOUSANDS = (",", ".", " ", "'")
DATES_AS = ("days", "parts")
DATE_PARTS = ("year", "month", "day", "dayofweek")
US_PER_DAY = 86_400_000_000
KEPT = "\x00kept:"  # the text as written of a --keep column that is also converted (a date column)


@dataclass
class ReadOptions:
    """How a table is read: what a file says about itself only to a reader who knows its habits.

    Parameters
    ----------
    delimiter : str, optional
        CSV field separator; None detects it from the file's head (``,`` ``;`` tab ``|``).
    decimal : str
        The decimal mark of numbers: ``.`` or ``,``.
    thousands : str, optional
        A thousands separator to remove from numbers read as text (``,`` ``.`` space ``'``).
    dates : mapping of str to str
        Date or datetime columns to turn into numbers, each to ``days`` (days since
        1970-01-01, fractional for times) or ``parts`` (``COL.year``, ``COL.month``,
        ``COL.day``, ``COL.dayofweek`` with Monday 0).
    keep : sequence of str
        Columns read as text as written (CSV), never converted: IDs copied beside predictions.
    text : sequence of str
        Columns read as text from a CSV whatever their first rows hold: categorical columns,
        whose levels may be ``1``, ``2`` and then ``X9``.
    """

    delimiter: str | None = None
    decimal: str = "."
    thousands: str | None = None
    dates: dict[str, str] = field(default_factory=dict)
    keep: tuple[str, ...] = ()
    text: tuple[str, ...] = ()

    @classmethod
    def of(
        cls,
        delimiter: str | None = None,
        decimal: str | None = None,
        thousands: str | None = None,
        dates: Sequence[str] | str | Mapping[str, str] | None = None,
        dates_as: str = "days",
        keep: Sequence[str] | str | None = None,
    ) -> ReadOptions:
        """Options from a command line's or a caller's values, checked.

        Parameters
        ----------
        delimiter : str, optional
            As for :func:`~gradreg.io.parse_delimiter`.
        decimal : str, optional
            ``.`` (default) or ``,``; also ``comma``, ``point``.
        thousands : str, optional
            ``,`` ``.`` ``'`` or space (also ``comma``, ``point``, ``space``).
        dates : str, sequence of str or mapping, optional
            Column names (comma-separated in a string), or a mapping name → ``days``/``parts``.
        dates_as : {"days", "parts"}
            What each column of ``dates`` becomes when it is not a mapping.
        keep : str or sequence of str, optional
            Columns read as text (comma-separated in a string).

        Returns
        -------
        ReadOptions

        Raises
        ------
        ConfigError
            An unknown decimal mark or separator, the same character as both, or an unknown
            ``dates_as``.
        """
        from .formats import parse_delimiter

        names = {"comma": ",", "point": ".", "dot": ".", "period": ".", "space": " ", "apostrophe": "'"}
        dec = names.get(str(decimal).lower(), decimal) if decimal is not None else "."
        if dec not in DECIMALS:
            raise ConfigError("{decimal} must be '.' or ','; got {decimal=}", decimal=decimal)
        sep = names.get(str(thousands).lower(), thousands) if thousands is not None else None
        if sep is not None and sep not in THOUSANDS:
            raise ConfigError("{thousands} must be ',', '.', \"'\" or space; got {thousands=}", thousands=thousands)
        if sep is not None and sep == dec:
            raise ConfigError(
                "{thousands} and {decimal} must differ; got {thousands=} and {decimal=}", thousands=thousands, decimal=dec
            )
        if dates_as not in DATES_AS:
            raise ConfigError("{dates_as} must be days or parts; got {dates_as=}", dates_as=dates_as)
        if isinstance(dates, Mapping):
            spec = {str(k): str(v) for k, v in dates.items()}
            bad = [v for v in spec.values() if v not in DATES_AS]
            if bad:
                raise ConfigError("{dates} values must be days or parts; got {dates=}", dates=dict(dates))
        else:
            spec = {n: dates_as for n in _names(dates)}
        return cls(parse_delimiter(delimiter), dec, sep, spec, tuple(_names(keep)))

    @property
    def converts(self) -> bool:
        """Whether :func:`convert` has anything to do."""
        return bool(self.thousands or self.dates or self.decimal != ".")

    def columns(self, names: Sequence[str]) -> list[str]:
        """The columns a table with raw columns ``names`` has once converted (a date column as
        parts becomes its parts, in its place).

        Parameters
        ----------
        names : sequence of str

        Returns
        -------
        list of str
        """
        out: list[str] = []
        for n in names:
            out += date_features(n, self.dates[n]) if n in self.dates else [n]
        return out

    def sources(self, columns: Sequence[str], raw: Sequence[str]) -> list[str]:
        """The raw columns (of ``raw``) that the converted ``columns`` come from, in order, once each.

        Parameters
        ----------
        columns : sequence of str
        raw : sequence of str

        Returns
        -------
        list of str
        """
        origin = {d: n for n in raw if n in self.dates for d in date_features(n, self.dates[n])}
        origin.update({kept_name(n): n for n in raw if n in self.keep})
        out: list[str] = []
        for c in columns:
            s = origin.get(c, c)
            if s not in out:
                out.append(s)
        return out


def kept_name(column: str) -> str:
    """The name under which :func:`convert` keeps the text of a ``keep`` column it converts."""
    return KEPT + column


def kept_column(table: Any, column: str) -> Any:
    """A ``keep`` column of a converted pyarrow table, as read (before a date became numbers).

    Parameters
    ----------
    table : pyarrow.Table
    column : str

    Returns
    -------
    pyarrow.ChunkedArray
    """
    names = table.column_names
    return table.column(kept_name(column) if kept_name(column) in names else column)


def _names(items: Sequence[str] | str | None) -> list[str]:
    if items is None:
        return []
    if isinstance(items, str):
        items = [items]
    out: list[str] = []
    for item in items:
        out += [s.strip() for s in str(item).split(",") if s.strip() and s.strip() not in out]
    return out


def date_features(column: str, how: str) -> list[str]:
    """The numeric features a date column becomes: ``[column]`` (days) or its parts.

    Parameters
    ----------
    column : str
    how : {"days", "parts"}

    Returns
    -------
    list of str
    """
    return [column] if how == "days" else [f"{column}.{p}" for p in DATE_PARTS]


def sniff_delimiter(head: bytes, default: str, truncated: bool = True) -> str:
    """The delimiter of a CSV file from its first bytes.

    Each candidate (``,`` ``;`` tab ``|``) splits the first lines (quote-aware); the ones that
    give every line the same number of fields, more than one, are consistent. The suffix's
    ``default`` wins among them, else the one giving the most fields. With none consistent
    (one column, or ragged lines), ``default`` stays: reading then says what is wrong.

    Parameters
    ----------
    head : bytes
        The file's first bytes (header and some lines).
    default : str
        The delimiter of the file's suffix (``,``; tab for ``.tsv``).
    truncated : bool
        The head may end inside a line: its last line is not counted.

    Returns
    -------
    str
    """
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    if truncated and "\n" in text:
        text = text[: text.rindex("\n") + 1]
    best: tuple[int, str] | None = None
    for d in CANDIDATES:
        try:
            counts = [len(r) for r in csv.reader(io.StringIO(text, newline=""), delimiter=d) if r][:50]
        except csv.Error:
            continue
        if not counts or counts[0] < 2 or any(c != counts[0] for c in counts):
            continue
        if d == default:
            return d
        if best is None or counts[0] > best[0]:
            best = counts[0], d
    return default if best is None else best[1]


def detected_notice(shown: str, delimiter: str) -> str:
    """The note that says a file was read with a delimiter it did not name."""
    return f"{shown}: read as {SHOWN.get(delimiter, repr(delimiter))}-separated (detected; give --delimiter to choose)"


def convert(table: Any, options: ReadOptions | None) -> Any:
    """A :class:`~gradreg.io.Table` with text numbers and date columns turned into numbers.

    With ``thousands`` (or a decimal comma), a text column whose cells are numbers once the
    separator is removed (and the decimal mark made a point) becomes float64 (cells that are still not numbers are an error naming file, line, column and
    value; a column with no number at all stays text). Each column of ``dates`` becomes days
    since 1970-01-01 or its parts. ``keep`` columns are left as they are.

    Parameters
    ----------
    table : Table
    options : ReadOptions, optional

    Returns
    -------
    Table
        The same Table when there is nothing to convert.

    Raises
    ------
    DataError
        A dates column that is missing or holds something else than dates.
    """
    if options is None or not options.converts or table.data is None:
        return table
    import pyarrow as pa

    data = table.data
    names = [str(n) for n in data.column_names]
    lacking = [c for c in options.dates if c not in names]
    if lacking:
        raise DataError(
            f"{table.source}: no column named {', '.join(map(repr, lacking))}, a date column (--dates); columns are {', '.join(names)}"
        )
    arrays, out_names = [], []
    for i, n in enumerate(names):
        col = data.column(i)
        if n in options.dates:
            parts = _date_columns(table, n, col, options.dates[n])
            arrays += list(parts.values())
            out_names += list(parts)
            if n in options.keep:  # copied beside predictions as written
                arrays.append(col)
                out_names.append(kept_name(n))
            continue
        if (options.thousands or options.decimal != ".") and n not in options.keep and _is_text(col.type):
            parsed = _text_numbers(table, n, col, options)
            if parsed is not None:
                col = parsed
        arrays.append(col)
        out_names.append(n)
    from dataclasses import replace

    return replace(table, data=pa.Table.from_arrays(arrays, names=out_names))


def _is_text(typ: Any) -> bool:
    import pyarrow as pa

    return pa.types.is_string(typ) or pa.types.is_large_string(typ)


def _text_numbers(table: Any, name: str, col: Any, options: ReadOptions) -> Any:
    """A text column as float64 with the thousands separator removed; None when no cell is a
    number (a text column); an error naming the first cell that is not a number. Vectorized:
    a cell is a number when it matches :func:`_number_pattern`."""
    import pyarrow as pa
    import pyarrow.compute as pc

    sep, dec = options.thousands, options.decimal
    text = pc.utf8_trim_whitespace(col)
    text = pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)
    valid = pc.match_substring_regex(text, _number_pattern(sep, dec))  # null where the cell is
    present = pc.invert(pc.is_null(text))
    good = int(pc.sum(pc.cast(pc.fill_null(valid, False), pa.int64())).as_py() or 0)
    if good == 0:
        return None
    if good < int(pc.sum(pc.cast(present, pa.int64())).as_py() or 0):
        bad = pc.and_(present, pc.invert(pc.fill_null(valid, True)))
        row = pc.index(bad, True).as_py()
        v = text[row].as_py()
        if sep:
            rule = f"a number with {sep!r} between groups of three digits" + (
                f" and {dec!r} as decimal mark" if dec != "." else ""
            )
            raise DataError(f"{table.where(row, name)}: expected {rule} (--thousands {_shown(sep)}); got {v!r}")
        hint = " (thousands separators? give --thousands '.')" if re.match(r"[-+]?\d{1,3}(\.\d{3})+$", v) else ""
        raise DataError(
            f"{table.where(row, name)}: expected a number with {dec!r} as decimal mark (--decimal {dec}); got {v!r}{hint}"
        )
    plain = pc.replace_substring(text, sep, "") if sep else text
    if dec != ".":
        plain = pc.replace_substring(plain, dec, ".")
    return pc.cast(plain, pa.float64())


def _number_pattern(sep: str | None, dec: str) -> str:
    """A number written plainly or with ``sep`` between groups of three digits, ``dec`` its
    decimal mark, maybe an exponent."""
    d = re.escape(dec)
    digits = rf"(\d+|\d{{1,3}}({re.escape(sep)}\d{{3}})+)" if sep else r"\d+"
    return rf"^[-+]?({digits}({d}\d*)?|{d}\d+)([eE][-+]?\d+)?$"


def _shown(sep: str) -> str:
    return {" ": "space", "'": '"\'"'}.get(sep, sep)


def _date_columns(table: Any, name: str, col: Any, how: str) -> dict[str, Any]:
    """A date column as float64 columns: ``{name: days}`` or ``{name.year: ..., ...}``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    stamps = _timestamps(table, name, col)  # timestamp[us] (UTC for zoned values), nulls kept
    if how == "days":
        us = pc.cast(stamps, pa.int64())
        return {name: pc.divide(pc.cast(us, pa.float64()), float(US_PER_DAY))}
    return {
        f"{name}.year": pc.cast(pc.year(stamps), pa.float64()),
        f"{name}.month": pc.cast(pc.month(stamps), pa.float64()),
        f"{name}.day": pc.cast(pc.day(stamps), pa.float64()),
        f"{name}.dayofweek": pc.cast(pc.day_of_week(stamps), pa.float64()),  # Monday 0 … Sunday 6
    }


def _timestamps(table: Any, name: str, col: Any) -> Any:
    """A date, timestamp or ISO-text column as timestamp[us] (zoned values in UTC, wall time kept
    for values without a zone)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    typ = col.type
    if pa.types.is_date(typ):
        return pc.cast(pc.cast(col, pa.date32()), pa.timestamp("us"))
    if pa.types.is_timestamp(typ):
        if typ.tz is not None:
            col = pc.cast(col, pa.timestamp(typ.unit, tz="UTC"))
            col = pa.chunked_array([c.view(pa.timestamp(typ.unit)) for c in col.chunks], pa.timestamp(typ.unit))
        return pc.cast(col, pa.timestamp("us"))
    if pa.types.is_null(typ):
        return pa.chunked_array([pa.nulls(len(col), pa.timestamp("us"))])
    if not _is_text(typ):
        values = col.to_pylist()
        row = next((i for i, v in enumerate(values) if v is not None), 0)
        value = values[row] if values else None
        raise DataError(
            f"{table.where(row, name)}: --dates {name}: expected dates such as 2024-01-31 or 2024-01-31T10:00; "
            f"got {value!r} ({typ})"
        )
    text = pc.utf8_trim_whitespace(col)
    text = pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)
    try:
        return pc.cast(text, pa.timestamp("us"))
    except pa.ArrowInvalid:
        pass
    out = []
    for i, v in enumerate(text.to_pylist()):
        if v is None:
            out.append(None)
            continue
        us = _one_timestamp(v)
        if us is None:
            raise DataError(
                f"{table.where(i, name)}: --dates {name}: expected a date such as 2024-01-31 or 2024-01-31T10:00; got {v!r}"
            )
        out.append(us)
    return pa.chunked_array([pa.array(out, pa.int64()).view(pa.timestamp("us"))])


def _one_timestamp(v: str) -> int | None:
    """Microseconds since the epoch of one ISO 8601 date or datetime (UTC when it names a zone)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for typ in (pa.timestamp("us"), pa.timestamp("us", tz="UTC")):
        try:
            return pc.cast(pa.array([v]), typ).view(pa.int64())[0].as_py()
        except pa.ArrowInvalid:
            continue
    return None
