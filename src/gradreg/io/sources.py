"""Tables larger than memory: CSV and Parquet files, folders and globs, read in chunks of rows.

A :class:`Stream` names its files and reads any columns of them as a sequence of
:class:`~gradreg.io.Table` chunks of at most ``chunk_rows`` rows (pyarrow's streaming CSV reader
and Parquet's row groups), each knowing its file and first row, so a bad cell is reported by file,
line and column exactly as when the whole table is read. :class:`StreamingDataset` turns the
chunks into validated ``(X, Y, w)`` arrays for the solvers.

Memory stays bounded by a few chunks, whatever the size of the data. Gradient descent gets a
fresh random order of *units* each epoch (Parquet row groups; for CSV, whole files, which cannot
be entered in the middle) and shuffles rows inside a buffer (``--shuffle-buffer``).
"""

from __future__ import annotations

import glob
import io
import os
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..distributed import SINGLE, Comm
from ..errors import ConfigError, DataError
from .columns import Dataset, load, select, used_dates
from .formats import (
    BUILTIN,
    CSV_SUFFIXES,
    PARQUET_SUFFIXES,
    Table,
    csv_records,
    delimiter_hint,
    parse_delimiter,
    ragged_message,
    refuse_binary,
    strip_header,
    strip_names,
    value_hint,
)
from .partition import Split

__all__ = [
    "Stream",
    "StreamingDataset",
    "open_source",
    "stream_of",
    "expand",
    "is_glob",
    "prefetch",
    "DEFAULT_CHUNK_ROWS",
    "IN_MEMORY_BYTES",
]

DEFAULT_CHUNK_ROWS = 65_536
IN_MEMORY_BYTES = 1 << 30  # data estimated below this (as float64) is read whole: the fast path
PARQUET_BUFFER = 1 << 20  # bytes of a column chunk read at a time (pyarrow's buffer_size)


def _parquet_file(path: str):
    """A ParquetFile that streams its column chunks: pyarrow's default (pre_buffer) reads a row
    group's chunks whole before its first batch, 465 MB for one 1M-row group of S1 (its first
    10,000-row batch took 1-2 s), and holds them while it is read (peak RSS 900 MB to decode
    it, 550 MB streamed)."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(path, pre_buffer=False, buffer_size=PARQUET_BUFFER)


def is_glob(spec: str) -> bool:
    """Whether a data argument is a glob pattern (it holds ``*``, ``?`` or ``[``), not a path.

    Parameters
    ----------
    spec : str

    Returns
    -------
    bool
    """
    return any(c in spec for c in "*?[")


def expand(spec: str) -> list[str]:
    """The files a data argument names: a file, a folder (its CSV/Parquet files), or a glob.

    Parameters
    ----------
    spec : str

    Returns
    -------
    list of str
        Sorted, so that the order (and the model's fingerprint) does not depend on the file system.
    """
    if is_glob(spec):
        files = sorted(f for f in glob.glob(spec, recursive=True) if os.path.isfile(f))
        files = [f for f in files if f.lower().endswith(CSV_SUFFIXES + PARQUET_SUFFIXES)]
        if not files:
            raise DataError(f"{spec}: the pattern matches no CSV or Parquet file")
        return files
    if os.path.isdir(spec):
        files = sorted(
            os.path.join(root, f)
            for root, _, names in os.walk(spec)
            for f in names
            if f.lower().endswith(CSV_SUFFIXES + PARQUET_SUFFIXES) and not f.startswith((".", "_"))
        )
        if not files:
            raise DataError(f"{spec}: the folder holds no CSV or Parquet file")
        return files
    if not os.path.exists(spec):
        raise DataError(f"{spec}: no such file")
    return [spec]


@dataclass
class _File:
    path: str
    kind: str  # "csv" or "parquet"
    columns: list[str]
    rows: int | None  # known for Parquet
    row_groups: list[int] = field(default_factory=list)  # rows per row group (Parquet)
    raw: list[str] | None = None  # CSV: the header's names as written, spaces around them included


class Stream:
    """CSV/Parquet files read in chunks of rows.

    Parameters
    ----------
    spec : str
        A file, a folder, or a glob such as ``"data/part-*.parquet"``.
    chunk_rows : int
        Rows per chunk (the unit of memory).
    delimiter : str, optional
        CSV field separator, or a name: ``tab``, ``semicolon``... (see
        :func:`~gradreg.io.parse_delimiter`); default: detected from each file's head (``,``
        ``;`` tab ``|``), the suffix's (``,``; tab for ``.tsv``) when it cannot tell.
    options : ReadOptions, optional
        Decimal mark, thousands separator, date columns, columns kept as text (its delimiter is
        used when ``delimiter`` is None). ``columns`` are then the converted table's.
    """

    def __init__(
        self, spec: str, *, chunk_rows: int = DEFAULT_CHUNK_ROWS, delimiter: str | None = None, options: Any = None
    ) -> None:
        from .reading import ReadOptions

        if chunk_rows < 1:
            raise ConfigError("{chunk_rows} must be a positive integer; got {chunk_rows=}", chunk_rows=chunk_rows)
        options = options or ReadOptions()
        delimiter = parse_delimiter(delimiter if delimiter is not None else options.delimiter)
        self.spec, self.chunk_rows, self.delimiter = spec, chunk_rows, delimiter
        self.options = options
        self.notices: list[str] = []  # a delimiter detected, as the whole-table reader says it
        self._detected: dict[str, str] = {}
        self.files = [self._open(path) for path in expand(spec)]
        first = self.files[0]
        for f in self.files[1:]:
            if sorted(f.columns) != sorted(first.columns):
                missing = sorted(set(first.columns) - set(f.columns))
                extra = sorted(set(f.columns) - set(first.columns))
                what = f"lacks {', '.join(map(repr, missing))}" if missing else f"has extra {', '.join(map(repr, extra))}"
                raise DataError(f"{f.path}: columns differ from {first.path}: it {what}")
        lacking = [c for c in options.dates if c not in first.columns]
        if lacking:
            raise DataError(
                f"{first.path}: no column named {', '.join(map(repr, lacking))}, a date column (--dates); "
                f"columns are {', '.join(first.columns)}"
            )
        self.columns = options.columns(first.columns)

    def _delimiter(self, path: str) -> str:
        """The given delimiter, else the one detected from the file's head (every rank reads the
        same head, so all agree)."""
        if self.delimiter:
            return self.delimiter
        if path not in self._detected:
            from .formats import SNIFF_BYTES, suffix_delimiter
            from .reading import detected_notice, sniff_delimiter

            with open(path, "rb") as fh:
                head = fh.read(SNIFF_BYTES)
            default = suffix_delimiter(path)
            found = sniff_delimiter(head, default, truncated=len(head) == SNIFF_BYTES)
            self._detected[path] = found
            if found != default:
                self.notices.append(detected_notice(path, found))
        return self._detected[path]

    def _head(self, path: str) -> bytes:
        from .formats import SNIFF_BYTES

        with open(path, "rb") as fh:
            return fh.read(SNIFF_BYTES)

    def _open(self, path: str) -> _File:
        import pyarrow as pa

        if path.lower().endswith(PARQUET_SUFFIXES):
            import pyarrow.parquet as pq

            try:
                meta = pq.ParquetFile(path).metadata
            except MemoryError:
                raise
            except (pa.ArrowException, OSError) as e:
                raise DataError(f"{path}: not a readable Parquet file: {str(e).splitlines()[0]}") from None
            groups = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
            return _File(path, "parquet", list(meta.schema.to_arrow_schema().names), meta.num_rows, groups)
        import csv

        try:
            with open(path, "rb") as f:
                refuse_binary(f.read(4096), path)
            with open(path, encoding="utf-8-sig", newline="") as f:  # pyarrow drops a BOM too
                header = next((rec for rec in csv.reader(f, delimiter=self._delimiter(path)) if rec), None)
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}") from None
        if header is None:
            raise DataError(f"{path}: file is empty; expected a header row and data rows")
        return _File(path, "csv", strip_names(header, path), None, raw=header)

    def estimated_bytes(self, n_columns: int) -> int:
        """What ``n_columns`` float64 columns of every row would take in memory (CSV: the file size).

        Parameters
        ----------
        n_columns : int

        Returns
        -------
        int
        """
        total = 0
        for f in self.files:
            total += f.rows * n_columns * 8 if f.rows is not None else os.path.getsize(f.path)
        return total

    def units(self) -> list[tuple[int, int | None]]:
        """What can be read independently, in file order: ``(file, row group)`` for Parquet,
        ``(file, None)`` for a CSV file (read from its start).

        Returns
        -------
        list of tuple
        """
        out: list[tuple[int, int | None]] = []
        for i, f in enumerate(self.files):
            if f.kind == "parquet":
                out += [(i, g) for g in range(len(f.row_groups))]
            else:
                out.append((i, None))
        return out

    def byte_ranges(self, file: int, parts: int) -> list[tuple[int, int]]:
        """Cut a CSV file's data (after the header) into ``parts`` byte ranges at line boundaries.

        A line belongs to the range that holds its first byte, so every line is in exactly one
        range. (A quoted field holding a newline could be cut: split such a file into several
        files, or convert it to Parquet, before distributing it.)

        Parameters
        ----------
        file : int
            Index into ``files``.
        parts : int

        Returns
        -------
        list of (int, int)
            ``(start, end)`` byte offsets; some may be empty when lines are long.
        """
        path = self.files[file].path
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            fh.readline()  # the header
            first = fh.tell()
            cuts = [first]
            for j in range(1, parts):
                nominal = first + (size - first) * j // parts
                if nominal <= cuts[-1]:
                    cuts.append(cuts[-1])
                    continue
                fh.seek(nominal - 1)
                fh.readline()  # to the end of the line holding byte nominal - 1: the next line starts here
                cuts.append(max(cuts[-1], fh.tell()))
            cuts.append(size)
        return list(zip(cuts[:-1], cuts[1:]))

    def tables(self, columns: Sequence[str], units: Sequence[tuple] | None = None, text: Sequence[str] = ()) -> Iterator[Table]:
        """Chunks of the named columns, each a Table of at most ``chunk_rows`` rows.

        Parameters
        ----------
        columns : sequence of str
        units : sequence of tuple, optional
            Which parts to read, in this order: ``(file, row group)`` for Parquet, ``(file, None)``
            for a whole CSV file, ``(file, (start, end))`` for a byte range of one (see
            :meth:`byte_ranges`). Default: everything in file order.
        text : sequence of str
            CSV columns read as text (categorical levels, group columns), not numbers.

        Yields
        ------
        Table
            With ``source`` the file and ``row_offset`` its first data row in that file (in its
            byte range, for a range).
        """
        from .reading import convert

        raw = self.options.sources(columns, self.files[0].columns) if self.options.converts else list(columns)
        options = self.options
        if options.converts and any(c not in raw for c in options.dates):  # a pass over some columns only
            from dataclasses import replace

            options = replace(options, dates={c: how for c, how in options.dates.items() if c in raw})
        for i, group in self.units() if units is None else units:
            f = self.files[i]
            if f.kind == "parquet":
                tables = self._parquet(f, raw, group)
            else:
                tables = self._csv(f, raw, group, text)
            for table in tables:
                if self.options.converts:
                    table = convert(table, options)
                    if table.data.column_names != list(columns):
                        table.data = table.data.select(list(columns))
                yield table

    def _parquet(self, f: _File, columns: Sequence[str], group: int | None) -> Iterator[Table]:
        import pyarrow as pa

        groups = range(len(f.row_groups)) if group is None else [group]
        try:
            reader = _parquet_file(f.path)
            for g in groups:
                offset = sum(f.row_groups[:g])
                if f.row_groups[g] <= 4 * self.chunk_rows:
                    # A whole (small) row group decodes its columns in parallel, much faster than
                    # iter_batches; it is then cut into chunks of chunk_rows.
                    data = reader.read_row_group(g, columns=list(columns), use_threads=True)
                    for start in range(0, data.num_rows, self.chunk_rows):
                        yield Table(data.slice(start, self.chunk_rows), f.path, row_offset=offset + start)
                else:  # a large row group: batch by batch, so memory stays bounded
                    for batch in reader.iter_batches(batch_size=self.chunk_rows, row_groups=[g], columns=list(columns)):
                        yield Table(pa.Table.from_batches([batch]), f.path, row_offset=offset)
                        offset += batch.num_rows
        except MemoryError:
            raise
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"{f.path}: not a readable Parquet file: {str(e).splitlines()[0]}") from None

    def _csv(
        self, f: _File, columns: Sequence[str], byte_range: tuple[int, int] | None = None, text: Sequence[str] = ()
    ) -> Iterator[Table]:
        import pyarrow as pa
        import pyarrow.csv as pcsv

        delimiter = self._delimiter(f.path)
        start = None if byte_range is None else byte_range[0]
        if byte_range is not None and byte_range[0] >= byte_range[1]:
            return
        source = f.path if byte_range is None else _RangeFile(f.path, *byte_range)
        raw = [f.raw[f.columns.index(c)] if c in f.columns else c for c in columns]  # as pyarrow sees them
        opts = self.options
        # numbers as float64 (every block alike); as text what is converted or copied as written
        text = set(text) | set(opts.keep) | set(opts.dates) | set(opts.text)
        text |= {c for c in columns} if opts.thousands else set()
        try:
            reader = pcsv.open_csv(
                source,
                read_options=pcsv.ReadOptions(block_size=1 << 20),  # larger blocks: RSS grows with the file (pyarrow 26)
                parse_options=pcsv.ParseOptions(delimiter=delimiter),
                convert_options=pcsv.ConvertOptions(
                    include_columns=raw,
                    column_types={r: pa.string() if c in text else pa.float64() for r, c in zip(raw, columns)},
                    strings_can_be_null=True,
                    decimal_point=opts.decimal,
                ),
            )
        except pa.ArrowInvalid as e:
            raise self._csv_error(f, columns, 0, e, start) from None
        offset = 0
        pending: list[Any] = []
        rows = 0
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            except pa.ArrowInvalid as e:
                raise self._csv_error(f, columns, offset + rows, e, start) from None
            pending.append(batch)
            rows += batch.num_rows
            while rows >= self.chunk_rows:
                table = pa.Table.from_batches(pending).rename_columns(list(columns))
                yield Table(
                    table.slice(0, self.chunk_rows), f.path, path=f.path, delimiter=delimiter, row_offset=offset, byte_start=start
                )
                rest = table.slice(self.chunk_rows)
                pending, rows = rest.to_batches(), rest.num_rows
                offset += self.chunk_rows
        if rows:
            yield Table(
                pa.Table.from_batches(pending).rename_columns(list(columns)),
                f.path,
                path=f.path,
                delimiter=delimiter,
                row_offset=offset,
                byte_start=start,
            )

    def _csv_error(
        self, f: _File, columns: Sequence[str], from_row: int, err: Exception, byte_start: int | None = None
    ) -> DataError:
        """pyarrow names neither the row nor the value's line: find the bad cell from ``from_row``
        (counted from ``byte_start`` when reading a byte range)."""
        delimiter = self._delimiter(f.path)
        wanted = [f.columns.index(c) for c in columns if c in f.columns]
        skip = 1 if byte_start is None else 0  # a byte range has no header line
        for index, (line, record) in enumerate(csv_records(f.path, delimiter, byte_start)):
            if index < skip:
                continue
            if index - skip < from_row:
                continue
            if len(record) != len(f.columns):
                hint = delimiter_hint(f.raw or f.columns, delimiter, delimiter.join(record))
                return DataError(ragged_message(f.path, line, len(f.columns), len(record), hint))
            for j in wanted:
                value = record[j]
                if value.strip() == "":
                    continue
                try:
                    if self.options.decimal == ",":  # 1,5 is a number; 1.5 is not
                        value_read = value.replace(",", ".") if "." not in value else "not a number"
                    else:
                        value_read = value
                    float(value_read)
                except ValueError:
                    hint = value_hint(value, features=False)  # the target, maybe
                    return DataError(f"{f.path}, line {line}, column {f.columns[j]!r}: expected a number, got {value!r}{hint}")
        return DataError(f"{f.path}: not a readable CSV file: {str(err).splitlines()[0]}")


class _RangeFile(io.RawIOBase):
    """A CSV file's header line followed by its bytes ``[start, end)``: what pyarrow's CSV reader
    sees for one rank's share of a file."""

    def __init__(self, path: str, start: int, end: int) -> None:
        super().__init__()
        self.fh = open(path, "rb")  # noqa: SIM115 (closed by close())
        self.head = self.fh.readline()
        self.fh.seek(start)
        self.left = end - start

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        view = memoryview(buf).cast("B")
        if self.head:
            n = min(len(view), len(self.head))
            view[:n] = self.head[:n]
            self.head = self.head[n:]
            return n
        if self.left <= 0:
            return 0
        n = self.fh.readinto(view[: min(len(view), self.left)])
        self.left -= n or 0
        return n or 0

    def close(self) -> None:
        self.fh.close()
        super().close()


class StreamingDataset:
    """Validated ``(X, Y, w)`` chunks of a :class:`Stream`: what the solvers read when data is too
    large for memory.

    The feature columns are settled from the first chunk (every other numeric column unless
    named), and every chunk is then checked by the same rules as a whole table.

    Parameters
    ----------
    stream : Stream
    target : str or sequence of str
    features : str or sequence of str, optional
    weight : str, optional
    drop_missing : bool
    units : sequence of tuple, optional
        Only these parts of the stream (one rank's shard, see :func:`gradreg.distributed.shard`).
    exclude : str or sequence of str, optional
        Columns left out of the default features (see :func:`gradreg.io.select`).
    groups : str or sequence of str, optional
        Cluster columns, read beside the features (see :func:`gradreg.io.select`).
    design : gradreg.io.design.DesignRequest, optional
        Categorical columns or a formula: their levels come from one pass over every chunk of
        this rank, merged across ranks, before any chunk is encoded.
    fit_intercept : bool
        Whether the model has an intercept (a categorical column then drops its reference level).
    comm : gradreg.distributed.Comm
        The ranks whose levels are merged.
    """

    def __init__(
        self,
        stream: Stream,
        target: Sequence[str] | str,
        features: Sequence[str] | str | None = None,
        *,
        weight: str | None = None,
        drop_missing: bool = False,
        units: Sequence[tuple] | None = None,
        exclude: Sequence[str] | str | None = None,
        design: Any = None,
        fit_intercept: bool = True,
        comm: Comm = SINGLE,
        groups: Sequence[str] | str | None = None,
    ) -> None:
        self.stream, self.weight, self.drop_missing = stream, weight, drop_missing
        names = (groups.split(",") if isinstance(groups, str) else groups) if groups else []
        self.group_names = [g.strip() for g in names if g.strip()] or None
        self.shard = None if units is None else list(units)
        first = next(self._first_tables(), None)
        if first is None:
            raise DataError(f"{stream.spec}: no data rows")
        kw = {
            "weight": weight,
            "drop_missing": drop_missing,
            "min_rows": 0,
            "fit_intercept": fit_intercept,
            "groups": self.group_names,
        }
        probe = select(first, target, features, exclude=exclude, design=design, **kw)
        self.design = probe.design
        if self.design is not None:  # the levels of every chunk on every rank, then the design fixed to them
            self.design = self._learn(self.design, design, first, comm)
            probe = select(first, target, features, exclude=exclude, design=self.design, **kw)
        self.feature_names, self.target_names = probe.feature_names, probe.target_names
        self.notices = list(stream.notices) + probe.notices
        self.dates = used_dates(stream.options, self.feature_names if self.design is None else self.design.inputs)
        self.source = stream.spec
        if self.design is None:
            self.columns = self.target_names + self.feature_names + ([weight] if weight else [])
        else:
            reads = self.design.inputs + (self.design.target_inputs if not self.design.sugar else self.target_names)
            self.columns = list(dict.fromkeys(reads + ([weight] if weight else [])))
        self.columns += [g for g in self.group_names or [] if g not in self.columns]
        read = self.target_names + (self.feature_names if self.design is None else self.design.inputs)
        self._text = [g for g in self.group_names or [] if g not in read]  # group columns: read as text
        if self.design is not None:
            self._text += [c for c in self.design.text_columns() if c not in self._text]

    def _learn(self, draft: Any, request: Any, first: Table, comm: Comm) -> Any:
        """``draft`` (learned from the first chunk) fixed to the levels of all chunks of all ranks."""
        from .design import Design, DesignRequest, column_levels, merge_levels

        request = request if isinstance(request, DesignRequest) else DesignRequest()
        columns = list(draft.levels)
        levels: dict[str, list] = {c: [] for c in columns}
        if columns:
            for table in self.stream.tables(columns, self.shard, draft.text_columns()):
                for c in columns:
                    levels[c] = merge_levels(levels[c], column_levels(table.data.column(c)))
        for part in comm.gather_json(levels):  # a level may be on one rank only
            levels = {c: merge_levels(levels[c], part[c]) for c in columns}
        return Design.learn(
            request,
            draft.formula,
            first.data,
            levels,
            where=first.where,
            source=first.source,
            sugar=draft.sugar,
        )

    def split(self, val_fraction: float, seed: int, comm: Comm = SINGLE) -> Split:
        """This rank's rows as training and validation chunks: a seeded mask per chunk, keyed by
        file and first row, picks the validation rows, so every pass and epoch sees the same rows
        without holding any of them.

        Parameters
        ----------
        val_fraction : float
        seed : int
        comm : gradreg.distributed.Comm
            Unused: each rank masks its own chunks.

        Returns
        -------
        Split
        """
        frac = val_fraction
        held_out = {"n": 0}

        def rows(units=None, part="train", count=False, grouped=False):
            for key, (X, Y, w, *g) in self.keyed_chunks(units, grouped=grouped):
                if frac > 0:
                    mask = np.random.default_rng([seed, zlib.crc32(key[0].encode()), *key[1:]]).random(len(X)) < frac
                    if count:
                        held_out["n"] += int(mask.sum())
                    keep = mask if part == "val" else ~mask
                    X, Y, w = X[keep], Y[keep], None if w is None else w[keep]
                    g = [[a[keep] for a in g[0]]] if g else g
                elif part == "val":
                    continue
                yield (X, Y, w, *g)

        units = self.units()
        calls = [0]

        def chunks():
            calls[0] += 1
            return rows(count=calls[0] == 1)

        def epoch_chunks(epoch: int):
            order = np.random.default_rng([seed, epoch]).permutation(len(units))
            return rows([units[i] for i in order])

        return Split(
            chunks=chunks,
            epoch_chunks=epoch_chunks,
            val_chunks=(lambda: rows(part="val")) if frac > 0 else None,
            n_val=lambda: held_out["n"],
            streamed=True,
            grouped_chunks=(lambda: rows(grouped=True)) if self.group_names else None,
        )

    def _first_tables(self) -> Iterator[Table]:
        # The first chunk of the first file, with pyarrow's type inference (to find numeric columns).
        import pyarrow as pa
        import pyarrow.csv as pcsv

        from .reading import convert

        f = self.stream.files[0]
        if f.kind == "parquet":
            batch = next(_parquet_file(f.path).iter_batches(batch_size=min(self.stream.chunk_rows, 10_000)), None)
            if batch is not None:
                yield convert(Table(pa.Table.from_batches([batch]), f.path), self.stream.options)
            return
        from .formats import csv_convert_options

        delimiter = self.stream._delimiter(f.path)
        try:
            reader = pcsv.open_csv(
                f.path,
                parse_options=pcsv.ParseOptions(delimiter=delimiter),
                convert_options=csv_convert_options(self.stream.options, self.stream._head(f.path), delimiter),
            )
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except pa.ArrowInvalid as e:
            raise self.stream._csv_error(f, f.columns, 0, e) from None
        table = strip_header(pa.Table.from_batches([batch]), f.path)  # " rain " is rain
        yield convert(Table(table, f.path, path=f.path, delimiter=delimiter), self.stream.options)

    def units(self) -> list[tuple]:
        """The parts this dataset reads: its shard, or every unit of the stream.

        Returns
        -------
        list of tuple
        """
        return self.stream.units() if self.shard is None else list(self.shard)

    @property
    def n_features(self) -> int:
        """Number of feature columns.

        Returns
        -------
        int
        """
        return len(self.feature_names)

    def chunks(self, units: Sequence[tuple[int, int | None]] | None = None) -> Iterator[tuple]:
        """Validated chunks.

        Parameters
        ----------
        units : sequence of (file, row group), optional
            See :meth:`Stream.tables`.

        Yields
        ------
        tuple of (ndarray, ndarray, ndarray or None)
            X (n, n_features), Y (n, n_targets), w (n,) or None, float64.
        """
        for _, arrays in self.keyed_chunks(units):
            yield arrays

    def keyed_chunks(self, units: Sequence[tuple[int, int | None]] | None = None, grouped: bool = False) -> Iterator[tuple]:
        """Like :meth:`chunks`, each with a key that names it in every pass: (file, first row).

        Parameters
        ----------
        units : sequence of (file, row group), optional
        grouped : bool
            Add the chunk's group columns' values (a list of arrays) as a fourth array.

        Yields
        ------
        tuple of (tuple of (str, int, ...), tuple of arrays)
        """

        for key, ds in prefetch(self._validated(units)):
            yield key, (ds.X, ds.Y, ds.sample_weight) + ((ds.groups,) if grouped else ())

    def _validated(self, units: Sequence[tuple] | None = None) -> Iterator[tuple]:
        """(key, Dataset) of each chunk; the Dataset knows where its rows are in the files."""
        for table in self.stream.tables(self.columns, self.shard if units is None else units, text=self._text):
            ds = select(
                table,
                self.target_names,
                self.feature_names,
                weight=self.weight,
                drop_missing=self.drop_missing,
                min_rows=0,
                design=self.design,
                groups=self.group_names,
            )
            yield (table.source, table.row_offset) + (() if table.byte_start is None else (table.byte_start,)), ds

    def largest(self, j: int) -> tuple[str, float]:
        """Where the largest magnitude of feature-then-target column ``j`` is, and that value: a
        pass over the data (only an error message needs it).

        Parameters
        ----------
        j : int

        Returns
        -------
        (str, float)
            ``("data.csv, line 7, column 'x'", 1e200)``.
        """
        best: tuple[str, float] | None = None
        for _, ds in self._validated():
            if len(ds.X):
                place, value = ds.largest(j)
                if best is None or abs(value) > abs(best[1]):
                    best = place, value
        return best if best is not None else (self.source, float("nan"))

    def in_memory(self):
        """Every chunk concatenated into one :class:`~gradreg.io.Dataset` (for data that fits).

        Returns
        -------
        Dataset
            Its ``where`` names the file and line of a row.
        """
        parts = [ds for _, ds in prefetch(self._validated())]
        X = np.concatenate([p.X for p in parts]) if parts else np.zeros((0, self.n_features))
        Y = np.concatenate([p.Y for p in parts]) if parts else np.zeros((0, len(self.target_names)))
        w = np.concatenate([p.sample_weight for p in parts]) if parts and self.weight else None
        starts = np.cumsum([0] + [len(p.X) for p in parts])
        finders = [p.where for p in parts]

        def where(i: int, column: str) -> str:
            k = int(np.searchsorted(starts, i, side="right")) - 1  # the chunk holding row i
            return finders[k](i - int(starts[k]), column)

        groups = None
        if self.group_names:
            groups = [
                np.concatenate([p.groups[i] for p in parts]) if parts else np.zeros(0) for i in range(len(self.group_names))
            ]
        return Dataset(
            X,
            Y,
            self.feature_names,
            self.target_names,
            w,
            self.source,
            list(self.notices),
            where=where,
            groups=groups,
            group_names=self.group_names,
            design=self.design,
            dates=self.dates,
        )


def stream_of(
    data: str, *, chunk_rows: int = DEFAULT_CHUNK_ROWS, delimiter: str | None = None, options: Any = None
) -> Stream | None:
    """A :class:`Stream` over ``data`` when it names CSV/Parquet file(s) on disk (a file, folder or
    glob); None for stdin (``-``), .npy/.npz files, built-in tables and empty files (whose whole-table
    reader says so in its usual words).

    Parameters
    ----------
    data : str
    chunk_rows : int
    delimiter : str, optional
    options : ReadOptions, optional

    Returns
    -------
    Stream or None
    """
    if data == "-" or (data in BUILTIN and not os.path.exists(data)):
        return None
    if not (os.path.isdir(data) or is_glob(data) or data.lower().endswith(CSV_SUFFIXES + PARQUET_SUFFIXES)):
        return None
    if os.path.isfile(data) and os.path.getsize(data) == 0:
        return None
    return Stream(data, chunk_rows=chunk_rows, delimiter=delimiter, options=options)


def open_source(
    data: str,
    target: Sequence[str] | str,
    features: Sequence[str] | str | None = None,
    *,
    weight: str | None = None,
    exclude: Sequence[str] | str | None = None,
    drop_missing: bool = False,
    delimiter: str | None = None,
    stream: bool | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    comm: Comm = SINGLE,
    design: Any = None,
    fit_intercept: bool = True,
    groups: Sequence[str] | str | None = None,
    options: Any = None,
) -> Dataset | StreamingDataset:
    """The training rows of ``data`` as a source for :func:`gradreg.pipeline.train`: in memory when
    they fit (the fast path), else streamed chunk by chunk.

    Data estimated below :data:`IN_MEMORY_BYTES` (1 GiB as float64) are read whole; larger data,
    or ``stream=True``, stream. On several ranks only this rank's rows are read: its Parquet row
    groups and CSV byte ranges (see :func:`gradreg.distributed.shard`), in memory when the shard
    fits; a built-in table or a .npy/.npz file is read whole and cut into contiguous row ranges.

    Parameters
    ----------
    data : str
        A CSV/TSV/Parquet file, a folder or glob of them, a .npy/.npz file, a built-in table
        (``"crops"``), or ``"-"`` for CSV on stdin.
    target : str or sequence of str
    features : str or sequence of str, optional
        Default: every other numeric column.
    weight : str, optional
    exclude : str or sequence of str, optional
    drop_missing : bool
    delimiter : str, optional
    stream : bool, optional
        True streams whatever the size; False reads whole; None decides by size.
    chunk_rows : int
        Rows per streamed chunk.
    comm : gradreg.distributed.Comm
    design : gradreg.io.design.DesignRequest, optional
        Categorical columns and formulas (see :func:`gradreg.io.select`); streamed, their levels
        come from one pass over every chunk of every rank.
    fit_intercept : bool
    groups : str or sequence of str, optional
        Cluster column(s), read beside the features (see :func:`gradreg.io.select`).
    options : ReadOptions, optional
        Decimal mark, thousands separator, date columns (see :class:`~gradreg.io.ReadOptions`).

    Returns
    -------
    Dataset or StreamingDataset
    """
    from ..distributed import shard

    world, rank = comm.world, comm.rank
    categorical = _categorical_columns(design)
    if categorical:  # read as text from a CSV: a level may look like a number for many rows
        from dataclasses import replace

        from .reading import ReadOptions

        options = options or ReadOptions(delimiter=delimiter)
        options = replace(options, text=tuple(dict.fromkeys(options.text + tuple(categorical))))
    if world > 1 and data == "-":
        raise ConfigError("distributed training reads files: stdin (-) cannot be shared between ranks")

    def whole() -> Dataset:
        return load(
            data,
            target,
            features,
            weight=weight,
            drop_missing=drop_missing,
            delimiter=delimiter,
            exclude=exclude,
            design=design,
            fit_intercept=fit_intercept,
            groups=groups,
            options=options,
        )

    files = stream_of(data, chunk_rows=chunk_rows, delimiter=delimiter, options=options)
    if files is None:
        ds = whole()
        if world == 1:
            return ds
        lo, hi = len(ds.X) * rank // world, len(ds.X) * (rank + 1) // world
        w = None if ds.sample_weight is None else ds.sample_weight[lo:hi]
        g = None if ds.groups is None else [a[lo:hi] for a in ds.groups]
        return Dataset(
            ds.X[lo:hi],
            ds.Y[lo:hi],
            ds.feature_names,
            ds.target_names,
            w,
            ds.source,
            ds.notices,
            ds.dtypes,
            groups=g,
            group_names=ds.group_names,
            design=ds.design,
            dates=ds.dates,
        )
    units = None if world == 1 else shard(files, world, rank)
    sds = StreamingDataset(
        files,
        target,
        features,
        weight=weight,
        drop_missing=drop_missing,
        units=units,
        exclude=exclude,
        groups=groups,
        design=design,
        fit_intercept=fit_intercept,
        comm=comm,
    )
    streamed = stream or (stream is None and files.estimated_bytes(len(sds.columns)) / world > IN_MEMORY_BYTES)
    if not streamed and world == 1 and len(files.files) == 1:  # one file that fits: read it whole, as always
        return whole()
    if sds.design is not None and sds.design.parsed.stateful:  # its state would be the first chunk's
        from .design import stateful_error

        raise stateful_error(sds.design.formula)
    return sds if streamed else sds.in_memory()


def _categorical_columns(design: Any) -> list[str]:
    """The columns a design request names as categorical: ``--categorical`` and ``C(col)``."""
    if design is None or not getattr(design, "wanted", False):
        return []
    from .design import _parse

    return list(design.categorical) + (_parse(str(design.formula)).forced if design.formula is not None else [])


def prefetch(items: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """Run ``items`` in a background thread, ``depth`` items ahead: reading and parsing the next
    chunk (pyarrow and numpy release the GIL) overlaps the solver's work on this one. An error in
    the reader is raised here, in order; stopping early stops the reader.

    Parameters
    ----------
    items : iterator
    depth : int

    Yields
    ------
    object
        The items, in order.
    """
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def work() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((done, None))
        except BaseException as e:  # handed to the consumer, raised in its thread
            q.put((done, e))

    thread = threading.Thread(target=work, name="gradreg-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, err = q.get()
            if item is done:
                if err is not None:
                    raise err
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # drain so a blocked put can see the stop flag
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)
