"""Data in: readers for CSV/TSV, Parquet, NumPy files, data frames and the built-in tables, and
what points at a bad cell (the line of a row, a ragged line) or says why it is bad (a hint).

Every rule a table can break is reported as one :class:`~gradreg.errors.DataError` line that
names the file, the line (CSV) or row (other sources) and the column, and echoes the value.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError, cell

__all__ = [
    "Table",
    "read_table",
    "builtin_names",
    "parse_delimiter",
    "BUILTIN",
    "BUILTIN_DESCRIPTIONS",
    "CSV_SUFFIXES",
    "PARQUET_SUFFIXES",
]

BUILTIN = {"crops": "crops.csv"}
BUILTIN_DESCRIPTIONS = {
    "crops": "The PyTorch tutorial's 15-row table: mangoes and oranges (tons) from temperature (F), "
    "rainfall (mm) and humidity (%), by region.",
}
CSV_SUFFIXES = (".csv", ".tsv", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq")


@dataclass
class Table:
    """A table read from one source, with what is needed to point at a bad cell.

    Parameters
    ----------
    data : pyarrow.Table
        The columns, n_rows long.
    source : str
        The name shown in messages (a path, ``<stdin>``, a built-in name).
    path : str or bytes, optional
        The CSV (a file, or stdin's bytes), read again only to map a row to its line on error.
    delimiter : str
        The CSV field separator.
    notices : list of str
        What reading did that a user should know of (shown as ``note:`` lines).
    row_offset : int
        Data rows of the same file before this table's first row (a chunk of a larger file).
    byte_start : int, optional
        For a byte range of a CSV file (one rank's share): where the range starts; ``row_offset``
        then counts from there.
    text_categorical : bool
        Text columns are categorical by default (a DataFrame's string and category columns).
    """

    data: Any
    source: str
    path: str | bytes | None = None
    delimiter: str = ","
    notices: list[str] = field(default_factory=list)
    row_offset: int = 0
    byte_start: int | None = None
    text_categorical: bool = False  # a DataFrame's string columns are categories; a CSV's text is not, unless asked

    def where(self, row: int | None = None, column: str | None = None) -> str:
        """Where a cell is, as a user sees it: ``data.csv, line 7, column 'rainfall'``.

        Parameters
        ----------
        row : int, optional
            0-based data row; a CSV line number for CSV sources, else a 1-based row number.
        column : str, optional

        Returns
        -------
        str
        """
        if row is None:
            return cell(self.source, None, column)
        row += self.row_offset
        if self.path is not None:
            return cell(self.source, _csv_line_of_row(self.path, row, self.delimiter, self.byte_start), column)
        return f"{self.source}, row {row + 1}" + (f", column {column!r}" if column else "")


def builtin_names() -> list[str]:
    """The names of the built-in tables (``gradreg datasets``).

    Returns
    -------
    list of str
    """
    return sorted(BUILTIN)


def builtin_path(name: str) -> str:
    """The CSV file of the built-in table ``name`` (a key of ``BUILTIN``), inside the package."""
    from importlib import resources  # here, not at the top: 9 ms that every predict of a file would pay

    return str(resources.files("gradreg").joinpath("datasets", BUILTIN[name]))


DELIMITER_NAMES = {"tab": "\t", "\\t": "\t", "\\\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|", "space": " "}
SHOWN_DELIMITERS = {"\t": "tab", ",": "','", ";": "';'", "|": "'|'", " ": "space"}  # as --delimiter takes them


def parse_delimiter(value: str | None) -> str | None:
    """``--delimiter`` as one character: a character, or ``tab`` (also ``\\t`` as typed in a
    shell), ``comma``, ``semicolon``, ``pipe``, ``space``.

    Parameters
    ----------
    value : str, optional

    Returns
    -------
    str or None
        None stays None (the default for the file's extension).

    Raises
    ------
    ConfigError
        More than one character that is not one of those names; a newline or a double quote.
    """
    if value is None:
        return None
    d = DELIMITER_NAMES.get(value.lower(), value)
    if len(d) != 1:
        names = ", ".join(["tab", "'\\t'", *(n for n in DELIMITER_NAMES if n.isalpha() and n != "tab")])
        raise ConfigError(f"{{delimiter}} must be one character or one of {names}; got {{delimiter=}}", delimiter=value)
    if d in '\r\n"':
        raise ConfigError(
            "{delimiter} cannot be a newline or a double quote (the CSV quote character); got {delimiter=}", delimiter=value
        )
    return d


def delimiter_hint(header: Sequence[str], delimiter: str, line: str | None = None) -> str:
    """A hint when the header was read as one field that holds another separator (a ';'-separated
    file read with ','); with a data ``line``, also when its numbers use decimal commas."""
    if len(header) != 1:
        return ""
    for d, shown in SHOWN_DELIMITERS.items():
        if d != delimiter and d != " " and d in header[0]:
            hint = f"; the header is one field holding {d!r}: for a {d!r}-separated file give --delimiter {shown}"
            comma = next((c for c in (line or "").split(d) if _DECIMAL_COMMA.match(c.strip())), None)
            if comma is not None:
                hint += f" (its numbers use decimal commas, as in {comma.strip()!r}: give --decimal ',' too)"
            return hint
    return ""


_DECIMAL_COMMA = re.compile(r"[-+]?\d*,\d+$")
_DATE = re.compile(r"\d{4}-\d{1,2}-\d{1,2}([ T]\d{1,2}:\d{2}(:\d{2}(\.\d*)?)?)?(Z|[+-]\d{2}:?\d{2})?$")
_THOUSANDS = re.compile(r"[-+]?\d{1,3}(,\d{3})+(\.\d*)?$")
_DOT_THOUSANDS = re.compile(r"[-+]?\d{1,3}(\.\d{3})+(,\d*)?$")  # 1.234.567 or 1.234,5: European
_TIME = re.compile(r"\d{1,2}:\d{2}(:\d{2}(\.\d*)?)?$")


def value_hint(value: Any, features: bool = True) -> str:
    """Why a cell is not a number, when that is recognisable: a decimal comma, a date or time."""
    if not isinstance(value, str):
        return ""
    v = value.strip()
    sep = thousands_of(v)
    if sep == ",":  # '1,000' or '25,750,000': a comma every three digits
        decimal = " (or --decimal ',' if the comma is a decimal comma)" if v.count(",") == 1 and "." not in v else ""
        return f" (thousands separators? give --thousands ','{decimal})"
    if sep == ".":
        return " (thousands separators? give --thousands '.' --decimal ',')"
    if _DECIMAL_COMMA.match(v):
        return " (a decimal comma? give --decimal ',')"
    kind = "dates" if _DATE.match(v) else "times of day" if _TIME.match(v) else None
    return f": {temporal_hint(kind, features)}" if kind else ""


def thousands_of(value: Any) -> str | None:
    """The thousands separator a text cell seems to use (``','`` for ``25,750``, ``'.'`` for
    ``1.234.567`` or ``1.234,5``), else None."""
    if not isinstance(value, str):
        return None
    v = value.strip()
    return "," if _THOUSANDS.match(v) else "." if _DOT_THOUSANDS.match(v) and (v.count(".") > 1 or "," in v) else None


def temporal_hint(kind: str, features: bool = True, column: str | None = None) -> str:
    """What to do about a column of dates, timestamps or times of day."""
    if kind in ("dates", "timestamps"):
        return f"{kind} are not numbers: give --dates {column or 'COL'} to use them as days since 1970-01-01" + (
            " or leave the column out with --features" if features else ""
        )
    unit = {"times of day": "seconds since midnight"}.get(kind, "days since an epoch")
    return f"{kind} are not numbers: convert the column to numbers (e.g. {unit})" + (
        " or leave it out with --features" if features else ""
    )


def strip_names(names: Sequence[str], shown: str) -> list[str]:
    """CSV header names without the spaces around them (``" rain "`` is ``rain``), refusing two
    that become one."""
    stripped = [n.strip() for n in names]
    first: dict[str, str] = {}
    for raw, n in zip(names, stripped):
        if n in first and first[n] != raw:
            raise DataError(
                f"{shown}: column names {first[n]!r} and {raw!r} are both {n!r} without the spaces around them; "
                "names must be unique"
            )
        first.setdefault(n, raw)
    return stripped


def strip_header(table: Any, shown: str) -> Any:
    """A pyarrow table whose CSV header names lose the spaces around them (see :func:`strip_names`)."""
    names = strip_names(table.column_names, shown)
    return table if names == table.column_names else table.rename_columns(names)


def refuse_binary(head: bytes, shown: str) -> None:
    """Refuse a file given as CSV that starts like something else: a gradreg model (MODEL and DATA
    swapped), Parquet or NumPy under another name, a pickle, an archive.

    Parameters
    ----------
    head : bytes
        The file's first bytes (a few KiB).
    shown : str
        The name in the message.

    Raises
    ------
    DataError
    """
    from ..persist import looks_like_model, sniff

    if looks_like_model(head):
        raise DataError(
            f"{shown}: a .safetensors model file, not data (did you swap MODEL and DATA? gradreg predict, evaluate, "
            "plot and report take MODEL first, then DATA)"
        )
    kind = sniff(head) if head else None
    if kind is None or "text" in kind:
        return
    rename = {"a Parquet file": ".parquet", "a NumPy .npy file": ".npy", "a NumPy .npz file": ".npz"}.get(kind)
    hint = f"; name it *{rename} to read it as one" if rename else "; gradreg reads CSV, Parquet, .npy and .npz data"
    raise DataError(f"{shown}: not CSV text: it looks like {kind}{hint}")


def _open_text(path: str | bytes):
    if isinstance(path, bytes):  # data read from stdin
        return io.TextIOWrapper(io.BytesIO(path), newline="", encoding="utf-8", errors="replace")
    return open(path, newline="", encoding="utf-8", errors="replace")


def _lines_before(path: str, byte_start: int) -> int:
    """Newlines in a file's first ``byte_start`` bytes (read in blocks)."""
    count = 0
    with open(path, "rb") as f:
        left = byte_start
        while left > 0:
            block = f.read(min(left, 1 << 24))
            if not block:
                break
            count += block.count(b"\n")
            left -= len(block)
    return count


def csv_records(path: str | bytes, delimiter: str, byte_start: int | None = None):
    """(first physical line, fields) of each non-blank CSV record, header included; from byte
    ``byte_start`` on (a line start, numbered as in the whole file) when given."""
    with _open_text(path) as f:
        start = 1
        if byte_start is not None and isinstance(path, str):
            start += _lines_before(path, byte_start)
            f.buffer.seek(byte_start)
        reader = csv.reader(f, delimiter=delimiter)
        first_line = start - 1
        for record in reader:
            if record:
                yield start, record
            start = first_line + reader.line_num + 1


def _csv_line_of_row(path: str | bytes, row: int, delimiter: str, byte_start: int | None = None) -> int | None:
    """The physical line on which data row ``row`` (0-based) starts; None if the file is shorter.

    Only run on the error path: pyarrow does not report line numbers, and blank lines and quoted
    newlines make ``row + 2`` wrong. With ``byte_start`` rows count from that byte (a byte range
    of the file, without a header).
    """
    skip = 1 if byte_start is None else 0
    for index, (line, _) in enumerate(csv_records(path, delimiter, byte_start)):
        if index == row + skip:  # record 0 is the header
            return line
    return None


def _ragged_line(path: str | bytes, delimiter: str) -> tuple[int, int, int, str] | None:
    """First (line, expected, got, hint) whose field count differs from the header's; the hint
    suggests another delimiter when the header reads as one field."""
    header = None
    for line, record in csv_records(path, delimiter):
        if header is None:
            header = record
        elif len(record) != len(header):
            return line, len(header), len(record), delimiter_hint(header, delimiter, delimiter.join(record))
    return None


def ragged_message(shown: str, line: int, expected: int, got: int, hint: str = "") -> str:
    """``data.csv, line 7: expected 3 fields like the header, got 4``, and a hint."""
    return f"{shown}, line {line}: expected {expected} field{'s' if expected != 1 else ''} like the header, got {got}{hint}"


def read_table(source: Any, *, delimiter: str | None = None, name: str | None = None, options: Any = None) -> Table:
    """Read a whole table from a path, a built-in name, a data frame, or a dict of columns.

    Parameters
    ----------
    source : str, os.PathLike, pandas.DataFrame, pyarrow.Table or dict
        A CSV/TSV (header row), Parquet, ``.npy`` (2-D, columns ``c0, c1, ...``) or ``.npz``
        (1-D arrays become columns by key; a 2-D array ``K`` gives ``K0, K1, ...``) file, or the
        name of a built-in table such as ``"crops"``.
    delimiter : str, optional
        CSV field separator; default ``,`` (tab for ``.tsv``). Also a name: ``tab``, ``\\t``,
        ``semicolon``... (see :func:`parse_delimiter`).
    name : str, optional
        How messages name an in-memory source (default ``<table>``, ``<dict>``, ``<DataFrame>``).
    options : ReadOptions, optional
        How to read numbers and dates (see :class:`~gradreg.io.ReadOptions`); its delimiter is
        used when ``delimiter`` is None. Without a delimiter, a CSV's is detected from its head.

    Returns
    -------
    Table

    Raises
    ------
    DataError
        Missing or unreadable file, ragged row, unknown format; the message names the file and line.
    """
    from .reading import convert

    return convert(_read_source(source, delimiter, name, options), options)


def _read_source(source: Any, delimiter: str | None, name: str | None, options: Any) -> Table:
    """:func:`read_table` before conversion."""
    import pyarrow as pa

    if isinstance(source, pa.Table):
        return Table(source, name or "<table>")
    if isinstance(source, dict):
        return Table(pa.table({k: np.asarray(v) for k, v in source.items()}), name or "<dict>")
    if type(source).__name__ == "DataFrame" and hasattr(source, "columns"):
        cols = [str(c) for c in source.columns]
        try:
            table = pa.Table.from_pandas(source, preserve_index=False)
        except (pa.ArrowException, TypeError, ValueError):
            table = pa.table({c: source.iloc[:, i].astype(object).to_numpy() for i, c in enumerate(cols)})
        return Table(table.rename_columns(cols), name or "<DataFrame>", text_categorical=True)
    if not isinstance(source, (str, os.PathLike)):
        raise DataError(f"data: expected a file path, built-in name, DataFrame or dict; got {type(source).__name__}")
    delimiter = parse_delimiter(delimiter if delimiter is not None or options is None else options.delimiter)
    path = os.fspath(source)
    if path == "-":  # stdin: CSV (or TSV with delimiter="\t"); the delimiter detected from what it holds
        import sys

        return _read_csv(sys.stdin.buffer.read(), "<stdin>", delimiter, options)
    if path in BUILTIN and not os.path.exists(path):
        return _read_csv(builtin_path(path), path, ",", options)
    if not os.path.exists(path):
        hint = f" (built-in tables: {', '.join(builtin_names())})" if os.sep not in path else ""
        raise DataError(f"{path}: no such file{hint}")
    if os.path.isdir(path):
        raise DataError(f"{path}: is a folder; give a CSV, Parquet, .npy or .npz file")
    lower = path.lower()
    try:
        if lower.endswith(PARQUET_SUFFIXES):
            return _read_parquet(path)
        if lower.endswith(".npy"):
            return _read_npy(path)
        if lower.endswith(".npz"):
            return _read_npz(path)
    except PermissionError:
        raise DataError(f"{path}: cannot read: permission denied") from None
    return _read_csv(path, path, delimiter, options)


def suffix_delimiter(path: str) -> str:
    """The delimiter a file's name suggests: tab for ``.tsv``, else ``,``."""
    return "\t" if str(path).lower().endswith(".tsv") else ","


def _read_csv(path: str | bytes, shown: str, delimiter: str | None, options: Any = None) -> Table:
    """Read a CSV file, or the bytes of one (stdin); without a delimiter, detect it."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    from .reading import detected_notice, sniff_delimiter

    try:
        blank = _is_blank(path)
    except PermissionError:
        raise DataError(f"{shown}: cannot read: permission denied") from None
    except OSError as e:
        raise DataError(f"{shown}: cannot read: {e.strerror or e}") from None
    if blank:
        raise DataError(f"{shown}: file is empty; expected a header row and data rows")
    head = _head(path, SNIFF_BYTES)
    refuse_binary(head[:4096], shown)
    notices = []
    if delimiter is None:
        default = suffix_delimiter(shown)
        delimiter = sniff_delimiter(head, default, truncated=len(head) == SNIFF_BYTES)
        if delimiter != default:
            notices.append(detected_notice(shown, delimiter))
    try:
        data = pcsv.read_csv(
            pa.BufferReader(path) if isinstance(path, bytes) else path,
            parse_options=pcsv.ParseOptions(delimiter=delimiter),
            convert_options=csv_convert_options(options, head, delimiter),
        )
    except pa.ArrowInvalid as e:
        msg = str(e)
        ragged = _ragged_line(path, delimiter)
        if ragged is not None:
            raise DataError(ragged_message(shown, *ragged)) from None
        if "Empty CSV" in msg:
            raise DataError(f"{shown}: file is empty; expected a header row and data rows") from None
        raise DataError(f"{shown}: not a readable CSV file: {msg.splitlines()[0]}") from None
    except OSError as e:
        raise DataError(f"{shown}: cannot read: {e}") from None
    return Table(strip_header(data, shown), shown, path=path, delimiter=delimiter, notices=notices)


SNIFF_BYTES = 1 << 16  # the head of a CSV that its delimiter is detected from


def csv_convert_options(options: Any, head: bytes, delimiter: str, **kw: Any) -> Any:
    """pyarrow's ConvertOptions for ``options``: its decimal mark; text kept as written for
    ``keep`` and ``dates`` columns (named as in the header ``head``, spaces around them and all)."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    kw.setdefault("strings_can_be_null", True)
    if options is None:
        return pcsv.ConvertOptions(**kw)
    text = set(options.keep) | set(options.dates) | set(options.text)
    if text:
        lines = head.decode("utf-8", errors="replace").lstrip("\ufeff").splitlines() or [""]
        header = next(csv.reader([lines[0]], delimiter=delimiter), [])
        types = dict(kw.pop("column_types", None) or {})
        types.update({raw: pa.string() for raw in header if raw.strip() in text})
        kw["column_types"] = types
    return pcsv.ConvertOptions(decimal_point=options.decimal, **kw)


def _head(path: str | bytes, size: int = 4096) -> bytes:
    """A file's (or stdin's) first bytes, to recognise what it holds."""
    if isinstance(path, bytes):
        return path[:size]
    with open(path, "rb") as f:
        return f.read(size)


def _is_blank(path: str | bytes) -> bool:
    """True when the CSV holds nothing but white space (read until the first other byte)."""
    if isinstance(path, bytes):
        return not path.strip()
    with open(path, "rb") as f:
        while block := f.read(1 << 16):
            if block.strip():
                return False
    return True


def _read_parquet(path: str) -> Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        data = pq.read_table(path)
    except MemoryError:
        raise  # "out of memory", not a bad file
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: not a readable Parquet file: {str(e).splitlines()[0]}") from None
    return Table(data, path)


def _load_numpy(path: str) -> Any:
    try:
        return np.load(path, allow_pickle=False)  # never unpickle: object arrays are refused
    except ValueError as e:
        raise DataError(f"{path}: not a plain numeric NumPy file: {e}") from None
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable NumPy file: {e}") from None


def _read_npy(path: str) -> Table:
    import pyarrow as pa

    arr = _load_numpy(path)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise DataError(f"{path}: a .npy table must be 1-D or 2-D; got shape {arr.shape}")
    return Table(pa.table({f"c{j}": arr[:, j] for j in range(arr.shape[1])}), path)


def _read_npz(path: str) -> Table:
    import pyarrow as pa

    cols: dict[str, np.ndarray] = {}
    with _load_numpy(path) as z:
        for key in z.files:
            arr = z[key]
            if arr.ndim == 1:
                cols[key] = arr
            elif arr.ndim == 2:
                for j in range(arr.shape[1]):
                    cols[f"{key}{j}"] = arr[:, j]
            else:
                raise DataError(f"{path}: array {key!r} must be 1-D or 2-D; got shape {arr.shape}")
    lengths = {k: len(v) for k, v in cols.items()}
    if len(set(lengths.values())) > 1:
        raise DataError(f"{path}: arrays differ in length: {lengths}")
    return Table(pa.table(cols), path)
