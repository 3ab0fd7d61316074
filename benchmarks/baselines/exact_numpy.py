"""The plain numpy script that gradreg's exact solver must beat (issue 13, B1 exact).

Least squares with an intercept column, in float64: the Gram of [1, X, Y] in 65,536-row blocks
with BLAS dsyrk, a Cholesky solve, and one residual pass for the MSE. Every block is shifted by the
first block's column means, so the Gram is that of nearly centered data: as well conditioned as
centering, without a pass for the means.

Usage: python exact_numpy.py X.npy Y.npy
Prints one JSON line: seconds (the fit, after a warm-up on 2,000 rows), coef (q, p), intercept
(q,), mse (q,), peak_mb.
"""

import json
import resource
import sys
import time

import numpy as np
from scipy.linalg import cho_factor, cho_solve
from scipy.linalg.blas import dsyrk

BLOCK = 65_536


def fit(X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """X (n, p) and Y (n, q), any float dtype -> coef (q, p), intercept (q,), mse (q,), in float64."""
    n, p = X.shape
    sx, sy = X[:BLOCK].mean(axis=0, dtype=np.float64), Y[:BLOCK].mean(axis=0, dtype=np.float64)
    A = np.empty((min(n, BLOCK), 1 + p + Y.shape[1]))  # one block of [1, X - sx, Y - sy]
    A[:, 0] = 1.0
    G = np.zeros((A.shape[1], A.shape[1]))
    for s in range(0, n, BLOCK):
        m = min(BLOCK, n - s)
        np.subtract(X[s : s + m], sx, out=A[:m, 1 : p + 1])
        np.subtract(Y[s : s + m], sy, out=A[:m, p + 1 :])
        G = dsyrk(1.0, A[:m].T, beta=1.0, c=G, overwrite_c=1)  # upper triangle of G += A'A; A.T is Fortran-ordered: no copy
    sol = cho_solve(cho_factor(G[: p + 1, : p + 1]), G[: p + 1, p + 1 :])  # (1 + p, q)
    coef = sol[1:]
    intercept = sol[0] + sy - sx @ coef
    sse = np.zeros(Y.shape[1])
    for s in range(0, n, BLOCK):
        r = Y[s : s + BLOCK] - (X[s : s + BLOCK] @ coef + intercept)
        sse += np.einsum("ij,ij->j", r, r)
    return coef.T, intercept, sse / n


if __name__ == "__main__":
    X, Y = np.load(sys.argv[1]), np.load(sys.argv[2])
    fit(X[:2000], Y[:2000])  # warm-up: first calls into BLAS and LAPACK
    t0 = time.perf_counter()
    coef, intercept, mse = fit(X, Y)
    seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {"seconds": seconds, "coef": coef.tolist(), "intercept": intercept.tolist(), "mse": mse.tolist()}
    print(json.dumps(out | {"peak_mb": peak_mb}))
