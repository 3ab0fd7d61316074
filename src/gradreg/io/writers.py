"""Data out: float columns written as CSV, Parquet or JSON lines, atomically (a temporary file,
then a rename), chunk by chunk.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import numpy as np

from .columns import all_finite
from .formats import PARQUET_SUFFIXES

__all__ = ["write_table", "ColumnWriter"]


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
    keep : list of str
        Columns of any type copied from the input before the float columns (IDs beside
        predictions); :meth:`write` gets their values as a pyarrow Table.
    """

    def __init__(
        self, dest: str | io.TextIOBase, names: list[str], *, json_lines: bool = False, keep: list[str] | None = None
    ) -> None:
        self.dest, self.names, self.json_lines = dest, names, json_lines
        self.keep = list(keep or [])
        to_file = isinstance(dest, str) and dest != "-"
        self.parquet = to_file and dest.lower().endswith(PARQUET_SUFFIXES) and not json_lines
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

                self._tmp = tmp
                if not self.keep:  # with kept columns, their types are known at the first rows
                    self._writer = pq.ParquetWriter(tmp, pa.schema([(n, pa.float64()) for n in self.names]))
            else:
                self._file = open(tmp, "w", encoding="utf-8", newline="")
        self._header = not self.parquet and not self.json_lines  # written with the first rows (below)
        return self

    def _write_header(self) -> None:
        # Not before the first rows: an error before any (a missing column) leaves stdout empty.
        if self._header:
            csv.writer(self._file, lineterminator="\n").writerow(self.keep + self.names)  # quotes only where needed
            self._header = False

    def write(self, values: np.ndarray, kept: Any = None) -> None:
        """Append rows.

        Parameters
        ----------
        values : ndarray of shape (n, len(names))
        kept : pyarrow.Table, optional
            The ``keep`` columns of the same n rows.
        """
        self._write_header()
        if self.json_lines:
            import json

            from ..persist import jsonable

            rows = values.tolist()
            if self.keep:
                ids = list(zip(*(_json_values(kept.column(k)) for k in self.keep)))
                lines = (json.dumps({**dict(zip(self.keep, i)), **jsonable(dict(zip(self.names, r)))}) for i, r in zip(ids, rows))
            else:
                lines = (json.dumps(jsonable(dict(zip(self.names, row)))) for row in rows)
            self._file.write("".join(line + "\n" for line in lines))
            return
        table = float_table({n: values[:, j] for j, n in enumerate(self.names)})
        if self.keep:
            import pyarrow as pa

            columns = [kept.column(k) for k in self.keep] + list(table.columns)
            table = pa.Table.from_arrays(columns, names=self.keep + self.names)
        if self.parquet:
            if self._writer is None:
                import pyarrow.parquet as pq

                self._writer = pq.ParquetWriter(self._tmp, table.schema)
            elif table.schema != self._writer.schema:  # a chunk whose kept column read as another type
                table = table.cast(self._writer.schema)
            self._writer.write_table(table)
        else:
            self._file.write(_csv_body(table))

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self._write_header()  # no rows at all: still a CSV with its header
            if self.parquet and self._writer is None:  # and a Parquet file with its columns
                import pyarrow as pa
                import pyarrow.parquet as pq

                fields = [(k, pa.string()) for k in self.keep] + [(n, pa.float64()) for n in self.names]
                self._writer = pq.ParquetWriter(self._tmp, pa.schema(fields))
        if self._writer is not None:
            self._writer.close()
        if self._owned and self._file is not None:
            self._file.close()
        elif self._file is not None:
            self._file.flush()
        if self._atomic is not None:
            self._atomic.__exit__(exc_type, exc, tb)  # renames only on success


def _json_values(col: Any) -> list[Any]:
    """A column's values for JSON: text, numbers, None; dates and times as ISO 8601 text."""
    out = []
    for v in col.to_pylist():
        if hasattr(v, "isoformat"):
            v = v.isoformat()
        elif isinstance(v, bytes):
            v = v.decode("utf-8", errors="replace")
        elif isinstance(v, float) and not np.isfinite(v):
            v = None
        elif not isinstance(v, (str, int, float, bool, type(None))):
            v = str(v)
        out.append(v)
    return out


def float_table(columns: dict[str, np.ndarray]) -> Any:
    """A pyarrow Table of float64 columns, zero-copy. (pa.table and pa.array import pandas, 0.3 s
    that every short ``predict`` would pay.)"""
    import pyarrow as pa

    arrays = []
    for values in columns.values():
        v = np.ascontiguousarray(values, dtype=np.float64)
        # NaN (a row predict could not score) becomes null: an empty CSV cell, a Parquet null
        valid = None if all_finite(v) or not np.isnan(v).any() else pa.py_buffer(np.packbits(~np.isnan(v), bitorder="little"))
        arrays.append(pa.Array.from_buffers(pa.float64(), len(v), [valid, pa.py_buffer(v)]))
    return pa.Table.from_arrays(arrays, names=list(columns))


def _csv_body(table: Any) -> str:
    """The rows of a table as CSV text, without a header (pyarrow's shortest round-trip floats)."""
    import pyarrow.csv as pcsv

    body = io.BytesIO()
    pcsv.write_csv(table, body, pcsv.WriteOptions(include_header=False, quoting_style="needed"))
    return body.getvalue().decode("utf-8")
