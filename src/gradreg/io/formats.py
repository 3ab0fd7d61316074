"""Data in: readers for CSV/TSV, Parquet, NumPy files, data frames and the built-in tables, then
column selection and validation into float64 arrays.

Every rule a table can break is reported as one :class:`~gradreg.errors.DataError` line that
names the file, the line (CSV) or row (other sources) and the column, and echoes the value.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError, cell

__all__ = [
    "Table",
    "Dataset",
    "read_table",
    "select",
    "load",
    "feature_matrix",
    "write_table",
    "ColumnWriter",
    "builtin_names",
    "parse_delimiter",
]

BUILTIN = {"crops": "crops.csv"}
BUILTIN_DESCRIPTIONS = {
    "crops": "The PyTorch tutorial's 15-row table: mangoes and oranges (tons) from temperature (F), "
    "rainfall (mm) and humidity (%), by region.",
}
CSV_SUFFIXES = (".csv", ".tsv", ".txt")


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
    """

    data: Any
    source: str
    path: str | bytes | None = None
    delimiter: str = ","
    notices: list[str] = field(default_factory=list)
    row_offset: int = 0
    byte_start: int | None = None

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


@dataclass
class Dataset:
    """Validated arrays ready for a solver: finite float64, rows aligned.

    Parameters
    ----------
    X : ndarray of shape (n_rows, n_features)
    Y : ndarray of shape (n_rows, n_targets)
    feature_names : list of str, length n_features
    target_names : list of str, length n_targets
    sample_weight : ndarray of shape (n_rows,), optional
        Non-negative, not all zero.
    source : str
        Where the rows came from, for messages and the model's metadata.
    notices : list of str
        Columns left out, rows dropped, and the like.
    dtypes : dict of str to str, optional
        Each feature and target column's type as read (``double``, ``int64``…), for the model
        file's input schema.
    where : callable, optional
        ``where(i, name)``: where row ``i``, column ``name`` came from (``data.csv, line 7,
        column 'x'``); set by :func:`select`. None: rows are counted from 1 in ``source``.
    """

    X: np.ndarray
    Y: np.ndarray
    feature_names: list[str]
    target_names: list[str]
    sample_weight: np.ndarray | None = None
    source: str = "<array>"
    notices: list[str] = field(default_factory=list)
    dtypes: dict[str, str] | None = None  # column name → its type as read (the model file's schema)
    where: Callable[[int, str], str] | None = field(default=None, repr=False, compare=False)

    def largest(self, j: int) -> tuple[str, float]:
        """Where the largest magnitude of column ``j`` of ``[X | Y]`` is, and that value (for a
        message about an outlier).

        Parameters
        ----------
        j : int
            A feature column (``j < n_features``) or target ``j - n_features``.

        Returns
        -------
        (str, float)
            ``("data.csv, line 7, column 'x'", 1e200)``.
        """
        p = self.X.shape[1]
        col = self.X[:, j] if j < p else self.Y[:, j - p]
        name = self.feature_names[j] if j < p else self.target_names[j - p]
        with np.errstate(invalid="ignore"):
            i = int(np.nanargmax(np.abs(col))) if len(col) and not np.isnan(col).all() else 0
        value = float(col[i]) if len(col) else float("nan")
        if self.where is not None:
            return self.where(i, name), value
        source = ("X" if j < p else "y") if self.source == "<array>" else self.source  # the argument's name
        return f"{source}, row {i + 1}, column {name!r}", value


def builtin_names() -> list[str]:
    """The names of the built-in tables (``gradreg datasets``).

    Returns
    -------
    list of str
    """
    return sorted(BUILTIN)


def _builtin_path(name: str) -> str:
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


def _delimiter_hint(header: Sequence[str], delimiter: str, line: str | None = None) -> str:
    """A hint when the header was read as one field that holds another separator (a ';'-separated
    file read with ','); with a data ``line``, also when its numbers use decimal commas."""
    if len(header) != 1:
        return ""
    for d, shown in SHOWN_DELIMITERS.items():
        if d != delimiter and d != " " and d in header[0]:
            hint = f"; the header is one field holding {d!r}: for a {d!r}-separated file give --delimiter {shown}"
            comma = next((c for c in (line or "").split(d) if _DECIMAL_COMMA.match(c.strip())), None)
            if comma is not None:
                hint += f" (its numbers use decimal commas, as in {comma.strip()!r}, which gradreg does not read yet)"
            return hint
    return ""


_DECIMAL_COMMA = re.compile(r"[-+]?\d*,\d+$")
_DATE = re.compile(r"\d{4}-\d{1,2}-\d{1,2}([ T]\d{1,2}:\d{2}(:\d{2}(\.\d*)?)?)?(Z|[+-]\d{2}:?\d{2})?$")
_THOUSANDS = re.compile(r"[-+]?\d{1,3}(,\d{3})+(\.\d*)?$")
_TIME = re.compile(r"\d{1,2}:\d{2}(:\d{2}(\.\d*)?)?$")


def _value_hint(value: Any, features: bool = True) -> str:
    """Why a cell is not a number, when that is recognisable: a decimal comma, a date or time."""
    if not isinstance(value, str):
        return ""
    v = value.strip()
    if _THOUSANDS.match(v):  # '1,000' or '25,750,000': a comma every three digits
        as_decimal = v.replace(",", ".") if v.count(",") == 1 else None
        return (
            f" (thousands separators? gradreg reads plain numbers: write {v.replace(',', '')}"
            + (f"; or, if the comma is a decimal comma, {as_decimal}" if as_decimal else "")
            + ")"
        )
    if _DECIMAL_COMMA.match(v):
        return f" (a decimal comma? gradreg reads numbers with a decimal point: write {v.replace(',', '.')})"
    kind = "dates" if _DATE.match(v) else "times of day" if _TIME.match(v) else None
    return f": {_temporal_hint(kind, features)}" if kind else ""


def _temporal_hint(kind: str, features: bool = True) -> str:
    """What to do about a column of dates, timestamps or times of day."""
    unit = {"times of day": "seconds since midnight", "timestamps": "seconds since an epoch"}.get(kind, "days since an epoch")
    return f"{kind} are not numbers: convert the column to numbers (e.g. {unit})" + (
        " or leave it out with --features" if features else ""
    )


def _strip_names(names: Sequence[str], shown: str) -> list[str]:
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
    """A pyarrow table whose CSV header names lose the spaces around them (see :func:`_strip_names`)."""
    names = _strip_names(table.column_names, shown)
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


def _records(path: str | bytes, delimiter: str, byte_start: int | None = None):
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
    for index, (line, _) in enumerate(_records(path, delimiter, byte_start)):
        if index == row + skip:  # record 0 is the header
            return line
    return None


def _ragged_line(path: str | bytes, delimiter: str) -> tuple[int, int, int, str] | None:
    """First (line, expected, got, hint) whose field count differs from the header's; the hint
    suggests another delimiter when the header reads as one field."""
    header = None
    for line, record in _records(path, delimiter):
        if header is None:
            header = record
        elif len(record) != len(header):
            return line, len(header), len(record), _delimiter_hint(header, delimiter, delimiter.join(record))
    return None


def ragged_message(shown: str, line: int, expected: int, got: int, hint: str = "") -> str:
    """``data.csv, line 7: expected 3 fields like the header, got 4``, and a hint."""
    return f"{shown}, line {line}: expected {expected} field{'s' if expected != 1 else ''} like the header, got {got}{hint}"


def read_table(source: Any, *, delimiter: str | None = None, name: str | None = None) -> Table:
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

    Returns
    -------
    Table

    Raises
    ------
    DataError
        Missing or unreadable file, ragged row, unknown format; the message names the file and line.
    """
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
        return Table(table.rename_columns(cols), name or "<DataFrame>")
    if not isinstance(source, (str, os.PathLike)):
        raise DataError(f"data: expected a file path, built-in name, DataFrame or dict; got {type(source).__name__}")
    delimiter = parse_delimiter(delimiter)
    path = os.fspath(source)
    if path == "-":  # stdin: CSV (or TSV with delimiter="\t")
        import sys

        return _read_csv(sys.stdin.buffer.read(), "<stdin>", delimiter or ",")
    if path in BUILTIN and not os.path.exists(path):
        return _read_csv(_builtin_path(path), path, ",")
    if not os.path.exists(path):
        hint = f" (built-in tables: {', '.join(builtin_names())})" if os.sep not in path else ""
        raise DataError(f"{path}: no such file{hint}")
    if os.path.isdir(path):
        raise DataError(f"{path}: is a folder; give a CSV, Parquet, .npy or .npz file")
    lower = path.lower()
    try:
        if lower.endswith((".parquet", ".pq")):
            return _read_parquet(path)
        if lower.endswith(".npy"):
            return _read_npy(path)
        if lower.endswith(".npz"):
            return _read_npz(path)
    except PermissionError:
        raise DataError(f"{path}: cannot read: permission denied") from None
    if delimiter is None:
        delimiter = "\t" if lower.endswith(".tsv") else ","
    return _read_csv(path, path, delimiter)


def _read_csv(path: str | bytes, shown: str, delimiter: str) -> Table:
    """Read a CSV file, or the bytes of one (stdin)."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    try:
        blank = _is_blank(path)
    except PermissionError:
        raise DataError(f"{shown}: cannot read: permission denied") from None
    except OSError as e:
        raise DataError(f"{shown}: cannot read: {e.strerror or e}") from None
    if blank:
        raise DataError(f"{shown}: file is empty; expected a header row and data rows")
    refuse_binary(_head(path), shown)
    try:
        data = pcsv.read_csv(
            pa.BufferReader(path) if isinstance(path, bytes) else path,
            parse_options=pcsv.ParseOptions(delimiter=delimiter),
            convert_options=pcsv.ConvertOptions(strings_can_be_null=True),
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
    return Table(strip_header(data, shown), shown, path=path, delimiter=delimiter)


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


def _parse_float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _numeric_column(table: Table, name: str, index: int) -> np.ndarray | None:
    """The column as floats with NaN for missing cells, or None when no cell is numeric.

    float32 columns stay float32 (half the memory; the solvers work in float64 blocks); every
    other numeric type becomes float64.

    A text column with some numeric cells is an error naming its first non-numeric cell.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    col = table.data.column(index)
    typ = col.type
    if pa.types.is_null(typ):
        return np.full(len(col), np.nan)
    if pa.types.is_float32(typ) or pa.types.is_float64(typ):
        return _to_numpy(col)
    if pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_boolean(typ) or pa.types.is_decimal(typ):
        return _to_numpy(pc.cast(col, pa.float64()))
    if not (pa.types.is_string(typ) or pa.types.is_large_string(typ)):
        return None  # dates, lists, binary...: never a feature (see _temporal)
    values = col.to_pylist()
    parsed = [None if v is None else _parse_float(v) for v in values]
    if not any(p is not None for p in parsed):
        return None
    for i, (v, p) in enumerate(zip(values, parsed)):
        if v is not None and p is None:
            raise DataError(f"{table.where(i, name)}: expected a number, got {v!r}{_value_hint(v)}")
    return np.array([np.nan if p is None else p for p in parsed], dtype=np.float64)


def _temporal(table: Table, index: int) -> str | None:
    """What a column of dates, timestamps or times of day holds, in words (``"dates"``); None for
    any other column. (pyarrow reads ``2024-01-01`` in a CSV as a date.)"""
    import pyarrow as pa

    typ = table.data.column(index).type
    if pa.types.is_date(typ):
        return "dates"
    if pa.types.is_timestamp(typ):
        return "timestamps"
    if pa.types.is_time(typ):
        return "times of day"
    return None


def _to_numpy(col: Any) -> np.ndarray:
    """A float ChunkedArray as numpy, NaN for nulls (ChunkedArray.to_numpy would import pandas)."""
    import pyarrow.compute as pc

    filled = pc.fill_null(col, float("nan")) if col.null_count else col
    if filled.num_chunks == 0:
        return np.empty(0, dtype=col.type.to_pandas_dtype())
    if filled.num_chunks == 1:
        return _chunk_numpy(filled.chunk(0))
    return np.concatenate([_chunk_numpy(c) for c in filled.chunks])


def _chunk_numpy(arr: Any) -> np.ndarray:
    """A null-free float Array as a zero-copy numpy view of its data buffer. (Array.to_numpy
    imports pandas, 0.3 s, which every short ``predict`` would pay.)"""
    import pyarrow as pa

    if arr.null_count == 0 and (pa.types.is_float64(arr.type) or pa.types.is_float32(arr.type)):
        dtype = np.float64 if pa.types.is_float64(arr.type) else np.float32
        return np.frombuffer(arr.buffers()[1], dtype=dtype, count=len(arr), offset=arr.offset * np.dtype(dtype).itemsize)
    return arr.to_numpy(zero_copy_only=False)


def _split_names(items: Sequence[str] | str | None) -> list[str] | None:
    if items is None:
        return None
    if isinstance(items, str):
        items = [items]
    out: list[str] = []
    for item in items:
        out.extend(s.strip() for s in str(item).split(",") if s.strip())
    return out


def select(
    table: Table,
    target: Sequence[str] | str,
    features: Sequence[str] | str | None = None,
    *,
    weight: str | None = None,
    drop_missing: bool = False,
    min_rows: int = 2,
    exclude: Sequence[str] | str | None = None,
) -> Dataset:
    """Pick target, feature and weight columns by name and validate them into a :class:`Dataset`.

    Parameters
    ----------
    table : Table
    target : str or sequence of str
        Target column name(s); a string may list several, comma-separated.
    features : str or sequence of str, optional
        Feature columns; default every other column that holds numbers (a column with no numeric
        value at all, such as ``region``, is left out with a notice).
    weight : str, optional
        Column of sample weights (>= 0, not all 0).
    drop_missing : bool
        Drop rows with a missing value (with a notice) instead of failing on the first one.
    min_rows : int
        Fewest rows accepted.
    exclude : str or sequence of str, optional
        Columns left out of the default features (such as a second target-like column); not
        with ``features``, which names the features itself.

    Returns
    -------
    Dataset
        X of shape (n_rows, n_features), Y of shape (n_rows, n_targets).

    Raises
    ------
    DataError
        Naming the file, line and column of the first bad cell, the rule, and the value.
    """
    names = [str(n) for n in table.data.column_names]
    seen: dict[str, int] = {}
    for i, n in enumerate(names):
        if n in seen:
            raise DataError(
                f"{table.source}: duplicate column name {n!r} (columns {seen[n] + 1} and {i + 1}); names must be unique"
            )
        seen[n] = i
    targets = _split_names(target) or []
    if not targets:
        raise ConfigError("{target}: name at least one target column", target=target)
    chosen_features = _split_names(features)
    excluded = _split_names(exclude) or []
    if excluded and chosen_features is not None:
        raise ConfigError(
            "{exclude} leaves columns out of the default features; with {features}, name only the features wanted",
            exclude=exclude,
            features=features,
        )
    unknown = [n for n in excluded if n not in seen]
    if unknown:
        raise DataError(
            f"{table.source}: {{exclude}} names no column {', '.join(map(repr, unknown))}; columns are {', '.join(names)}"
            + _delimiter_hint(names, table.delimiter),
            exclude=exclude,
        )
    asked = targets + (chosen_features or []) + ([weight] if weight else [])
    for n in asked:
        if n not in seen:
            hint = _delimiter_hint(names, table.delimiter) if table.path is not None else ""
            raise DataError(f"{table.source}: no column named {n!r}; columns are {', '.join(names)}{hint}")
    for group, label in ((targets, "target"), (chosen_features or [], "features")):
        dup = sorted({n for n in group if group.count(n) > 1})
        if dup:
            raise ConfigError(f"{{{label}}}: column {dup[0]!r} is named twice", **{label: group})
    both = [n for n in targets if chosen_features and n in chosen_features]
    if both:
        raise ConfigError(f"column {both[0]!r} is given both as a target and as a feature")
    if weight and (weight in targets or (chosen_features and weight in chosen_features)):
        raise ConfigError(f"{{weight}} column {weight!r} is also a target or feature", weight=weight)
    notices = list(table.notices)

    def required(n: str, features: bool = False) -> np.ndarray:
        return _required_column(table, n, seen[n], features=features)

    Y = [required(n) for n in targets]
    if chosen_features is None:
        chosen_features, X = [], []
        for n in names:
            if n in targets or n == weight or n in excluded:
                continue
            if n == "":  # pandas' to_csv writes its index under an empty name: never a feature by default
                notices.append(f"left out column {seen[n] + 1}: it has no name in the header (an index written by to_csv?)")
                continue
            arr = _numeric_column(table, n, seen[n])
            if arr is None:
                kind = _temporal(table, seen[n])
                notices.append(f"left out column {n!r}: it holds {kind + ', not numbers' if kind else 'no numbers'}")
                continue
            chosen_features.append(n)
            X.append(arr)
    else:
        X = [required(n, features=True) for n in chosen_features]
    if not chosen_features:
        # say what became of the other columns: the notes that would have said it are not shown
        why = [n[len("left out ") :] for n in notices if n.startswith("left out column")]
        why += [f"column {n!r} is excluded" for n in names if n in excluded]
        raise DataError(
            f"{table.source}: no numeric feature columns besides the target(s)" + (f": {'; '.join(why)}" if why else "")
        )
    w = required(weight) if weight else None
    n_rows = table.data.num_rows
    Xa = np.column_stack(X) if X else np.empty((n_rows, 0))
    Ya = np.column_stack(Y)
    columns = [(chosen_features, Xa), (targets, Ya)] + ([([weight], w[:, None])] if w is not None else [])

    keep = _rows_to_keep(table, columns, drop_missing)
    if not keep.all():
        dropped = np.flatnonzero(~keep)
        shown = ", ".join(table.where(int(r)).rsplit(", ", 1)[-1] for r in dropped[:5]) + (", …" if len(dropped) > 5 else "")
        notices.append(f"dropped {len(dropped)} row(s) with missing values ({shown})")
    if w is not None:
        neg = np.flatnonzero(w < 0)
        if neg.size:
            raise DataError(f"{table.where(int(neg[0]), weight)}: weights must be >= 0; got {w[neg[0]]}")
    if not keep.all():
        Xa, Ya = Xa[keep], Ya[keep]
        w = w[keep] if w is not None else None
    if Xa.shape[0] < min_rows:
        raise DataError(f"{table.source}: need at least {min_rows} data rows; got {Xa.shape[0]}")
    if w is not None and not (w > 0).any():
        raise DataError(f"{table.where(None, weight)}: all weights are zero; at least one must be > 0")
    schema = table.data.schema
    return Dataset(
        Xa,  # column_stack makes it C-contiguous; float32 columns stay float32
        Ya,
        list(chosen_features),
        targets,
        w,
        table.source,
        notices,
        {n: str(schema.field(seen[n]).type) for n in list(chosen_features) + targets},
        where=_row_finder(table, None if keep.all() else np.flatnonzero(keep)),
    )


def _row_finder(table: Table, kept: np.ndarray | None) -> Callable[[int, str], str]:
    """Dataset.where for rows selected from ``table`` (``kept``: their rows in it, None for all).

    Holds neither the table's columns nor stdin's bytes: a Dataset may live as long as a fit."""
    place = Table(None, table.source, table.path if isinstance(table.path, str) else None, table.delimiter)
    place.row_offset, place.byte_start = table.row_offset, table.byte_start

    def where(i: int, column: str) -> str:
        return place.where(int(kept[i]) if kept is not None else i, column)

    return where


def _required_column(table: Table, name: str, index: int, *, features: bool = False) -> np.ndarray:
    """A column that must hold numbers: float64 with NaN for missing cells. ``features``: it was
    asked for with --features (a message may suggest leaving it out)."""
    arr = _numeric_column(table, name, index)
    if arr is None:
        row, value = _first_value(table, index)
        kind = _temporal(table, index)
        if kind:
            raise DataError(f"{table.where(row, name)}: expected a number, got {value!r}: {_temporal_hint(kind, features)}")
        hint = _value_hint(value, features)
        raise DataError(f"{table.where(row, name)}: column {name!r} holds no numbers; got {value!r}{hint}")
    return arr


def _rows_to_keep(table: Table, columns: list[tuple[list[str], np.ndarray]], drop_missing: bool) -> np.ndarray:
    """Rows without missing cells (an error unless ``drop_missing``); any inf is an error.

    ``columns`` pairs names with their (n, k) values; the first bad cell in their order is named.
    """
    if all(_all_finite(arr) for _, arr in columns):  # the common case: one cheap sum per block
        return np.ones(table.data.num_rows, dtype=bool)
    missing = np.zeros(table.data.num_rows, dtype=bool)
    for _cols, arr in columns:
        missing |= np.isnan(arr).any(axis=1)
    if missing.any() and not drop_missing:
        row = int(np.argmax(missing))
        col = _first_bad_column(columns, row, np.isnan)
        raise DataError(f"{table.where(row, col)}: missing value; drop such rows with --drop-missing")
    for cols, arr in columns:
        inf = np.isinf(arr)
        if inf.any():
            row = int(np.argmax(inf.any(axis=1)))
            col = _first_bad_column([(cols, arr)], row, np.isinf)
            raise DataError(f"{table.where(row, col)}: values must be finite; got {arr[row, cols.index(col)]}")
    return ~missing


def _first_value(table: Table, index: int) -> tuple[int, Any]:
    """(row, value) of a column's first non-missing cell (row 0 and None for none); dates and times
    as written in a CSV file, else as text (``'2024-01-01'``, not ``datetime.date(2024, 1, 1)``)."""
    col = table.data.column(index)
    valid = col.is_valid()
    row = next((i for i in range(len(col)) if valid[i].as_py()), None)
    if row is None:
        return 0, None
    value = col[row].as_py()
    if _temporal(table, index) is None:
        return row, value
    if table.path is not None and table.byte_start is None:
        for k, (_, record) in enumerate(_records(table.path, table.delimiter)):
            if k == table.row_offset + row + 1 and index < len(record):  # record 0 is the header
                return row, record[index]
    return row, str(value)


def _first_bad_column(columns: list[tuple[list[str], np.ndarray]], row: int, is_bad: Any) -> str:
    # The leftmost offending column in file order is the one a user looks at first.
    for cols, arr in columns:
        for j, n in enumerate(cols):
            if is_bad(arr[row, j]):
                return n
    raise AssertionError("no bad cell in the flagged row")


def load(
    source: Any,
    target: Sequence[str] | str,
    features: Sequence[str] | str | None = None,
    *,
    weight: str | None = None,
    drop_missing: bool = False,
    delimiter: str | None = None,
    exclude: Sequence[str] | str | None = None,
) -> Dataset:
    """Read ``source`` and select columns: :func:`read_table`, then :func:`select`.

    Parameters
    ----------
    source : str, os.PathLike, pandas.DataFrame, pyarrow.Table or dict
        As for :func:`read_table`.
    target : str or sequence of str
    features : str or sequence of str, optional
    weight : str, optional
    drop_missing : bool
    delimiter : str, optional
        As for :func:`select` and :func:`read_table`.
    exclude : str or sequence of str, optional
        As for :func:`select`.

    Returns
    -------
    Dataset
    """
    table = read_table(source, delimiter=delimiter)
    return select(table, target, features, weight=weight, drop_missing=drop_missing, exclude=exclude)


def feature_matrix(table: Table, features: Sequence[str], *, drop_missing: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The feature columns for prediction, by name, in the model's order.

    Parameters
    ----------
    table : Table
        May hold other columns too, in any order.
    features : sequence of str, length n_features
    drop_missing : bool
        Drop rows with a missing feature instead of failing.

    Returns
    -------
    X : ndarray of shape (n_kept, n_features)
    kept : ndarray of bool, shape (n_rows,)
        Which rows of the table are in X.
    """
    names = [str(n) for n in table.data.column_names]
    require_features(table.source, names, features)
    cols = [_required_column(table, f, names.index(f)) for f in features]
    X = np.column_stack(cols) if cols else np.empty((table.data.num_rows, 0))
    keep = _rows_to_keep(table, [(list(features), X)], drop_missing)
    return X[keep], keep


def require_features(source: str, columns: Sequence[str], features: Sequence[str]) -> None:
    """Raise a DataError naming the model features that ``columns`` lacks.

    Parameters
    ----------
    source : str
        Named in the message.
    columns : sequence of str
        What the data has.
    features : sequence of str
        What the model needs.
    """
    lacking = [f for f in features if f not in columns]
    if lacking:
        raise DataError(
            f"{source}: lacks model feature column(s) {', '.join(map(repr, lacking))}; columns are {', '.join(columns)}"
            + _delimiter_hint(list(columns), ",")
        )


def require_numeric_columns(a: Any, name: str) -> None:
    """Refuse a pandas DataFrame (or Series) column that is not numbers, naming it, before a
    conversion fails with "could not convert string to float" or a DType promotion error.

    Parameters
    ----------
    a : any
        Anything else than a DataFrame or Series passes unchecked.
    name : str
        The argument, named in the message (``X``).

    Raises
    ------
    DataError
    """
    dtypes = getattr(a, "dtypes", None)
    if dtypes is None or not hasattr(a, "iloc"):
        return
    items = dtypes.items() if hasattr(dtypes, "items") else [(getattr(a, "name", None), dtypes)]
    for col, dtype in items:
        kind = getattr(dtype, "kind", "O")
        if kind in "biuf":
            continue
        values = a[col] if hasattr(a, "columns") else a
        first = values.dropna().iloc[0] if values.notna().any() else None
        what = (
            "dates or times are not numbers: convert the column to numbers (e.g. days since an epoch) or drop it"
            if kind in "mM" or "date" in str(dtype)
            else "convert it to numbers or drop it"
        )
        label = f", column {col!r}" if hasattr(a, "columns") else ""
        raise DataError(f"{name}{label}: expected numbers; got dtype {dtype} (first value {first!r}); {what}")


def as_2d_float(a: Any, name: str, columns: Sequence[Any] | None = None) -> np.ndarray:
    """Coerce an array-like or tensor to a 2-D float array, refusing NaN and inf.

    float32 input stays float32 (no copy of a large array); anything else becomes float64.

    Parameters
    ----------
    a : array-like or torch.Tensor of shape (n,) or (n, k)
    name : str
        The argument, named in messages (``X``).
    columns : sequence, optional
        The k column names (a DataFrame's), named in messages instead of column numbers.

    Returns
    -------
    ndarray of shape (n, k)
    """
    if hasattr(a, "detach") and hasattr(a, "cpu"):
        a = a.detach().cpu().numpy()
    try:
        arr = np.asarray(a)
        if arr.dtype != np.float32:
            arr = np.asarray(arr, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise DataError(f"{name}: expected numbers: {e}") from None
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise DataError(f"{name}: expected a 1-D or 2-D array; got shape {arr.shape}")
    if not _all_finite(arr):
        bad = ~np.isfinite(arr)
        if bad.any():
            i, j = np.argwhere(bad)[0]
            col = repr(str(columns[j])) if columns is not None and j < len(columns) else j
            raise DataError(f"{name}, row {i + 1}, column {col}: values must be finite (not NaN or inf); got {arr[i, j]}")
    return arr


def _all_finite(arr: np.ndarray) -> bool:
    """True when the float64 sum is finite: then every value is (NaN and inf propagate). A False
    may also be an overflow of huge finite values; callers then look cell by cell. No n-sized
    temporary, unlike np.isfinite(arr).all()."""
    with np.errstate(all="ignore"):
        return bool(np.isfinite(np.add.reduce(arr, axis=None, dtype=np.float64)))


def write_table(columns: dict[str, np.ndarray], dest: str | io.TextIOBase) -> None:
    """Write columns as CSV (or Parquet, by extension) atomically: a temporary file, then a rename.

    Parameters
    ----------
    columns : dict of str to ndarray of shape (n_rows,)
    dest : str or text stream
        A path ending in ``.parquet``/``.pq`` for Parquet, any other path for CSV; ``-`` or a
        stream writes CSV to it (``-`` is stdout).
    """
    with ColumnWriter(dest, list(columns)) as out:
        out.write(np.column_stack([np.asarray(v, dtype=np.float64) for v in columns.values()]))


class ColumnWriter:
    """Float columns written chunk by chunk as CSV, Parquet (by extension) or JSON lines; a file
    appears only when complete (written to a temporary file, then renamed).

    Parameters
    ----------
    dest : str or text stream
        A path, ``-`` for stdout, or an open text stream.
    names : list of str
        The column names.
    json_lines : bool
        One JSON object per row instead of CSV/Parquet.
    """

    def __init__(self, dest: str | io.TextIOBase, names: list[str], *, json_lines: bool = False) -> None:
        self.dest, self.names, self.json_lines = dest, names, json_lines
        to_file = isinstance(dest, str) and dest != "-"
        self.parquet = to_file and dest.lower().endswith((".parquet", ".pq")) and not json_lines
        self._atomic = self._file = self._writer = None
        self._owned = to_file

    def __enter__(self) -> ColumnWriter:
        import sys

        if not self._owned:
            self._file = self.dest if isinstance(self.dest, io.TextIOBase) else sys.stdout
        else:
            from ..persist import atomic_path

            self._atomic = atomic_path(self.dest)
            tmp = self._atomic.__enter__()
            if self.parquet:
                import pyarrow as pa
                import pyarrow.parquet as pq

                self._writer = pq.ParquetWriter(tmp, pa.schema([(n, pa.float64()) for n in self.names]))
            else:
                self._file = open(tmp, "w", encoding="utf-8", newline="")
        self._header = not self.parquet and not self.json_lines  # written with the first rows (below)
        return self

    def _write_header(self) -> None:
        # Not before the first rows: an error before any (a missing column) leaves stdout empty.
        if self._header:
            csv.writer(self._file, lineterminator="\n").writerow(self.names)  # quotes only where needed
            self._header = False

    def write(self, values: np.ndarray) -> None:
        """Append rows.

        Parameters
        ----------
        values : ndarray of shape (n, len(names))
        """
        self._write_header()
        if self.json_lines:
            import json

            from ..persist import jsonable

            self._file.write("".join(json.dumps(jsonable(dict(zip(self.names, row)))) + "\n" for row in values.tolist()))
            return
        table = float_table({n: values[:, j] for j, n in enumerate(self.names)})
        if self.parquet:
            self._writer.write_table(table)
        else:
            self._file.write(_csv_body(table))

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self._write_header()  # no rows at all: still a CSV with its header
        if self._writer is not None:
            self._writer.close()
        if self._owned and self._file is not None:
            self._file.close()
        elif self._file is not None:
            self._file.flush()
        if self._atomic is not None:
            self._atomic.__exit__(exc_type, exc, tb)  # renames only on success


def float_table(columns: dict[str, np.ndarray]) -> Any:
    """A pyarrow Table of float64 columns, zero-copy. (pa.table and pa.array import pandas, 0.3 s
    that every short ``predict`` would pay.)"""
    import pyarrow as pa

    arrays = []
    for values in columns.values():
        v = np.ascontiguousarray(values, dtype=np.float64)
        # NaN (a row predict could not score) becomes null: an empty CSV cell, a Parquet null
        valid = None if _all_finite(v) or not np.isnan(v).any() else pa.py_buffer(np.packbits(~np.isnan(v), bitorder="little"))
        arrays.append(pa.Array.from_buffers(pa.float64(), len(v), [valid, pa.py_buffer(v)]))
    return pa.Table.from_arrays(arrays, names=list(columns))


def _csv_body(table: Any) -> str:
    """The rows of a table as CSV text, without a header (pyarrow's shortest round-trip floats)."""
    import pyarrow.csv as pcsv

    body = io.BytesIO()
    pcsv.write_csv(table, body, pcsv.WriteOptions(include_header=False, quoting_style="needed"))
    return body.getvalue().decode("utf-8")
