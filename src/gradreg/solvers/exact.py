"""Exact least squares: a mergeable QR factor, a stable solve, and inference statistics.

The factor of a chunk is the R of the Householder QR of its weighted, centered augmented block
``sqrt(w) * ([X, Y] - mean)``. Two factors merge exactly (a QR form of Chan's parallel variance
update): stack both R's and one row ``sqrt(sw_a sw_b / sw) (mean_a - mean_b)``, and QR again.
So in-memory data, chunks of a file larger than memory and ranks of a distributed job all take
the same path.

Two ways to build the factor, chosen by the data (see :func:`fit_exact`):

- **Gram** (first, fast): the centered co-moment matrix of each block at matrix-multiply speed,
  merged by Chan's update, then R by Cholesky. Its error grows like κ², so it is kept only when
  the standardized design is well conditioned (κ ≤ ``GRAM_COND_LIMIT``), and then refined against
  the data in float64. On large tables the blocks after the first ``FLOAT32_AFTER_ROWS`` rows are
  summed by a float32 product (kept for κ ≤ ``GRAM32_COND_LIMIT``), whose ~1e-8 error the float64
  refinement removes from the coefficients (mixed-precision iterative refinement).
- **Householder QR** (otherwise): never forms XᵀX, so it keeps the digits that normal equations
  lose on ill-conditioned designs (high-degree polynomials, near-collinear columns), refined in
  extended precision when the error bound asks for it.

On the Gram path the data are read twice: the first pass (:func:`first_pass`) gives the Gram, the
column peaks and the caller's fingerprint; the refinement's float64 pass also gives the RSS and
metrics (``ExactSolution.pass_sums``), so :func:`residual_pass` need not read them a third time.
Passes run block by block on worker threads with single-threaded kernels (:class:`_Pool`).
"""

from __future__ import annotations

import math
import threading
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from ..config import COV_TYPES
from ..distributed import SINGLE, Comm
from ..errors import ConfigError
from ..metrics import MetricsAccumulator

__all__ = [
    "Factor",
    "ExactSolution",
    "FirstPass",
    "first_pass",
    "fit_exact",
    "solve",
    "statistics",
    "residual_pass",
    "refine",
    "RankWarning",
]

RCOND = 1e-11  # singular values below this fraction of the largest count as collinear
# A residual norm below this fraction of the target's (uncentered) norm is rounding, not a residual:
# the fit is exact. Float64 residuals carry rounding of a few ulps of |y| and |Xβ|; NIST's Wampler1
# and Wampler2, certified exact, give 2e-21 and 8e-17; no measured data hold 12 digits beyond a fit.
EXACT_FIT_RTOL = 1e-12


@dataclass
class Factor:
    """Mergeable sufficient statistics of the weighted augmented block Z = [X, Y].

    Parameters
    ----------
    n_rows : int
        Rows seen, zero-weight rows included.
    sum_w : float
        Σ w.
    sum_log_w : float
        Σ log w, for the weighted log-likelihood.
    mean : ndarray of shape (n_features + n_targets,)
        Weighted column means of Z; zeros when there is no intercept.
    R : ndarray of shape (k, n_features + n_targets)
        With RᵀR = Σ w (z − mean)(z − mean)ᵀ; its first n_features columns are upper triangular.
    fit_intercept : bool
    method : {"qr", "gram", "gram32"}
        How R was computed: "gram" (normal equations) when any merged part came from a Gram,
        "gram32" when from a float32 Gram (RᵀR then holds ~8 digits; see :func:`fit_exact`).
    """

    n_rows: int
    sum_w: float
    sum_log_w: float
    mean: np.ndarray
    R: np.ndarray
    fit_intercept: bool
    method: str = "qr"

    @classmethod
    def of_chunk(cls, X: torch.Tensor | np.ndarray, Y, w=None, *, fit_intercept: bool = True, device=None) -> Factor:
        """The factor of one chunk of rows, computed in float64 on ``device``.

        Parameters
        ----------
        X : Tensor or ndarray of shape (n, n_features)
        Y : Tensor or ndarray of shape (n, n_targets)
        w : Tensor or ndarray of shape (n,), optional
            Sample weights.
        fit_intercept : bool
            Center the columns (by their weighted means).
        device : torch.device, optional

        Returns
        -------
        Factor
        """
        Z = torch.cat([_tensor(X), _tensor(Y)], dim=1).to(device=device, dtype=torch.float64)
        n = Z.shape[0]
        if w is None:
            sw, slw = float(n), 0.0
            mean = Z.mean(dim=0) if fit_intercept else torch.zeros(Z.shape[1], dtype=Z.dtype, device=Z.device)
            Zc = Z - mean
        else:
            wt = _tensor(w).to(device=Z.device, dtype=torch.float64)
            sw = float(wt.sum())
            pos = wt > 0
            slw = float(torch.log(wt[pos]).sum()) if bool(pos.all()) else -math.inf
            if fit_intercept:
                mean = (wt @ Z) / sw if sw > 0 else torch.zeros(Z.shape[1], dtype=Z.dtype, device=Z.device)
            else:
                mean = torch.zeros(Z.shape[1], dtype=Z.dtype, device=Z.device)
            Zc = (Z - mean) * wt.sqrt()[:, None]
        R = torch.linalg.qr(Zc, mode="r")[1] if n else Zc[:0]
        return cls(n, sw, slw, mean.cpu().numpy(), R.cpu().numpy(), fit_intercept)

    def merge(self, other: Factor) -> Factor:
        """The factor of both chunks' rows together, exactly (no Gram matrix is formed).

        Parameters
        ----------
        other : Factor

        Returns
        -------
        Factor
        """
        if other.sum_w == 0:
            return self._plus_rows(other)
        if self.sum_w == 0:
            return other._plus_rows(self)
        sw = self.sum_w + other.sum_w
        mean = (self.sum_w * self.mean + other.sum_w * other.mean) / sw
        shift = math.sqrt(self.sum_w * other.sum_w / sw) * (self.mean - other.mean)
        R = _qr_r(np.vstack([self.R, other.R, shift[None, :]]))
        method = _worse(self.method, other.method)
        return Factor(self.n_rows + other.n_rows, sw, self.sum_log_w + other.sum_log_w, mean, R, self.fit_intercept, method)

    def _plus_rows(self, empty: Factor) -> Factor:
        # Rows of zero weight change nothing but the row count (which statsmodels counts too).
        return Factor(
            self.n_rows + empty.n_rows,
            self.sum_w,
            self.sum_log_w + empty.sum_log_w,
            self.mean,
            self.R,
            self.fit_intercept,
            _worse(self.method, empty.method),
        )


METHODS = ("qr", "gram", "gram32")  # from the most accurate R to the least


def _worse(a: str, b: str) -> str:
    """The method of a merged factor: the less accurate of its parts'."""
    return max(a, b, key=METHODS.index)


def _tensor(a) -> torch.Tensor:
    """torch.as_tensor without the warning for read-only arrays (pandas' values, memory maps): the
    solvers only read them."""
    if isinstance(a, np.ndarray) and not a.flags.writeable:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            return torch.as_tensor(a)
    return torch.as_tensor(a)


class _Float64Buffer:
    """One reused float64 block: converting each chunk into it avoids allocating (and page
    faulting) a fresh chunk-sized tensor per chunk, which costs more than the arithmetic."""

    def __init__(self, device) -> None:
        self.device, self.buf = device, None

    def __call__(self, a) -> torch.Tensor:
        t = _tensor(a)
        if self.buf is None or self.buf.shape[0] < t.shape[0] or self.buf.shape[1:] != t.shape[1:]:
            self.buf = torch.empty(t.shape, dtype=torch.float64, device=self.device)
        out = self.buf[: t.shape[0]]
        out.copy_(t)
        return out


def _qr_r(A: np.ndarray) -> np.ndarray:
    return np.linalg.qr(A, mode="r")


def _square(R: np.ndarray) -> np.ndarray:
    """Pad an R with fewer rows than columns (fewer rows than features so far) with zero rows."""
    out = np.zeros((R.shape[1], R.shape[1]))
    out[: min(R.shape)] = R[: R.shape[1]]
    return out


def factor_chunks(
    chunks: Iterable[tuple], *, fit_intercept: bool = True, device=None, comm: Comm = SINGLE, width: int = 0
) -> Factor:
    """Fold :meth:`Factor.of_chunk` over ``(X, Y, w)`` chunks with :meth:`Factor.merge`; with
    ``comm``, then every rank's factor in rank order (``width`` = n_features + n_targets)."""
    total: Factor | None = None
    for X, Y, w in chunks:
        f = Factor.of_chunk(X, Y, w, fit_intercept=fit_intercept, device=device)
        total = f if total is None else total.merge(f)
    if total is None:  # no rows here (a rank's shard may hold none)
        total = Factor(0, 0.0, 0.0, np.zeros(width), np.zeros((0, width)), fit_intercept)
    total = comm.fold(total, Factor.merge, _factor_flat, lambda a: _factor_unflat(a, width, fit_intercept))
    if total.n_rows == 0:
        raise NoRowsError("no rows to fit")
    return total


class NoRowsError(ValueError):
    """No rank holds a row to fit."""


def _factor_flat(f: Factor) -> np.ndarray:
    return np.concatenate([[f.n_rows, f.sum_w, f.sum_log_w, float(METHODS.index(f.method))], f.mean, _square(f.R).ravel()])


def _factor_unflat(a: np.ndarray, k: int, fit_intercept: bool) -> Factor:
    R = a[4 + k :].reshape(k, k)
    return Factor(int(a[0]), float(a[1]), float(a[2]), a[4 : 4 + k].copy(), R, fit_intercept, METHODS[int(a[3])])


# -- the first pass: co-moments by a Gram, and each column's peak, in one read ----------------------

BLOCK_ROWS = 8_192  # rows per block of a data pass (a task of the pool)
GRAM_ROWS = 4_096  # rows per float32 product: the shifted copy (1.7 MB at 100 columns) stays in L2
# Rows summed by a float64 Gram before the blocks switch to float32. Small tables never see float32
# (where a pass costs little anyway); on large ones these rows give the shift and scale of the rest.
FLOAT32_AFTER_ROWS = 65_536
# A float32 block whose column mean lies more than 4 of its standard deviations from the block's shift
# loses more than a digit to cancellation in its co-moments: it is summed again about its own mean.
DRIFT_LIMIT = 16.0


@dataclass
class FirstPass:
    """What the first read of the data gives before any solve.

    Parameters
    ----------
    moments : tuple or None
        ``(n_rows, Σw, Σlog w, mean, co-moments, n_features, float32)``, merged over ranks: the
        weighted co-moments of [X, Y] about their mean (k × k, k = n_features + n_targets), and
        whether some of them came from a float32 Gram. None when no rank read a row.
    peak : ndarray of shape (k,)
        The largest |value| of each column of [X, Y] (over ranks; 0 for no rows).
    """

    moments: tuple | None
    peak: np.ndarray


def first_pass(
    chunks: Iterable[tuple],
    *,
    fit_intercept: bool = True,
    device=None,
    comm: Comm = SINGLE,
    width: int = 0,
    observe: Callable[[np.ndarray, np.ndarray, np.ndarray | None], None] | None = None,
    float32: bool = True,
) -> FirstPass:
    """One read of the chunks: the co-moments of [X, Y] by a blocked Gram and each column's peak.

    Each block of ``BLOCK_ROWS`` rows is read from memory once; its peaks, ``observe`` (a
    fingerprint) and its Gram follow while it is in cache. After ``FLOAT32_AFTER_ROWS`` rows, with
    ``float32``, a block's Gram is a float32 matrix product of the block less a shift (the running
    mean, rounded to a few bits, so that a float32 X minus it is exact), accumulated in float64;
    its error, ~1e-8 of the co-moments, is removed from the solution by refinement against the data
    in float64 (see :func:`fit_exact`). Blocks whose float32 Gram overflows are summed in float64.

    Parameters
    ----------
    chunks : iterable of (X, Y, w)
        X (n, n_features), Y (n, n_targets), w (n,) or None.
    fit_intercept : bool
    device : torch.device, optional
    comm : gradreg.distributed.Comm
        Merge every rank's co-moments in rank order, and their peaks.
    width : int
        n_features + n_targets (a rank may have no rows).
    observe : callable, optional
        Called with each block's (X, Y, w) as given (numpy arrays), in order.
    float32 : bool
        Allow the float32 Gram (its error needs refinement, which a ridge fit does not get).

    Returns
    -------
    FirstPass
    """
    with _Pool(device) as pool:
        acc = _Moments(fit_intercept, device, float32, pool)
        for X, Y, w in chunks:
            acc.add(X, Y, w, observe)
        moments, peak = acc.result()
    k = width
    if comm.world > 1 and moments is None:  # a rank without rows still takes part in the merge
        moments = (0, 0.0, 0.0, np.zeros(k), np.zeros((k, k)), 0, False)
    if moments is not None:
        moments = comm.fold(moments, _merge_moments, _moments_flat, lambda a: _moments_unflat(a, k))
    peak = comm.max(np.zeros(k) if peak is None else peak)
    return FirstPass(moments, peak)


def gram_factor(
    chunks: Iterable[tuple],
    *,
    fit_intercept: bool = True,
    device=None,
    comm: Comm = SINGLE,
    width: int = 0,
    float32: bool = False,
) -> Factor | None:
    """The factor by normal equations: the Gram of :func:`first_pass` (same parameters, less
    ``observe``; ``float32`` off unless asked), then Cholesky.

    Each block's co-moment matrix is computed about the block's own (weighted) mean and merged by
    Chan's update, so large column offsets do not cancel. Returns None when the feature block is
    not numerically positive definite (constant or collinear columns): the QR path handles those;
    the factor's method is "gram32" when float32 blocks went into it.
    """
    first = first_pass(chunks, fit_intercept=fit_intercept, device=device, comm=comm, width=width, float32=float32)
    return _factor_of_moments(first.moments, fit_intercept)


def _factor_of_moments(moments: tuple | None, fit_intercept: bool) -> Factor | None:
    """R by Cholesky of the feature block of the co-moments; None without weight or when it fails."""
    if moments is None or moments[1] == 0:
        return None
    with _serial_kernels(moments[5] < SERIAL_ALGEBRA_BELOW):
        return _cholesky_factor(moments, fit_intercept)


def _cholesky_factor(moments: tuple, fit_intercept: bool) -> Factor | None:
    n_rows, sw, slw, mean, G, p, low = moments
    G = torch.as_tensor(np.asarray(G), dtype=torch.float64)
    G = (G + G.T) / 2
    L, info = torch.linalg.cholesky_ex(G[:p, :p])
    if int(info) != 0:
        return None
    R11 = L.T
    R12 = torch.linalg.solve_triangular(L, G[:p, p:], upper=False)
    R22 = _psd_root(G[p:, p:] - R12.T @ R12)  # the residual co-moments; PSD up to rounding
    R = torch.cat([torch.cat([R11, R12], 1), torch.cat([torch.zeros(R22.shape[0], p, dtype=G.dtype), R22], 1)], 0)
    method = "gram32" if low else "gram"
    return Factor(n_rows, sw, slw, np.asarray(mean, dtype=np.float64), R.numpy(), fit_intercept, method)


def _psd_root(S: torch.Tensor) -> torch.Tensor:
    """Any R with RᵀR = S for a symmetric S that is positive semi-definite up to rounding."""
    evals, evecs = torch.linalg.eigh((S + S.T) / 2)
    return evals.clamp(min=0).sqrt()[:, None] * evecs.T


def _moments_flat(m: tuple) -> np.ndarray:
    return np.concatenate([[m[0], m[1], m[2], m[5], m[6]], m[3], np.asarray(m[4]).ravel()])


def _moments_unflat(a: np.ndarray, k: int) -> tuple:
    return int(a[0]), float(a[1]), float(a[2]), a[5 : 5 + k], a[5 + k :].reshape(k, k), int(a[3]), bool(a[4])


def _merge_moments(a: tuple, b: tuple) -> tuple:
    """Chan's update of two (n_rows, Σw, Σlog w, mean, co-moments, n_features, float32) tuples."""
    n_a, sw_a, slw_a, mean_a, G_a, p_a, low_a = a
    n_b, sw_b, slw_b, mean_b, G_b, p_b, low_b = b
    p, low = max(p_a, p_b), low_a or low_b
    if sw_b == 0:
        return (n_a + n_b, sw_a, slw_a + slw_b, mean_a, G_a, p, low)
    if sw_a == 0:
        return (n_a + n_b, sw_b, slw_a + slw_b, mean_b, G_b, p, low)
    tot = sw_a + sw_b
    d = mean_b - mean_a
    G = G_a + G_b + (sw_a * sw_b / tot) * np.outer(d, d)
    return (n_a + n_b, tot, slw_a + slw_b, mean_a + d * (sw_b / tot), G, p, low)


def _standardized_cond(C: np.ndarray) -> float:
    """κ of the design whose co-moments are C, each column scaled to unit norm (as solve() scales)."""
    d = np.sqrt(np.diag(C))
    if not (d > 0).all():
        return math.inf
    s = np.linalg.eigvalsh(C / np.outer(d, d))
    return math.sqrt(s[-1] / s[0]) if s[0] > 0 else math.inf


def _coarse(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """A float32 shift near ``mean`` with few significant bits (a multiple of 2^⌊log2 std⌋ / 16): a
    float32 value near the mean minus it is exact (both lie on the value's grid), so shifting adds
    no rounding (measured on B1: 3e-10 of the co-moments, against 2e-8 with an unrounded mean)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ref = np.where(std > 0, std, np.abs(mean) * 2.0**-16)
        step = np.exp2(np.floor(np.log2(np.maximum(ref, np.finfo(np.float32).tiny))) - 4)
        return np.where(ref > 0, np.round(mean / step) * step, 0.0).astype(np.float32)


@contextmanager
def _serial_kernels(on: bool = True):
    """torch's and the BLAS libraries' kernels single-threaded while open (for the whole process).

    On a 100-column problem every kernel is small: an OpenMP or BLAS thread team costs more in
    synchronization than it saves, and on a busy machine a barrier that waits for a core another
    process holds costs milliseconds per call. Passes get their parallelism from :class:`_Pool`.
    """
    global _BLAS
    if not on or _SERIAL:
        yield
        return
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController  # scikit-learn's dependency

        _BLAS = ThreadpoolController()  # finds the loaded BLAS libraries once (4 ms); limits then cost µs
    _SERIAL.append(torch.get_num_threads())
    with _BLAS.limit(limits=1, user_api="blas"):
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(_SERIAL.pop())


_SERIAL: list[int] = []  # torch's thread count before the open _serial_kernels, if one is open
_BLAS = None


def _threads() -> int:
    """torch's thread count as the caller set it (a pool's size)."""
    return _SERIAL[0] if _SERIAL else torch.get_num_threads()


def _on_cpu(device) -> bool:
    return torch.device(device if device is not None else "cpu").type == "cpu"


SERIAL_ALGEBRA_BELOW = 512  # columns up to which the dense algebra of a solve runs on one thread


class _Pool:
    """Blocks of a pass on worker threads, one per torch thread (as torch had it), each running
    its kernels single-threaded (see :func:`_serial_kernels`); inline off the CPU."""

    def __init__(self, device) -> None:
        self.n = max(1, _threads()) if _on_cpu(device) else 1
        self.lag = 2 * self.n  # blocks in flight before the oldest is merged
        self.executor = self.serial = None

    def __enter__(self) -> _Pool:
        if self.n > 1:
            self.serial = _serial_kernels()
            self.serial.__enter__()
            # each thread's own OpenMP setting: a new thread would start with one thread per core
            self.executor = ThreadPoolExecutor(self.n, "gradreg-block", torch.set_num_threads, (1,))
            # Every worker starts now, so a pass's fixed footprint (stacks, allocator arenas) is the
            # same for one block as for a million: memory limits measured on small data hold.
            started = threading.Barrier(self.n + 1)
            for _ in range(self.n):
                self.executor.submit(started.wait)
            started.wait()
        return self

    def __exit__(self, *exc) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
            self.serial.__exit__(None, None, None)

    def submit(self, fn, *args) -> Future:
        if self.executor is not None:
            return self.executor.submit(fn, *args)
        done: Future = Future()
        done.set_result(fn(*args))
        return done


def _column_peaks(a: np.ndarray) -> np.ndarray:
    """max |value| of each column, in float64."""
    rows = 16  # reduced 16 rows at a time: numpy's inner loop then runs over 16 rows' values, not one's
    if a.flags.c_contiguous and len(a) % rows == 0:
        wide = a.reshape(-1, rows * a.shape[1])
        hi, lo = wide.max(axis=0).reshape(rows, -1).max(axis=0), wide.min(axis=0).reshape(rows, -1).min(axis=0)
    else:
        hi, lo = a.max(axis=0), a.min(axis=0)
    return np.maximum(np.abs(hi), np.abs(lo)).astype(np.float64)


def _block_gram(Z: torch.Tensor) -> np.ndarray:
    """ZᵀZ in float64, by a symmetric rank-k update: numpy's (OpenBLAS syrk, ~1.5× torch's CPU
    matmul on this shape) on the CPU, else two products that skip most of the lower triangle."""
    if Z.device.type == "cpu":
        z = Z.numpy()
        with np.errstate(over="ignore", invalid="ignore"):  # a float32 overflow is caught by the caller
            return (z.T @ z).astype(np.float64)  # numpy sees the transposed pair and calls syrk
    return _gram_torch(Z)


def _gram_torch(Z: torch.Tensor) -> np.ndarray:
    h = Z.shape[1] // 2
    top = Z[:, :h].T @ Z
    G = torch.empty(Z.shape[1], Z.shape[1], dtype=Z.dtype, device=Z.device)
    G[:h] = top
    G[h:, :h] = top[:, h:].T
    G[h:, h:] = Z[:, h:].T @ Z[:, h:]
    return G.double().cpu().numpy()


class _Moments:
    """Co-moments of [X, Y] block by block, merged in order with Chan's update, and each column's
    peak. Blocks run on the pool; the shift of a float32 block is the mean of the latest merged
    block, which a fixed number of blocks in flight makes the same on every run."""

    def __init__(self, fit_intercept: bool, device, float32: bool, pool: _Pool) -> None:
        self.fit_intercept, self.device, self.float32, self.pool = fit_intercept, device, float32, pool
        self.n_rows, self.sw, self.slw, self.p, self.k = 0, 0.0, 0.0, 0, None
        self.mean = self.C = None  # float64 (k,), (k, k)
        self.peak: np.ndarray | None = None
        self.low = False  # some block went through the float32 Gram
        self.shift = self.scale = None  # float32 (k,); scale None: 1 (powers of two otherwise)
        self.submitted = 0  # rows handed to the pool
        self.pending: deque[Future] = deque()
        self.local = threading.local()  # each worker's block buffers

    def add(self, X, Y, w, observe=None) -> None:
        n = len(X)
        for a in range(0, max(n, 1), BLOCK_ROWS):
            Xb, Yb = X[a : a + BLOCK_ROWS], Y[a : a + BLOCK_ROWS]
            wb = None if w is None else w[a : a + BLOCK_ROWS]
            if observe is not None:
                observe(Xb, Yb, wb)
            if len(Xb):
                self._submit(Xb, Yb, wb)

    def _submit(self, X, Y, w) -> None:
        use32 = self.float32 and self.submitted >= FLOAT32_AFTER_ROWS
        if use32 and self.shift is None:
            self._drain()
            use32 = self._start32()
        self.submitted += len(X)
        about = None
        if use32:
            about = (torch.as_tensor(self.shift, device=self.device), self.shift)
            about += (None if self.scale is None else torch.as_tensor(self.scale, device=self.device),)
        self.pending.append(self.pool.submit(self._block, X, Y, w, about))
        while len(self.pending) > self.pool.lag:
            self._merge(self.pending.popleft().result())

    def _drain(self) -> None:
        while self.pending:
            self._merge(self.pending.popleft().result())

    def _start32(self) -> bool:
        """The shift and scale of the float32 blocks, from the rows so far; False when those rows
        say the design needs the float64 Gram (or carry no weight yet)."""
        if self.C is None or self.sw == 0 or _standardized_cond(self.C[: self.p, : self.p]) > GRAM32_COND_LIMIT:
            self.float32 = False
            return False
        std = np.sqrt(np.maximum(np.diag(self.C), 0) / self.sw)
        self.shift = _coarse(self.mean, std) if self.fit_intercept else np.zeros(self.k, dtype=np.float32)
        # Columns far from unit scale are scaled by powers of two (exactly), so that squares and sums
        # of a block stay within float32's range.
        with np.errstate(divide="ignore"):
            e = np.where(std > 0, np.round(np.log2(np.where(std > 0, std, 1.0))), 0.0)
        if (np.abs(e) > 40).any():
            self.scale = np.exp2(-e).astype(np.float32)
        return True

    def _merge(self, part: tuple) -> None:
        m, swc, slwc, peak, moments, low = part
        self.peak = peak if self.peak is None else np.maximum(self.peak, peak)
        self.n_rows, self.slw = self.n_rows + m, self.slw + slwc
        if moments is None:  # no weight in the block
            return
        mc, Gc = moments
        self.low = self.low or low
        if low and self.fit_intercept:  # the next blocks go about this one's mean: trends stay near their shift
            self.shift = _coarse(mc, np.sqrt(np.maximum(np.diag(Gc), 0) / swc))
        if self.C is None:
            self.C, self.mean = Gc, mc
        else:
            tot = self.sw + swc
            d = mc - self.mean
            self.C += Gc + (self.sw * swc / tot) * np.outer(d, d)
            self.mean = self.mean + d * (swc / tot)
        self.sw += swc

    def _block(self, X, Y, w, about) -> tuple:
        """On a worker: (rows, Σw, Σlog w, peaks, (mean, co-moments about it) or None, float32)."""
        Xt, Yt = _tensor(X), _tensor(Y)
        m = Xt.shape[0]
        self.p, self.k = Xt.shape[1], Xt.shape[1] + Yt.shape[1]
        peak = np.concatenate([_column_peaks(_numpy(X)), _column_peaks(_numpy(Y))])
        wn = None if w is None else _numpy(w).astype(np.float64, copy=False)
        if wn is None:
            swc, slwc = float(m), 0.0
        else:
            swc = float(wn.sum())
            pos = wn > 0
            slwc = float(np.log(wn).sum()) if pos.all() else -math.inf
        if swc == 0:
            return m, swc, slwc, peak, None, False
        wt = None if wn is None else torch.as_tensor(wn, device=self.device)
        part = self._gram32(Xt, Yt, wt, swc, *about) if about is not None else None
        low = part is not None
        return m, swc, slwc, peak, part if low else self._gram64(Xt, Yt, wt, swc), low

    def _gram64(self, Xt, Yt, wt, swc) -> tuple:
        """(mean, co-moments about it) of the block, in float64."""
        m, p, k = Xt.shape[0], self.p, self.k
        buf = getattr(self.local, "buf64", None)
        if buf is None or buf.shape[0] < m or buf.shape[1] != k:
            buf = self.local.buf64 = torch.empty(max(m, BLOCK_ROWS), k, dtype=torch.float64, device=self.device)
        Z = buf[:m]
        Z[:, :p].copy_(Xt)
        Z[:, p:].copy_(Yt)
        if wt is None:
            mc = Z.mean(dim=0) if self.fit_intercept else torch.zeros(k, dtype=Z.dtype, device=Z.device)
            Z.sub_(mc)
        else:
            mc = (wt @ Z) / swc if self.fit_intercept else torch.zeros(k, dtype=Z.dtype, device=Z.device)
            Z.sub_(mc).mul_(wt.sqrt()[:, None])
        return mc.cpu().numpy(), _block_gram(Z)

    def _gram32(self, Xt, Yt, wt, swc, shift_t, shift, scale_t) -> tuple | None:
        """(mean, co-moments about it) of the block by a float32 Gram about ``shift``; None when it
        overflows float32 (the block is then summed in float64)."""
        unit = np.ones(self.k) if scale_t is None else scale_t.double().cpu().numpy()
        for _ in range(2):  # a second time about the block's own mean when it drifted from the shift
            Gb, S = self._gram32_about(Xt, Yt, wt, shift_t, scale_t)
            if not np.isfinite(Gb).all():
                return None
            if not self.fit_intercept:  # uncentered co-moments: no shift, and nothing cancels
                return np.zeros(self.k), Gb / np.outer(unit, unit)
            C = (Gb - np.outer(S, S) / swc) / np.outer(unit, unit)  # unscaled; PSD up to rounding
            d = S / swc / unit  # the block's mean less the shift
            var = np.maximum(np.diag(C), 0) / swc
            s64 = shift.astype(np.float64)
            # Drifted beyond what float32 resolves of the shift itself: summed again about its mean.
            if not ((d * d > DRIFT_LIMIT * var) & (var > (2.0**-20 * s64) ** 2)).any():
                break
            shift = _coarse(s64 + d, np.sqrt(var))
            shift_t = torch.as_tensor(shift, device=self.device)
        return s64 + d, C

    def _gram32_about(self, Xt, Yt, wt, shift, scale) -> tuple[np.ndarray, np.ndarray]:
        """The float64 Gram (k × k) of the block less the shift, and its column sums (weighted)."""
        n, p, k = Xt.shape[0], self.p, self.k
        buf = getattr(self.local, "buf32", None)
        if buf is None or buf.shape[1] != k + 1:
            buf = self.local.buf32 = torch.empty(GRAM_ROWS, k + 1, dtype=torch.float32, device=self.device)
            self.local.ones = False
        G = np.zeros((k + 1, k + 1))
        for a in range(0, n, GRAM_ROWS):  # float32 sums of GRAM_ROWS rows at most, added in float64
            m = min(GRAM_ROWS, n - a)
            Z = buf[:m]
            torch.sub(Xt[a : a + m].to(self.device), shift[:p], out=Z[:, :p])  # exact for float32 X (see _coarse)
            torch.sub(Yt[a : a + m].to(self.device), shift[p:], out=Z[:, p:k])
            if scale is not None:
                Z[:, :k].mul_(scale)
            if wt is None:
                if not self.local.ones:
                    buf[:, k] = 1.0
                    self.local.ones = True
            else:
                root = wt[a : a + m].sqrt().float()
                Z[:, :k].mul_(root[:, None])
                Z[:, k] = root
                self.local.ones = False
            G += _block_gram(Z)  # its last row: Σ w (z − shift), by the column of √w (or ones)
        return G[:k, :k], G[k, :k]

    def result(self) -> tuple[tuple | None, np.ndarray | None]:
        self._drain()
        if self.C is None:
            moments = (
                None
                if self.k is None
                else (self.n_rows, 0.0, self.slw, np.zeros(self.k), np.zeros((self.k, self.k)), self.p, False)
            )
            return moments, self.peak
        return (self.n_rows, self.sw, self.slw, self.mean, (self.C + self.C.T) / 2, self.p, self.low), self.peak


@dataclass
class PassSums:
    """A data pass's sums at given coefficients, over all ranks: the weighted RSS and the train
    metrics' accumulator state (Σw, Σ w r², Σ w |r|, the targets' mean and centered Σ w (y − ȳ)²).

    Valid only for exactly ``coef`` and ``intercept`` (see :meth:`matches`).
    """

    coef: np.ndarray
    intercept: np.ndarray
    rss: np.ndarray
    metrics: tuple

    def matches(self, sol: ExactSolution) -> bool:
        return np.array_equal(self.coef, sol.coef) and np.array_equal(self.intercept, sol.intercept)


@dataclass
class ExactSolution:
    """Coefficients in original units and what the statistics need.

    Parameters
    ----------
    coef : ndarray of shape (n_targets, n_features)
    intercept : ndarray of shape (n_targets,)
    rss : ndarray of shape (n_targets,)
        Weighted residual sum of squares.
    tss : ndarray of shape (n_targets,)
        Weighted total sum of squares (centered with an intercept, else uncentered).
    rank : int
        Rank of the (centered) design.
    n_rows : int
    sum_w : float
    sum_log_w : float
    fit_intercept : bool
    l2 : float
    condition_number : float
        Of the standardized design.
    x_mean : ndarray of shape (n_features,)
    x_std : ndarray of shape (n_features,)
        Weighted population standard deviation of each feature (the standardized scale).
    aliased : ndarray of bool, shape (n_features,)
        The coefficient is not identified (collinear or constant column).
    cov_unscaled : ndarray of shape (n_features, n_features)
        (XcᵀWXc)⁺ in original units, on the identified columns.
    collinear_groups : list of list of int
    constant_columns : list of int
    pinv : ndarray of shape (n_features, n_features), optional
        (XcᵀWXc)⁺ in original units with the collinear columns kept (0 on constant columns): a
        generalized inverse, which gives the right variance of every estimable quantity (a
        prediction at a point that keeps the design's collinearity, the intercept), where
        ``cov_unscaled`` gives NaN. None for a ridge fit.
    y_mean : ndarray of shape (n_targets,), optional
        Weighted target means (with an intercept): with ``tss``, the scale of an exact fit's rounding.
    pass_sums : PassSums, optional
        What a data pass at exactly these coefficients gave (the refinement's last pass):
        :func:`residual_pass` returns it instead of reading the data again.
    """

    coef: np.ndarray
    intercept: np.ndarray
    rss: np.ndarray
    tss: np.ndarray
    rank: int
    n_rows: int
    sum_w: float
    sum_log_w: float
    fit_intercept: bool
    l2: float
    condition_number: float
    x_mean: np.ndarray
    x_std: np.ndarray
    aliased: np.ndarray
    cov_unscaled: np.ndarray
    collinear_groups: list[list[int]] = field(default_factory=list)
    constant_columns: list[int] = field(default_factory=list)
    pinv: np.ndarray | None = None  # (XcᵀWXc)⁺ with collinear columns kept: see the docstring
    y_mean: np.ndarray | None = None  # weighted target means: the scale of an exact fit's rounding
    pass_sums: PassSums | None = field(default=None, repr=False, compare=False)

    @property
    def df_resid(self) -> float:
        return self.n_rows - self.rank - int(self.fit_intercept)

    def objective(self) -> np.ndarray:
        """The objective gradient descent minimizes: weighted MSE + l2 · ‖x_std ⊙ coef‖².

        Returns
        -------
        ndarray of shape (n_targets,)
        """
        return self.rss / self.sum_w + self.l2 * ((self.coef * self.x_std[None, :]) ** 2).sum(axis=1)


def solve(factor: Factor, n_features: int, *, l2: float = 0.0, rcond: float = RCOND) -> ExactSolution:
    """Solve the (ridge) least-squares problem held by ``factor``.

    The penalty is ``l2 · Σ_j (std_j · coef_j)²`` added to the weighted mean squared error: ridge in
    the standardized scale, intercept unpenalized. Rank deficiency gives the minimum-norm solution
    in that scale, with a warning naming the collinear columns.

    Parameters
    ----------
    factor : Factor
        Of [X, Y] with n_features feature columns first.
    n_features : int
    l2 : float
        Ridge penalty (>= 0).
    rcond : float
        Singular values of the standardized design below ``rcond`` times the largest count as zero.

    Returns
    -------
    ExactSolution
        ``rss`` is the factor's own (refined later from the data by :func:`residual_pass`).
    """
    with _serial_kernels(n_features < SERIAL_ALGEBRA_BELOW):
        return _solve(factor, n_features, l2, rcond)


def _solve(factor: Factor, n_features: int, l2: float, rcond: float) -> ExactSolution:
    p = n_features
    R = _square(factor.R)
    sw = factor.sum_w
    std = np.linalg.norm(R[:p, :p], axis=0) / math.sqrt(sw)
    # A centered constant column is zero up to rounding of its mean.
    constant = (std == 0) | (std <= 1e-12 * np.abs(factor.mean[:p]))
    live = np.flatnonzero(~constant)
    if constant.any():  # drop those columns and re-triangularize: still an R of the reduced design
        R = _square(_qr_r(R[:, np.r_[live, np.arange(p, R.shape[1])]]))
    pl = len(live)
    R11, R12, R22 = R[:pl, :pl], R[:pl, pl:], R[pl:, pl:]
    # Scaled columns: Rs is the R factor of the standardized design (times sqrt(sw)).
    Rs = R11 / std[live]
    q = R12.shape[1]
    gamma = np.zeros((len(live), q))
    groups: list[list[int]] = []
    cov_s = np.zeros((len(live), len(live)))
    aliased = constant.copy()
    cond = math.inf
    rank = 0
    if len(live):
        U, s, Vt = np.linalg.svd(Rs, full_matrices=False)
        cond = float(s[0] / s[-1]) if s[-1] > 0 else math.inf
        keep = s > rcond * s[0]
        rank = int(keep.sum())
        if l2 > 0:
            # Ridge by augmentation: [Rs; sqrt(l2·sw) I] γ ≈ [R12; 0], solved through the SVD of Rs.
            d = s / (s**2 + l2 * sw)
            gamma = Vt.T @ (d[:, None] * (U.T @ R12))
        elif rank == len(live):
            gamma = _solve_upper(Rs, R12)
            Rinv = _solve_upper(Rs, np.eye(len(live)))
            cov_s = Rinv @ Rinv.T
        else:
            inv = np.where(keep, 1.0 / np.where(keep, s, 1.0), 0.0)
            gamma = Vt.T @ (inv[:, None] * (U.T @ R12))
            cov_s = (Vt.T * inv**2) @ Vt
            null = Vt[~keep]  # rows span the null space of the standardized design
            involved = np.abs(null).max(axis=0) > 1e-6
            aliased[live[involved]] = True
            groups = _collinear_groups(null, live)
    coef = np.zeros((q, p))
    coef[:, live] = (gamma / std[live][:, None]).T
    cov_unscaled = np.full((p, p), np.nan)
    if l2 == 0 and len(live):
        cov_unscaled[np.ix_(live, live)] = cov_s / np.outer(std[live], std[live])
    pinv = None if l2 > 0 else np.nan_to_num(cov_unscaled)  # a generalized inverse: constant columns 0
    cov_unscaled[aliased, :] = np.nan
    cov_unscaled[:, aliased] = np.nan
    xm, ym = factor.mean[:p], factor.mean[p:]
    intercept = ym - coef @ xm if factor.fit_intercept else np.zeros(q)
    # ‖Yc − Xc β‖² = ‖R12 − R11 β‖² + ‖R22‖² column by column (Q is orthogonal).
    rss = ((R12 - R11 @ coef[:, live].T) ** 2).sum(axis=0) + (R22**2).sum(axis=0)
    tss = (R[:, pl:] ** 2).sum(axis=0)
    return ExactSolution(
        coef=coef,
        intercept=intercept,
        rss=rss,
        tss=tss,
        rank=rank,
        n_rows=factor.n_rows,
        sum_w=sw,
        sum_log_w=factor.sum_log_w,
        fit_intercept=factor.fit_intercept,
        l2=float(l2),
        condition_number=cond,
        x_mean=xm.copy(),
        x_std=std,
        aliased=aliased,
        cov_unscaled=cov_unscaled,
        collinear_groups=groups,
        constant_columns=[int(j) for j in np.flatnonzero(constant)],
        pinv=pinv,
        y_mean=ym.copy(),
    )


def _solve_upper(R: np.ndarray, B: np.ndarray, transpose: bool = False) -> np.ndarray:
    """Solve R x = B (or Rᵀ x = B) for upper-triangular R, in float64 (LAPACK trtrs via torch)."""
    Rt = torch.from_numpy(np.ascontiguousarray(R))
    if transpose:
        return torch.linalg.solve_triangular(Rt.T, torch.from_numpy(np.ascontiguousarray(B)), upper=False).numpy()
    return torch.linalg.solve_triangular(Rt, torch.from_numpy(np.ascontiguousarray(B)), upper=True).numpy()


def _collinear_groups(null: np.ndarray, live: np.ndarray) -> list[list[int]]:
    """Connected sets of columns that take part in the same null-space directions."""
    involved = np.abs(null) > 1e-6  # (k, len(live))
    groups: list[set[int]] = []
    for row in involved:
        cols = {int(live[j]) for j in np.flatnonzero(row)}
        merged = [g for g in groups if g & cols]
        for g in merged:
            cols |= g
            groups.remove(g)
        groups.append(cols)
    return [sorted(g) for g in groups]


def warn_rank(sol: ExactSolution, feature_names: list[str]) -> list[str]:
    """Warnings for constant and collinear columns (also returned for the CLI to print)."""
    msgs = []
    if sol.constant_columns and sol.fit_intercept:
        names = ", ".join(repr(feature_names[j]) for j in sol.constant_columns)
        msgs.append(f"constant column(s) {names}: aliased with the intercept; coefficient set to 0, statistics NaN")
    elif sol.constant_columns:
        names = ", ".join(repr(feature_names[j]) for j in sol.constant_columns)
        msgs.append(f"all-zero column(s) {names}: coefficient set to 0, statistics NaN")
    k = len(feature_names) + int(sol.fit_intercept)
    if sol.n_rows < k:
        # Not a property of some columns: no data this short can identify every coefficient.
        msgs.append(
            f"underdetermined: {sol.n_rows} row(s) for {k} coefficients (fewer rows than coefficients), so many "
            "coefficient vectors fit equally well; using the minimum-norm solution (standardized scale); "
            "statistics are NaN; add rows or use fewer features (or l2 > 0 for ridge)"
        )
        return _warn(msgs)
    for g in sol.collinear_groups:
        names = ", ".join(repr(feature_names[j]) for j in g)
        msgs.append(f"collinear columns {names}: using the minimum-norm solution (standardized scale); their statistics are NaN")
    return _warn(msgs)


def _warn(msgs: list[str]) -> list[str]:
    from ..errors import warn_user

    for m in msgs:
        warn_user(m, RankWarning)
    return msgs


class RankWarning(UserWarning):
    """The design is rank deficient: constant or exactly collinear columns."""


ChunkSource = Callable[[], Iterator[tuple]]


def refine(
    sol: ExactSolution, factor: Factor, chunks: ChunkSource, *, extended: bool = True, device=None, comm: Comm = SINGLE
) -> ExactSolution:
    """One step of iterative refinement (corrected semi-normal equations) over a data pass.

    The residual r = y − ŷ and the gradient Xcᵀ W r are accumulated in extended precision
    (numpy longdouble), then δ solves RᵀR δ = Xcᵀ W r with the factor's R. A float64 residual
    would carry the very rounding that refinement is meant to remove; this is what lifts NIST
    Wampler5 from 6 to over 9 correct digits. Skipped for ridge and rank-deficient fits, where the
    SVD path is already the answer.

    Parameters
    ----------
    sol : ExactSolution
    factor : Factor
        The factor ``sol`` was solved from.
    chunks : callable
        Returns a fresh iterator of ``(X, Y, w)`` chunks: X (n, n_features), Y (n, n_targets),
        w (n,) or None.
    extended : bool
        Accumulate in numpy longdouble (the QR path, for ill-conditioned designs); False uses
        float64 on ``device`` at matrix speed, which suffices for a well-conditioned design whose
        factor came from the Gram (its error, eps·κ², is what this step removes).
    device : torch.device, optional
        Where the float64 pass runs.
    comm : gradreg.distributed.Comm
        Sum the gradient over every rank's chunks.

    Returns
    -------
    ExactSolution
        With corrected ``coef`` and ``intercept``.
    """
    p, q = sol.coef.shape[1], sol.coef.shape[0]
    if sol.l2 > 0 or sol.aliased.any():
        return sol
    if not extended:
        return _step(sol, factor, _sweep(sol, chunks, device, comm)).sol
    ld = np.longdouble
    coef, b0 = sol.coef.astype(ld), sol.intercept.astype(ld)
    xm = factor.mean[:p].astype(ld)
    g = np.zeros((p, q), dtype=ld)
    rsum = np.zeros(q, dtype=ld)
    for X, Y, w in chunks():
        Xl = _numpy(X).astype(ld)
        r = _numpy(Y).astype(ld) - (Xl @ coef.T + b0)
        if w is not None:
            r *= _numpy(w).astype(ld)[:, None]
        g += (Xl - xm).T @ r
        rsum += r.sum(axis=0)
    g, rsum = comm.sum_extended(g), comm.sum_extended(rsum)
    return _apply_refinement(sol, factor, g, rsum, coef, b0, xm, ld)


def _normal_solve(factor: Factor, std: np.ndarray, g: np.ndarray) -> np.ndarray:
    """δ with (R11ᵀR11) δ = g, solved in the standardized scale (R11: the factor's feature block)."""
    p = len(std)
    Rs = _square(factor.R)[:p, :p] / std
    t = _solve_upper(Rs, (g / std[:, None]).astype(np.float64), transpose=True)
    return _solve_upper(Rs, t) / std[:, None]


def _apply_refinement(sol, factor, g, rsum, coef, b0, xm, ld) -> ExactSolution:
    delta = _normal_solve(factor, sol.x_std, g)
    coef_new = (coef + delta.T).astype(np.float64)
    intercept = sol.intercept
    if sol.fit_intercept:  # the weighted residual mean must vanish: fold its drift into b
        intercept = (b0 + rsum / ld(sol.sum_w) - delta.T.astype(ld) @ xm).astype(np.float64)
    return ExactSolution(**{**sol.__dict__, "coef": coef_new, "intercept": intercept, "pass_sums": None})


@dataclass
class _Sweep:
    """The sums of one float64 pass at a solution's coefficients, over all ranks (r = y − ŷ)."""

    shift: np.ndarray  # (p,) the x shift of the pass (the solution's x_mean with an intercept, else 0)
    P: np.ndarray  # (p, 2q + 1): Σ w (x − shift) r, Σ w (x − shift), Σ w sign(r) (x − shift)
    tail: np.ndarray  # (2q + 1,): Σ w r, Σ w, Σ w sign(r)
    cross: np.ndarray  # (q, q): Σ w r rᵀ
    yy: np.ndarray  # (q,): Σ w y²
    metrics: MetricsAccumulator  # the targets and residuals, merged over ranks


def _sweep(sol: ExactSolution, chunks: ChunkSource, device, comm) -> _Sweep:
    """One pass over the data in float64, block by block on the pool: residuals at ``sol`` and
    what refinement, the RSS and the metrics need of them. numpy on the CPU (its BLAS runs these
    skinny products ~3× faster than torch's), torch on ``device`` otherwise."""
    q, p = sol.coef.shape
    shift = sol.x_mean if sol.fit_intercept else np.zeros(p)
    base = sol.intercept + sol.coef @ shift  # ŷ = base + (x − shift) coefᵀ
    consts = [shift, base, np.ascontiguousarray(sol.coef.T)]
    if not _on_cpu(device):
        consts = [torch.as_tensor(c, dtype=torch.float64, device=device) for c in consts]
    local = threading.local()
    sums = [np.zeros((p, 2 * q + 1)), np.zeros(2 * q + 1), np.zeros((q, q)), np.zeros(q)]
    acc = MetricsAccumulator(q)

    def merge(part):
        for total, s in zip(sums, part[:4]):
            total += s
        acc.merge(part[4])

    with _Pool(device) as pool:
        pending: deque[Future] = deque()
        for X, Y, w in chunks():
            for a in range(0, len(X), BLOCK_ROWS):
                wb = None if w is None else w[a : a + BLOCK_ROWS]
                pending.append(pool.submit(_sweep_block, X[a : a + BLOCK_ROWS], Y[a : a + BLOCK_ROWS], wb, consts, local))
                while len(pending) > pool.lag:
                    merge(pending.popleft().result())
        while pending:
            merge(pending.popleft().result())
    flat = comm.sum(np.concatenate([s.ravel() for s in sums]))
    sums = [part.reshape(s.shape) for part, s in zip(np.split(flat, np.cumsum([s.size for s in sums])[:-1]), sums)]
    acc.merge_ranks(comm)
    return _Sweep(shift, *sums, acc)


SWEEP_ROWS = 2_048  # rows per float64 step of a sweep block: its converted copy (1.6 MB at 100 columns) stays in L2


def _sweep_block(X, Y, w, consts, local) -> tuple:
    """A block's share of :func:`_sweep`'s sums (P, tail, cross, yy) and its metrics; numpy arrays
    in, numpy ops, or torch tensors (``consts`` on a device) in, torch ops."""
    shift, base, coef_t = consts
    if isinstance(shift, np.ndarray):
        xp, X, Y = np, _numpy(X), _numpy(Y).astype(np.float64)
        w = None if w is None else _numpy(w).astype(np.float64, copy=False)

        def empty(*shape):
            return np.empty(shape)
    else:
        xp, X, Y = torch, _tensor(X).to(shift.device), _tensor(Y).to(shift)
        w = None if w is None else _tensor(w).to(shift)

        def empty(*shape):
            return torch.empty(shape, dtype=shift.dtype, device=shift.device)

    n, p, q = X.shape[0], X.shape[1], coef_t.shape[1]
    if getattr(local, "x", None) is None:
        local.x, local.m = empty(SWEEP_ROWS, p), empty(SWEEP_ROWS, 2 * q + 1)  # reused: no allocation per block
    P, tail, cross, r_all = empty(2 * q + 1, p), empty(2 * q + 1), empty(q, q), empty(n, q)
    for a in range(0, n, SWEEP_ROWS):
        m = min(SWEEP_ROWS, n - a)
        Xd = xp.subtract(X[a : a + m], shift, out=local.x[:m])  # float64, converted on the way: X is never copied whole
        r = r_all[a : a + m]
        xp.subtract(Y[a : a + m], base, out=r)
        r -= Xd @ coef_t
        M = local.m[:m]
        if w is None:
            M[:, :q] = r
            M[:, q] = 1.0
            xp.sign(r, out=M[:, q + 1 :])
        else:
            ws = w[a : a + m, None]
            xp.multiply(r, ws, out=M[:, :q])
            M[:, q : q + 1] = ws
            xp.multiply(xp.sign(r), ws, out=M[:, q + 1 :])
        parts = (M.T @ Xd, M.sum(0), r.T @ M[:, :q])  # Mᵀ X runs faster than Xᵀ M for a skinny M
        if a == 0:
            P[:], tail[:], cross[:] = parts
        else:
            P += parts[0]
            tail += parts[1]
            cross += parts[2]
    if w is None:
        w = empty(n)
        w[:] = 1.0
    yy = (Y * Y).T @ w
    acc = MetricsAccumulator(q)
    acc.add(_numpy(Y), _numpy(r_all), _numpy(w))
    return _numpy(P.T), _numpy(tail), _numpy(cross), _numpy(yy), acc


@dataclass
class _Step:
    """A refinement step from a sweep at ``at``'s coefficients."""

    at: ExactSolution  # the swept solution, with the data's means, TSS, RSS and metrics (exact)
    at_cross: np.ndarray  # its Σ w r rᵀ
    sol: ExactSolution  # corrected; its RSS and metrics follow from the sweep's sums (see _step)
    cross: np.ndarray  # its Σ w r rᵀ
    rel: float  # the correction's size: max over targets of ‖δ ⊙ std‖ / max(‖coef ⊙ std‖, std of y)


STATS_EXACT_BELOW = 1e-12  # a correction that moves the RSS by less than this fraction keeps first-order statistics exact


def _step(sol: ExactSolution, factor: Factor, sw: _Sweep) -> _Step:
    """Correct ``sol`` by the sweep's gradient, and carry the sweep's sums over to the corrected
    coefficients.

    With r' = r − u, u = r̄ + (x − x̄)ᵀδ (the step's change of the fit), Σ w r' r'ᵀ = Σ w r rᵀ −
    Σw r̄ r̄ᵀ − gᵀδ − δᵀg + δᵀGδ holds exactly (g = Σ w (x − x̄) r, G the centered Gram, here RᵀR:
    its error enters only through δᵀGδ, second order). Σ w |r'| = Σ w |r| − Σ w sign(r) u except
    for rows where r changes sign, which add at most ~(|u|/|r|)² of it: the step's statistics are
    kept when the RSS moves by less than ``STATS_EXACT_BELOW`` of itself, else another sweep reads
    them from the data.
    """
    q, p = sol.coef.shape
    acc = sw.metrics
    sum_w = sw.tail[q]
    if sol.fit_intercept:
        x_mean = sw.shift + sw.P[:, q] / sum_w
        r_bar = sw.tail[:q] / sum_w
    else:
        x_mean, r_bar = np.zeros(p), np.zeros(q)
    off = x_mean - sw.shift
    g = sw.P[:, :q] - np.outer(off, sw.tail[:q])  # Σ w (x − x̄) r
    g_sign = sw.P[:, q + 1 :] - np.outer(off, sw.tail[q + 1 :])  # Σ w sign(r) (x − x̄)
    tss = acc.m2.copy() if sol.fit_intercept else sw.yy  # as solve(): centered with an intercept
    y_mean = acc.mean.copy() if sol.fit_intercept else np.zeros(q)
    rss = np.diag(sw.cross).copy()
    state = (acc.sw, rss, acc.sae.copy(), acc.mean.copy(), acc.m2.copy())
    at = ExactSolution(
        **{
            **sol.__dict__,
            "x_mean": x_mean,
            "y_mean": y_mean,
            "tss": tss,
            "rss": rss,
            "pass_sums": PassSums(sol.coef, sol.intercept, rss, state),
        }
    )
    delta = _normal_solve(factor, sol.x_std, g)  # (p, q)
    coef = sol.coef + delta.T
    intercept = sol.intercept + r_bar - delta.T @ x_mean if sol.fit_intercept else sol.intercept
    Rd = _square(factor.R)[:p, :p] @ delta
    gd = g.T @ delta
    cross = sw.cross - sum_w * np.outer(r_bar, r_bar) - gd - gd.T + Rd.T @ Rd
    rss_new = np.diag(cross).copy()
    sae = acc.sae - r_bar * sw.tail[q + 1 :] - (delta * g_sign).sum(axis=0)
    kept = bool(np.all(rss_new > 0) and np.all(np.abs(rss - rss_new) <= STATS_EXACT_BELOW * rss_new))
    state = (acc.sw, rss_new, sae, acc.mean.copy(), acc.m2.copy())
    new = ExactSolution(
        **{
            **at.__dict__,
            "coef": coef,
            "intercept": intercept,
            "rss": rss_new,
            "pass_sums": PassSums(coef, intercept, rss_new, state) if kept else None,
        }
    )
    scale = np.maximum(np.linalg.norm(sol.coef * sol.x_std, axis=1), np.sqrt(np.maximum(tss, 0) / sum_w))
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(scale > 0, np.linalg.norm(delta.T * sol.x_std, axis=1) / scale, 0.0)
    return _Step(at, sw.cross, new, cross, float(np.max(rel, initial=0.0)))


MAX_SWEEPS = 4  # refinement passes of the Gram path; within GRAM32_COND_LIMIT a float32 Gram needs one
ROUNDING = 4 * np.finfo(np.float64).eps  # a correction this small (relative) is rounding, not error


def _refine_sweeps(sol: ExactSolution, factor: Factor, chunks: ChunkSource, device, comm) -> tuple[ExactSolution, Factor]:
    """Refine a Gram solution against the data in float64 until the next correction would be
    rounding; the last pass's sums stand in for the residual pass (``pass_sums``).

    Each pass at b gives δ ≈ the error of b; b + δ is left with about ρ‖δ‖, ρ the contraction per
    pass: ‖(RᵀR)⁻¹E‖ for E the Gram's error, at most ~ε·κ² (ε = GRAM32_EPS for a float32 Gram,
    eps for a float64 one) and at least ‖δ‖/‖coef‖ on the first pass (the same E made b's error),
    the ratio of successive corrections after. Stop when δ is rounding (keep b: its sums are exact)
    or b + δ is predicted to be within the float64 solve's own error bound (take it, its sums
    carried over by :func:`_step` when that is exact).
    """
    tol = max(REFINE_ABOVE, 4 * error_bound(sol))
    eps = GRAM32_EPS if factor.method == "gram32" else np.finfo(np.float64).eps
    prev = None
    for i in range(MAX_SWEEPS + 1):
        step = _step(sol, factor, _sweep(sol, chunks, device, comm))
        rho = max(eps * sol.condition_number**2, step.rel if prev is None else step.rel / prev)
        prev = step.rel
        if comm.agree((step.rel <= ROUNDING or rho * step.rel <= tol) and step.sol.pass_sums is not None):
            sol, cross = step.sol, step.cross  # b + δ, as accurate as a float64 solve gets, its sums carried over
            break
        if comm.agree(step.rel <= ROUNDING or i == MAX_SWEEPS):
            sol, cross = step.at, step.at_cross  # δ is rounding, the sums would not carry over: b, its sums exact
            break
        sol, cross = step.sol, step.cross
    if factor.method == "gram32":
        factor = _consistent(factor, sol, cross)
    return sol, factor


def _consistent(factor: Factor, sol: ExactSolution, cross: np.ndarray) -> Factor:
    """The factor rebuilt around the refined solution: R12 = R11 coefᵀ and R22ᵀR22 = Σ w r rᵀ, so that
    solving it (after merging more rows, say) starts from float64 coefficients and residuals, not
    from the float32 Gram's; R11 keeps the Gram's ~8 digits."""
    p = sol.coef.shape[1]
    R = _square(factor.R)
    R11 = R[:p, :p]
    R22 = _psd_root(torch.as_tensor(cross)).numpy()
    top = np.hstack([R11, R11 @ sol.coef.T])
    bottom = np.hstack([np.zeros((R22.shape[0], p)), R22])
    mean = np.concatenate([sol.x_mean, sol.y_mean]) if factor.fit_intercept else factor.mean
    return Factor(
        factor.n_rows, factor.sum_w, factor.sum_log_w, mean, np.vstack([top, bottom]), factor.fit_intercept, factor.method
    )


def _numpy(a) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def residual_pass(
    sol: ExactSolution,
    chunks: ChunkSource,
    cov_type: str,
    *,
    device=None,
    metrics=None,
    reference: ExactSolution | None = None,
    comm: Comm = SINGLE,
    scores=None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """A data pass: the weighted RSS from the data and, for HC covariances, the sandwich meat.

    When ``sol`` carries the sums of a pass at exactly its coefficients (``pass_sums``: the
    refinement's last pass), a nonrobust call returns them without reading the data.

    Parameters
    ----------
    sol : ExactSolution
    chunks : callable
        Returns a fresh iterator of ``(X, Y, w)`` chunks: X (n, n_features), Y (n, n_targets),
        w (n,) or None.
    cov_type : {"nonrobust", "HC0", "HC1", "HC2", "HC3"}
    device : torch.device, optional
    metrics : gradreg.metrics.MetricsAccumulator, optional
        Given, it also receives every chunk's targets and residuals.
    reference : ExactSolution, optional
        Another solution (the optimum, beside a gradient-descent fit) whose weighted RSS is
        computed in the same pass and stored in its ``rss``.
    comm : gradreg.distributed.Comm
        Sum over every rank's chunks (and merge ``metrics`` in rank order).
    scores : ClusterScores or HacScores, optional
        For ``cov_type`` "cluster" or "HAC" (see :mod:`gradreg.solvers.dependence`): it takes
        every chunk's score rows wᵢ rᵢ zᵢ (and, for clusters, the chunk's group values, the
        fourth item of each chunk) and gives the meat.

    Returns
    -------
    rss : ndarray of shape (n_targets,)
    meat : ndarray of shape (n_targets, 1 + n_features, 1 + n_features) or None
        Σ uᵢ² zᵢzᵢᵀ in the centered parametrization z = [1, x − mean] (intercept first), with
        the HC2/HC3 leverage corrections applied; the cluster or Newey–West meat of ``scores``
        (cluster: with its small-sample correction); None for ``nonrobust``.
    """
    known = sol.pass_sums
    if known is not None and cov_type == "nonrobust" and reference is None and known.matches(sol):
        if metrics is not None:  # the refinement's last pass, over all ranks already
            done = MetricsAccumulator(len(known.rss))
            done.sw, done.sse, done.sae, done.mean, done.m2 = known.metrics
            metrics.merge(done)
        return known.rss.copy(), None
    p = sol.coef.shape[1]
    q = sol.coef.shape[0]
    dd = {"device": device, "dtype": torch.float64}
    coef = torch.as_tensor(sol.coef, **dd)
    b0 = torch.as_tensor(sol.intercept, **dd)
    xm = torch.as_tensor(sol.x_mean if sol.fit_intercept else np.zeros(p), **dd)
    rss = torch.zeros(q, **dd)
    if reference is not None:
        ref_coef = torch.as_tensor(reference.coef, **dd)
        ref_b0 = torch.as_tensor(reference.intercept, **dd)
        ref_rss = torch.zeros(q, **dd)
    robust = cov_type != "nonrobust"
    k = p + 1
    meat = torch.zeros(q, k, k, **dd) if robust else None
    if cov_type in ("cluster", "HAC") and scores is None:
        raise ValueError(f"cov_type={cov_type!r} needs the residual pass's scores accumulator")
    dependent = scores is not None and cov_type in ("cluster", "HAC")
    if robust and not dependent:
        A = _g_inverse(sol)  # leverages are the same for every generalized inverse
        A_t = torch.as_tensor(A, **dd)
        power = {"HC0": 0, "HC1": 0, "HC2": 1, "HC3": 2}[cov_type]
    block = _Float64Buffer(device)
    for X, Y, w, *extra in chunks():
        Xd = block(X)
        Yd = _tensor(Y).to(**dd)
        r = Yd - torch.addmm(b0, Xd, coef.T)
        wt = torch.ones(Xd.shape[0], **dd) if w is None else _tensor(w).to(**dd)
        rss += (r * r).sum(dim=0) if w is None else (wt[:, None] * r * r).sum(dim=0)
        if reference is not None:
            r_ref = Yd - torch.addmm(ref_b0, Xd, ref_coef.T)
            ref_rss += (r_ref * r_ref).sum(dim=0) if w is None else (wt[:, None] * r_ref * r_ref).sum(dim=0)
        if metrics is not None:
            metrics.add(Yd.cpu().numpy(), r.cpu().numpy(), None if w is None else wt.cpu().numpy())
        if robust:
            Xc = Xd - xm
            U = torch.cat(
                [torch.ones(Xd.shape[0], 1, **dd) if sol.fit_intercept else torch.zeros(Xd.shape[0], 1, **dd), Xc], dim=1
            )
            if dependent:  # score rows wᵢ rᵢ zᵢ, target after target
                S = (U[:, None, :] * (wt[:, None] * r)[:, :, None]).reshape(U.shape[0], -1)
                scores.add(S.cpu().numpy(), extra[0] if extra else None)
                continue
            lev = wt * (((Xc @ A_t) * Xc).sum(dim=1) + (1.0 / sol.sum_w if sol.fit_intercept else 0.0))
            scale = (wt[:, None] * r) ** 2  # (n, q): w² r²
            if power:
                scale = scale / (1.0 - lev)[:, None] ** power
            for t in range(q):
                meat[t] += U.T @ (U * scale[:, t : t + 1])
    rss_np = rss.cpu().numpy()
    meat_np = None if meat is None else meat.cpu().numpy()
    ref_np = None if reference is None else ref_rss.cpu().numpy()
    rss_np = comm.sum(rss_np)
    if dependent:
        meat_np = scores.meat(comm, sol.n_rows, p + int(sol.fit_intercept))  # n_rows: of every rank
    else:
        meat_np = None if meat_np is None else comm.sum(meat_np)
    ref_np = None if ref_np is None else comm.sum(ref_np)
    if metrics is not None:
        metrics.merge_ranks(comm)
    if reference is not None:
        reference.rss = ref_np
    return rss_np, meat_np


def statistics(
    sol: ExactSolution,
    *,
    cov_type: str = "nonrobust",
    conf_level: float = 0.95,
    meat: np.ndarray | None = None,
    df_inference: float | None = None,
    cov_detail: str | None = None,
    centered_tss: np.ndarray | None = None,
) -> list[dict]:
    """Inference statistics per target, in statsmodels' conventions (OLS/WLS, t distribution).

    Each dict has arrays over [intercept, features...] (intercept omitted without one): ``coef``,
    ``std_err``, ``t``, ``p``, ``ci_low``, ``ci_high``; and scalars ``r2``, ``r2_adj``, ``f``,
    ``f_p``, ``df_resid``, ``df_model``, ``sigma`` (residual standard error), ``llf``, ``aic``,
    ``bic``, ``nobs``. Robust (HC*) covariances use the t distribution like Stata and
    statsmodels' ``use_t=True``; the F statistic then is the robust Wald test.

    An exact fit (residuals at rounding level, see :func:`exact_fits`) has RSS 0: ``sigma`` and
    every ``std_err`` are 0, the intervals collapse onto the estimates, ``t`` is ±inf (NaN for a
    coefficient of exactly 0) with ``p`` 0, ``f`` is inf with ``f_p`` 0, ``llf`` is +inf and
    ``aic``/``bic`` are −inf, for every ``cov_type``; R² is 1 (NaN for a constant target).

    Parameters
    ----------
    sol : ExactSolution
        With ``rss`` from the data (:func:`residual_pass`).
    cov_type : {"nonrobust", "HC0", "HC1", "HC2", "HC3", "cluster", "HAC"}
    conf_level : float
        Level of the confidence intervals, in (0, 1).
    meat : ndarray of shape (n_targets, 1 + n_features, 1 + n_features), optional
        From :func:`residual_pass`; required for the robust covariances (cluster: already
        corrected for small samples).
    df_inference : float, optional
        Denominator degrees of freedom of the t and F tests when not ``df_resid``: G − 1 for
        clusters, as Stata and statsmodels (``df_resid_inference``) use. Stored as
        ``df_inference``.
    cov_detail : str, optional
        The covariance in words, stored as ``cov_detail`` (``"cluster (firm, 10 groups)"``).
    centered_tss : ndarray of shape (n_targets,), optional
        Without an intercept but with a constant in the features' span (every level of a
        categorical column, ``- 1``): each target's weighted sum of squares about its mean.
        R², adjusted R², the F test and ``df_model`` are then those of a model with a constant,
        as statsmodels computes them for an implicit constant (its robust F is NaN then).

    Returns
    -------
    list of dict
        One per target; the arrays have length n_features (+ 1 with an intercept).
    """
    if cov_type not in COV_TYPES:  # before sol is read: the arguments are checked first
        raise ConfigError(f"{{cov_type}} must be one of {', '.join(COV_TYPES)}; got {{cov_type=}}", cov_type=cov_type)
    if not 0 < conf_level < 1:
        raise ConfigError("{conf_level} must be between 0 and 1; got {conf_level=}", conf_level=conf_level)
    with _serial_kernels(sol.coef.shape[1] < SERIAL_ALGEBRA_BELOW):
        out = _statistics(sol, cov_type, conf_level, meat, df_inference, centered_tss)
    for s in out:
        if df_inference is not None:
            s["df_inference"] = float(df_inference)
        if cov_detail is not None:
            s["cov_detail"] = cov_detail
    return out


def _statistics(
    sol: ExactSolution,
    cov_type: str,
    conf_level: float,
    meat: np.ndarray | None,
    df_inference: float | None = None,
    centered_tss: np.ndarray | None = None,
) -> list[dict]:
    from scipy import special as sp  # scipy.stats costs ~1 s to import; the special functions suffice

    p = sol.coef.shape[1]
    q = sol.coef.shape[0]
    n = sol.n_rows
    implicit = centered_tss is not None and not sol.fit_intercept  # a constant among the features
    k_const = int(sol.fit_intercept or implicit)
    df_resid = sol.df_resid
    df_test = df_resid if df_inference is None else df_inference  # t and F denominators
    df_model = sol.rank - int(implicit)
    ridge = sol.l2 > 0
    nan = float("nan")
    # T maps the centered parametrization [a, β] to the reported [intercept, β] = [a − meanᵀβ, β].
    T = np.eye(p + 1)
    if sol.fit_intercept:
        T[0, 1:] = -sol.x_mean
    exact_fit = exact_fits(sol)
    out = []
    for t in range(q):
        rss, tss = float(sol.rss[t]), float(sol.tss[t] if not implicit else centered_tss[t])
        f_note = None
        if exact_fit[t]:
            rss = 0.0  # statsmodels would report its rounding noise (sigma 1e-15, F 1e30) as if it were real
        sigma2 = rss / df_resid if df_resid > 0 else nan
        est = np.concatenate([[sol.intercept[t]], sol.coef[t]]) if sol.fit_intercept else sol.coef[t].copy()
        if ridge:
            cov = np.full((p + 1, p + 1), nan)
            cov_c = None  # a penalized fit has no covariance: no intervals either
        else:
            bread = np.zeros((p + 1, p + 1))
            bread[0, 0] = 1.0 / sol.sum_w if sol.fit_intercept else 0.0
            bread[1:, 1:] = _g_inverse(sol)  # the intercept and predictions are estimable
            if cov_type == "nonrobust" or exact_fit[t]:  # an exact fit's robust meat is rounding too
                cov_c = sigma2 * bread
            else:
                if meat is None:
                    raise ValueError("robust covariance needs the residual pass's meat")
                cov_c = bread @ meat[t] @ bread
                if cov_type == "HC1":
                    cov_c = cov_c * n / df_resid
            cov = T @ cov_c @ T.T
            bad = np.concatenate([[False], sol.aliased])
            cov[bad, :] = nan
            cov[:, bad] = nan
        if not sol.fit_intercept:
            cov = cov[1:, 1:]
        se = np.sqrt(np.diag(cov))
        with np.errstate(divide="ignore", invalid="ignore"):
            tval = est / se  # an exact fit: ±inf (NaN for a coefficient of exactly 0)
        pval = 2 * sp.stdtr(df_test, -np.abs(tval)) if df_test > 0 else np.full_like(se, nan)
        crit = sp.stdtrit(df_test, 0.5 + conf_level / 2) if df_test > 0 else nan
        r2 = 1 - rss / tss if tss > 0 else nan
        r2_adj = 1 - (n - k_const) / df_resid * (1 - r2) if df_resid > 0 else nan
        if ridge or df_model == 0 or df_resid <= 0:
            f = f_p = nan
        elif exact_fit[t]:
            f, f_p = (math.inf, 0.0) if tss > 0 else (nan, nan)  # all variation explained, none left
        elif cov_type == "nonrobust":
            f = ((tss - rss) / df_model) / sigma2
            f_p = float(sp.fdtrc(df_model, df_resid, f))
        elif implicit:  # statsmodels: no robust Wald test of "all slopes" when the constant is implicit
            f = f_p = nan
        else:
            idx = np.flatnonzero(~sol.aliased) + int(sol.fit_intercept)
            b = est[idx]
            sub = cov[np.ix_(idx, idx)]
            # the robust Wald test as statsmodels makes it: a clustered covariance has rank at most
            # G - 1, below the number of slopes when there are few clusters (dummies per firm), so a
            # pseudo-inverse and the covariance's rank as the numerator df
            d = np.sqrt(np.diag(sub))
            with np.errstate(divide="ignore", invalid="ignore"):
                corr = sub / np.outer(d, d)  # the rank of the correlations: not of the columns' units
            rank = int(np.linalg.matrix_rank(corr, hermitian=True)) if np.isfinite(corr).all() else 0
            if rank < len(idx):
                # a clustered covariance has rank at most G - 1: with fewer clusters than slopes
                # (dummies per firm) it cannot test them all. Stata reports no F then; statsmodels
                # warns and divides by what is left, a number that moves by orders of magnitude with
                # the last digits of the coefficients (gradient descent's, or another BLAS's)
                f = f_p = nan
                f_note = f"not defined: the {cov_type} covariance has rank {rank} for {len(idx)} slopes (as Stata reports it)"
            else:
                f = float(b @ np.linalg.solve(sub, b)) / rank
                f_p = float(sp.fdtrc(rank, df_test, f)) if df_test > 0 else nan
        if rss > 0:
            llf = -n / 2 * (math.log(2 * math.pi) + math.log(rss / n) + 1) + sol.sum_log_w / 2
        else:
            llf = math.inf if exact_fit[t] else nan  # the likelihood of a zero-variance fit is unbounded
        n_params = df_model + k_const
        out.append(
            {
                "coef": est,
                "std_err": se,
                "t": tval,
                "p": pval,
                "ci_low": est - crit * se,
                "ci_high": est + crit * se,
                "r2": r2,
                "r2_adj": r2_adj,
                "f": float(f),
                "f_p": float(f_p),
                "df_resid": float(df_resid),
                "df_model": float(df_model),
                "sigma": math.sqrt(sigma2) if sigma2 == sigma2 else nan,
                "llf": llf,
                "aic": -2 * llf + 2 * n_params,
                "bic": -2 * llf + math.log(n) * n_params,
                "nobs": float(n),
                "cov_type": cov_type,
                "conf_level": conf_level,
                **({"f_note": f_note} if f_note else {}),
                # for prediction intervals (FittedModel moves them out of the dict): see _centered
                **_centered(sol, cov_c),
            }
        )
    return out


def _g_inverse(sol: ExactSolution) -> np.ndarray:
    """(XcᵀWXc)⁺ with the collinear columns kept (:attr:`ExactSolution.pinv`); 0 where undefined."""
    return sol.pinv if sol.pinv is not None else np.nan_to_num(sol.cov_unscaled)


def _centered(sol: ExactSolution, cov_c: np.ndarray | None) -> dict:
    """The covariance of the estimates in the centered parametrization [a, β] (ŷ = a + (x − center)ᵀβ),
    as the statistics computed it, and the center; the intercept's row and column are dropped
    without one.

    Centered, the variance of a prediction is zᵀ C z with z = [1, x − center]: no cancellation
    between the intercept's variance and the slopes' on ill-conditioned (polynomial) designs. With
    collinear columns C is built on a generalized inverse: zᵀ C z is the variance of every
    estimable prediction (x that keeps the design's collinearity), as statsmodels' pinv gives it;
    constant columns have rows and columns of 0."""
    if cov_c is None:
        return {"cov_centered": None, "cov_center": None}
    c = cov_c.copy()
    k0 = 0 if sol.fit_intercept else 1
    center = sol.x_mean.copy() if sol.fit_intercept else np.zeros(sol.coef.shape[1])
    return {"cov_centered": c[k0:, k0:], "cov_center": center}


def exact_fits(sol: ExactSolution) -> np.ndarray:
    """Per target: is the fit exact, its residuals only rounding (``EXACT_FIT_RTOL``)?

    Measured against the target's uncentered norm, which sets the size of the residuals' rounding.

    Parameters
    ----------
    sol : ExactSolution

    Returns
    -------
    ndarray of bool, shape (n_targets,)
    """
    scale = np.asarray(sol.tss, dtype=np.float64)  # uncentered without an intercept
    if sol.y_mean is not None and sol.fit_intercept:
        scale = scale + sol.sum_w * np.asarray(sol.y_mean) ** 2
    return np.asarray(sol.rss) <= EXACT_FIT_RTOL**2 * scale


def fit_exact(
    chunks: ChunkSource,
    n_features: int,
    *,
    fit_intercept: bool = True,
    l2: float = 0.0,
    device=None,
    refine_steps: int = 1,
    comm: Comm = SINGLE,
    n_targets: int = 0,
    first: FirstPass | None = None,
) -> tuple[ExactSolution, Factor]:
    """Exact least squares over chunks: one factor pass, a stable solve, then refinement if needed.

    The first pass sums the Gram (float32 blocks on large tables, see :func:`first_pass`). A
    float32 Gram is kept for a full-rank design with κ ≤ ``GRAM32_COND_LIMIT``; a float64 Gram
    for κ ≤ ``GRAM_COND_LIMIT``, in both cases only where QR itself would need no
    extended-precision refinement. Gram solutions are then refined against the data in float64
    (:func:`_refine_sweeps`; ridge and rank-deficient ones excepted), whose last pass also gives
    the RSS and metrics. Otherwise the factor comes from Householder QR, refined in extended
    precision when its error bound asks for it.

    Parameters
    ----------
    chunks : callable
        Returns a fresh iterator of ``(X, Y, w)`` chunks: X (n, n_features), Y (n, n_targets),
        w (n,) or None. It is called once more per pass.
    n_features : int
    fit_intercept : bool
    l2 : float
        Ridge penalty in the standardized scale.
    device : torch.device, optional
        Where the chunk QRs run.
    refine_steps : int
        Extended-precision refinement passes of the QR path, made only when the error bound
        exceeds ``REFINE_ABOVE``.
    comm : gradreg.distributed.Comm
        ``chunks`` are this rank's share: the factors and sums of all ranks are merged in rank
        order, and every rank returns the same solution.
    n_targets : int
        Needed when a rank may hold no rows.
    first : FirstPass, optional
        The first pass, already made (:func:`first_pass`, with the same chunks and settings).

    Returns
    -------
    solution : ExactSolution
    factor : Factor
        Of all the rows; merge it with another's to add rows.
    """
    width = n_features + n_targets
    if first is None:
        first = first_pass(chunks(), fit_intercept=fit_intercept, device=device, comm=comm, width=width, float32=l2 == 0)
    factor = _factor_of_moments(first.moments, fit_intercept)
    sol = solve(factor, n_features, l2=l2) if factor is not None else None
    if factor is not None and factor.method == "gram32" and comm.agree(not _float32_suffices(sol, n_features)):
        # The design needs more than a float32 Gram's digits: sum it again in float64.
        factor = gram_factor(chunks(), fit_intercept=fit_intercept, device=device, comm=comm, width=width)
        sol = solve(factor, n_features, l2=l2) if factor is not None else None
    # The Gram is kept only where QR itself would need no extended-precision refinement: a
    # well-conditioned design whose residuals are not large beside the fit (see error_bound).
    use_qr = sol is None or not (sol.condition_number <= GRAM_COND_LIMIT and error_bound(sol) <= REFINE_ABOVE)
    if comm.agree(use_qr or sol.rank < n_features):
        factor = factor_chunks(chunks(), fit_intercept=fit_intercept, device=device, comm=comm, width=width)
        sol = solve(factor, n_features, l2=l2)
    if factor.method == "qr":
        if comm.agree(error_bound(sol) > REFINE_ABOVE):
            for _ in range(refine_steps):
                sol = refine(sol, factor, chunks, extended=True, device=device, comm=comm)
    elif sol.l2 == 0 and not sol.aliased.any():
        # Always: the pass that refines is also the residual pass (it corrects the intercept, too,
        # from the residuals' mean: NIST Norris' from 12.3 to 14.1 digits).
        with _serial_kernels(n_features < SERIAL_ALGEBRA_BELOW):  # the passes have their pool
            sol, factor = _refine_sweeps(sol, factor, chunks, device, comm)
    return sol, factor


def _float32_suffices(sol: ExactSolution | None, n_features: int) -> bool:
    """A float32 Gram's solution refines to float64 accuracy, and its statistics keep 6 digits."""
    return (
        sol is not None
        and sol.l2 == 0
        and sol.rank == n_features
        and not sol.aliased.any()
        and sol.condition_number <= GRAM32_COND_LIMIT
        and error_bound(sol) <= REFINE_ABOVE
    )


REFINE_ABOVE = 1e-14  # the bound omits growth factors of ~n·p, so refine well before it reaches 1e-12
GRAM_COND_LIMIT = 1e4  # κ of the standardized design up to which the Gram path (error ~ eps·κ²) is used
# A float32 Gram holds the standardized co-moments to about GRAM32_EPS (measured: ≤ 2.4e-8 on B1's
# 4k-row products, most entries ~1e-9). Refinement removes that error from the coefficients, by a
# factor ρ ≈ ε·κ² per pass; the statistics (standard errors from (XᵀX)⁻¹) keep it, amplified to ~ε·κ².
# κ ≤ 5.7 holds that to 1e-6 (6 digits of every standard error, far below their sampling error on
# tables this large) and ρ to 1e-6: one pass takes the solution to float64 accuracy.
GRAM32_EPS = 3e-8
GRAM32_COND_LIMIT = 5.7


def error_bound(sol: ExactSolution, method: str = "qr") -> float:
    """First-order relative error bound of a QR least-squares solve: eps·κ·(1 + κ·tan θ).

    For a factor from the Gram (normal equations) it is eps·κ² whatever the residual.

    κ is the condition number of the standardized design and tan θ = ‖r‖ / ‖ŷ − ȳ‖ (worst
    target). Large residuals on a moderately conditioned design (NIST Wampler5) need refinement
    as much as a huge κ does (Filip); most real data need none.
    """
    fitted = np.maximum(sol.tss - sol.rss, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        tan = np.where(fitted > 0, np.sqrt(np.maximum(sol.rss, 0) / fitted), np.inf)
    kappa = sol.condition_number
    eps = np.finfo(np.float64).eps
    if method == "gram":
        return float(eps * kappa * kappa)
    return float(eps * kappa * (1 + kappa * np.max(tan, initial=0.0)))
