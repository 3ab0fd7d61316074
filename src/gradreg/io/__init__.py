"""Data in and out: file formats and readers, column selection, sources of chunks, writers.

The rest of gradreg imports these names from here; nothing in this package imports from the
pipeline, the solvers or the CLI (the data flows one way: CLI → io → pipeline → solvers).
"""

from .columns import Dataset, as_2d_float, feature_matrix, load, require_features, require_numeric_columns, select
from .formats import (
    BUILTIN,
    BUILTIN_DESCRIPTIONS,
    CSV_SUFFIXES,
    PARQUET_SUFFIXES,
    Table,
    builtin_names,
    parse_delimiter,
    read_table,
)
from .partition import Split
from .reading import ReadOptions
from .sources import (
    DEFAULT_CHUNK_ROWS,
    IN_MEMORY_BYTES,
    Stream,
    StreamingDataset,
    expand,
    is_glob,
    open_source,
    prefetch,
    stream_of,
)
from .writers import ColumnWriter, write_table

__all__ = [
    "BUILTIN",
    "BUILTIN_DESCRIPTIONS",
    "CSV_SUFFIXES",
    "DEFAULT_CHUNK_ROWS",
    "IN_MEMORY_BYTES",
    "PARQUET_SUFFIXES",
    "ColumnWriter",
    "Dataset",
    "ReadOptions",
    "Stream",
    "Split",
    "StreamingDataset",
    "Table",
    "as_2d_float",
    "builtin_names",
    "expand",
    "feature_matrix",
    "is_glob",
    "load",
    "open_source",
    "parse_delimiter",
    "prefetch",
    "read_table",
    "require_features",
    "require_numeric_columns",
    "select",
    "stream_of",
    "write_table",
]
