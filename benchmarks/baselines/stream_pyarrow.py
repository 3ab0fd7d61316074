"""The plain pyarrow + numpy script that gradreg's streamed solvers must keep up with (issue 13).

Exact: ``iter_batches`` over a Parquet file, one row group at a time (pyarrow's defaults otherwise:
65,536-row batches, threaded decoding), each batch into a float64 block [1, X - sx, Y - sy]
(shifted by the first batch's column means, as in exact_numpy.py), its Gram added with BLAS dsyrk,
then a Cholesky solve. The MSE comes from the Gram: no second pass over the file.
``--decode-only``: ``iter_batches`` and each column to numpy, nothing else; the rate that one
streamed epoch cannot beat.

Usage: python stream_pyarrow.py FILE.parquet --target y0,y1 [--decode-only]
Prints one JSON line: seconds (after imports), rows, rows_per_s, peak_mb and, unless --decode-only,
features, coef (q, p), intercept (q,) and mse (q,).
"""

import argparse
import json
import resource
import time

import numpy as np
import pyarrow.parquet as pq
from scipy.linalg import cho_factor, cho_solve
from scipy.linalg.blas import dsyrk


def batches(f: pq.ParquetFile, columns: list[str] | None = None):
    # one iter_batches per row group: over the whole file, pyarrow keeps every row group's buffers
    # until the end (peak RSS 2.7 GB for a 2.3 GB file; one row group at a time, under 1 GB)
    for group in range(f.num_row_groups):
        yield from f.iter_batches(row_groups=[group], columns=columns)


def decode(path: str) -> dict:
    rows = 0
    for batch in batches(pq.ParquetFile(path)):
        [col.to_numpy() for col in batch.columns]  # zero-copy for float32 columns without nulls
        rows += batch.num_rows
    return {"rows": rows}


def fit(path: str, targets: list[str]) -> dict:
    f = pq.ParquetFile(path)
    features = [c for c in f.schema_arrow.names if c not in targets]
    p, k = len(features), 1 + len(features) + len(targets)
    G, A, shift, n = np.zeros((k, k)), None, None, 0
    for batch in batches(f, features + targets):
        cols = [col.to_numpy() for col in batch.columns]
        if shift is None:
            shift = np.array([c.mean(dtype=np.float64) for c in cols])
        if A is None or A.shape[0] != batch.num_rows:
            A = np.empty((batch.num_rows, k), order="F")  # column-major: each Arrow column is one contiguous copy
            A[:, 0] = 1.0
        for j, c in enumerate(cols):
            np.subtract(c, shift[j], out=A[:, 1 + j])
        G = dsyrk(1.0, A, beta=1.0, c=G, trans=1, overwrite_c=1)  # upper triangle of G += A'A
        n += batch.num_rows
    Gxy = G[: p + 1, p + 1 :]
    sol = cho_solve(cho_factor(G[: p + 1, : p + 1]), Gxy)  # (1 + p, q)
    sse = np.diag(G[p + 1 :, p + 1 :]) - np.einsum("ij,ij->j", sol, Gxy)  # y'y - sol'X'y at the optimum
    intercept = sol[0] + shift[p:] - shift[:p] @ sol[1:]
    return {
        "rows": n,
        "features": features,
        "coef": sol[1:].T.tolist(),
        "intercept": intercept.tolist(),
        "mse": (sse / n).tolist(),
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file")
    ap.add_argument("--target", required=True, help="comma-separated target columns; every other column is a feature")
    ap.add_argument("--decode-only", action="store_true")
    args = ap.parse_args()
    t0 = time.perf_counter()
    out = decode(args.file) if args.decode_only else fit(args.file, args.target.split(","))
    seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "rows_per_s": out["rows"] / seconds, "peak_mb": peak_mb} | out))
