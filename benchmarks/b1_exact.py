"""B1's in-memory exact fit in one process: gradreg, a plain numpy script and scikit-learn.

Times ``gradreg.LinearRegressor(solver="exact").fit(X, Y)`` (warmed up on 2,000 rows), the plain
numpy script of the issue (a float64 Gram of 64k-row blocks by dsyrk, Cholesky, one residual
pass) and scikit-learn's LinearRegression (once), all in this process, so their ratios compare
on a shared machine. Checks gradreg's MSE against the optimum and its coefficients against the
float64 solution (a blocked QR of the centered data, cached in benchmarks/.cache).

Usage: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/b1_exact.py [--repeat 3] [--no-sklearn]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import CACHE, N, P, Q, b1_paths  # noqa: E402
from bench import _mse as mse  # noqa: E402

BLOCK = 65_536


def plain_numpy(X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The baseline: float64 Gram of [X, Y] about the first block's mean (dsyrk), Cholesky, one residual pass."""
    from scipy.linalg import blas, cho_solve, cholesky

    n, k = len(X), P + Q
    shift = np.hstack([X[:BLOCK].mean(axis=0, dtype=np.float64), Y[:BLOCK].mean(axis=0, dtype=np.float64)])
    G = np.zeros((k, k), order="F")
    s = np.zeros(k)
    Z = np.empty((BLOCK, k))
    for a in range(0, n, BLOCK):
        m = min(BLOCK, n - a)
        Zb = Z[:m]
        Zb[:, :P] = X[a : a + m]
        Zb[:, P:] = Y[a : a + m]
        Zb -= shift
        s += Zb.sum(axis=0)
        G = blas.dsyrk(1.0, Zb, beta=1.0, c=G, trans=1, lower=0, overwrite_c=1)
    G = np.triu(G) + np.triu(G, 1).T
    d = s / n
    C = G - n * np.outer(d, d)
    mean = shift + d
    beta = cho_solve((cholesky(C[:P, :P]), False), C[:P, P:])
    icpt = mean[P:] - mean[:P] @ beta
    rss = np.zeros(Q)
    for a in range(0, n, BLOCK):
        r = Y[a : a + BLOCK] - (X[a : a + BLOCK].astype(np.float64) @ beta + icpt)
        rss += (r * r).sum(axis=0)
    return beta.T, icpt, rss


def reference(X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The float64 solution by a blocked Householder QR of the centered data (cached)."""
    path = os.path.join(CACHE, "b1_reference.npz")
    if os.path.exists(path):
        z = np.load(path)
        return z["coef"], z["intercept"]
    xm, ym = X.mean(axis=0, dtype=np.float64), Y.mean(axis=0, dtype=np.float64)
    R = None
    for a in range(0, N, 100_000):
        Z = np.hstack([X[a : a + 100_000] - xm, Y[a : a + 100_000] - ym])
        R = np.linalg.qr(Z if R is None else np.vstack([R, Z]), mode="r")
    beta = np.linalg.solve(R[:P, :P], R[:P, P:])
    coef, icpt = beta.T, ym - xm @ beta
    np.savez(path, coef=coef, intercept=icpt)
    return coef, icpt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3, help="timed fits of gradreg and of the plain script (median)")
    ap.add_argument("--no-sklearn", action="store_true")
    args = ap.parse_args()
    X, Y = np.load(b1_paths()[0]), np.load(b1_paths()[1])
    ref_coef, ref_icpt = reference(X, Y)
    opt = mse(ref_coef, ref_icpt, X, Y)

    import gradreg

    est = gradreg.LinearRegressor(solver="exact")
    est.fit(X[:2000], Y[:2000])  # warm-up: imports and first calls
    plain_numpy(X[:2000], Y[:2000])  # warm-up: scipy's imports
    g_times, p_times = [], []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        est.fit(X, Y)
        g_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        p_coef, p_icpt, _ = plain_numpy(X, Y)
        p_times.append(time.perf_counter() - t0)
    sk = None
    if not args.no_sklearn:
        from sklearn.linear_model import LinearRegression

        LinearRegression().fit(X[:2000], Y[:2000])
        t0 = time.perf_counter()
        LinearRegression().fit(X, Y)
        sk = time.perf_counter() - t0
    g, p = float(np.median(g_times)), float(np.median(p_times))
    coef, icpt = est.coef_, est.intercept_
    rel = np.abs(coef - ref_coef).max() / np.abs(ref_coef).max()
    rel_icpt = np.abs(icpt - ref_icpt).max() / np.abs(ref_icpt).max()
    ratio = float((mse(coef, icpt, X, Y) / opt).max())
    p_rel = np.abs(p_coef - ref_coef).max() / np.abs(ref_coef).max()
    print(f"gradreg from {os.path.dirname(gradreg.__file__)}")
    print(f"gradreg exact  {g:.3f} s (runs {' '.join(f'{t:.3f}' for t in g_times)})")
    print(f"plain numpy    {p:.3f} s (runs {' '.join(f'{t:.3f}' for t in p_times)}); coef rel err {p_rel:.1e}")
    if sk is not None:
        print(f"sklearn Linear {sk:.3f} s")
        print(f"LinearRegression / gradreg = {sk / g:.1f}x (goal >= 15)")
    print(f"plain numpy / gradreg = {p / g:.2f}x (goal > 1)")
    print(f"gradreg MSE / optimum = {ratio:.8f}; coef rel err {rel:.1e}, intercept rel err {rel_icpt:.1e} (goal 1e-9)")


if __name__ == "__main__":
    main()
