"""Exact least squares: a mergeable QR factor, a stable solve, and inference statistics.

The factor of a chunk is the R of the Householder QR of its weighted, centered augmented block
``sqrt(w) * ([X, Y] - mean)``. Two factors merge exactly (a QR form of Chan's parallel variance
update): stack both R's and one row ``sqrt(sw_a sw_b / sw) (mean_a - mean_b)``, and QR again.
So in-memory data, chunks of a file larger than memory and ranks of a distributed job all take
the same path.

Two ways to build the factor, chosen by the data (see :func:`fit_exact`):

- **Gram** (first, fast): the centered co-moment matrix of each chunk at matrix-multiply speed,
  merged by Chan's update, then R by Cholesky. Its error grows like κ², so it is kept only when
  the standardized design is well conditioned (κ ≤ ``GRAM_COND_LIMIT``), and then refined once
  against the data in float64.
- **Householder QR** (otherwise): never forms XᵀX, so it keeps the digits that normal equations
  lose on ill-conditioned designs (high-degree polynomials, near-collinear columns), refined in
  extended precision when the error bound asks for it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from ..config import COV_TYPES
from ..distributed import SINGLE, Comm
from ..errors import ConfigError

__all__ = ["Factor", "ExactSolution", "fit_exact", "solve", "statistics", "residual_pass", "refine", "RankWarning"]

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
    method : {"qr", "gram"}
        How R was computed; "gram" (normal equations) when any merged part came from a Gram.
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
        method = "gram" if "gram" in (self.method, other.method) else "qr"
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
            "gram" if "gram" in (self.method, empty.method) else "qr",
        )


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
    """Fold :meth:`Factor.of_chunk` over ``(X, Y, w)`` chunks with :meth:`Factor.merge`, then every
    rank's factor in rank order (``width`` = n_features + n_targets)."""
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
    return np.concatenate([[f.n_rows, f.sum_w, f.sum_log_w, float(f.method == "gram")], f.mean, _square(f.R).ravel()])


def _factor_unflat(a: np.ndarray, k: int, fit_intercept: bool) -> Factor:
    R = a[4 + k :].reshape(k, k)
    return Factor(int(a[0]), float(a[1]), float(a[2]), a[4 : 4 + k].copy(), R, fit_intercept, "gram" if a[3] else "qr")


def gram_factor(
    chunks: Iterable[tuple], *, fit_intercept: bool = True, device=None, comm: Comm = SINGLE, width: int = 0
) -> Factor | None:
    """The factor by normal equations: a float64 Gram pass at matrix-multiply speed, then Cholesky.

    Each chunk's co-moment matrix is computed about the chunk's own (weighted) mean and merged by
    Chan's update, so large column offsets do not cancel. Returns None when the feature block is
    not numerically positive definite (constant or collinear columns): the QR path handles those.

    Parameters
    ----------
    chunks : iterable of (X, Y, w)
        X (n, n_features), Y (n, n_targets), w (n,) or None.
    fit_intercept : bool
    device : torch.device, optional
    comm : gradreg.distributed.Comm
        Merge every rank's co-moments, in rank order, before the Cholesky.
    width : int
        n_features + n_targets (a rank may have no rows).

    Returns
    -------
    Factor or None
    """
    k = width
    moments = _gram_moments(chunks, fit_intercept, device) or (0, 0.0, 0.0, np.zeros(k), np.zeros((k, k)), 0)
    moments = comm.fold(moments, _merge_moments, _moments_flat, lambda a: _moments_unflat(a, k))
    if moments[1] == 0:
        return None
    n_rows, sw, slw, mean, G, p = moments
    G = torch.as_tensor(np.asarray(G), dtype=torch.float64)
    L, info = torch.linalg.cholesky_ex(G[:p, :p])
    if int(info) != 0:
        return None
    R11 = L.T
    R12 = torch.linalg.solve_triangular(L, G[:p, p:], upper=False)
    S = G[p:, p:] - R12.T @ R12  # the residual co-moments; PSD up to rounding
    evals, evecs = torch.linalg.eigh((S + S.T) / 2)
    R22 = evals.clamp(min=0).sqrt()[:, None] * evecs.T  # any R22 with R22ᵀR22 = S serves
    R = torch.cat([torch.cat([R11, R12], 1), torch.cat([torch.zeros(R22.shape[0], p, dtype=G.dtype), R22], 1)], 0)
    return Factor(n_rows, sw, slw, np.asarray(mean, dtype=np.float64), R.numpy(), fit_intercept, "gram")


def _moments_flat(m: tuple) -> np.ndarray:
    return np.concatenate([[m[0], m[1], m[2], m[5]], m[3], np.asarray(m[4]).ravel()])


def _moments_unflat(a: np.ndarray, k: int) -> tuple:
    return int(a[0]), float(a[1]), float(a[2]), a[4 : 4 + k], a[4 + k :].reshape(k, k), int(a[3])


def _merge_moments(a: tuple, b: tuple) -> tuple:
    """Chan's update of two (n_rows, Σw, Σlog w, mean, co-moments, n_features) tuples."""
    n_a, sw_a, slw_a, mean_a, G_a, p_a = a
    n_b, sw_b, slw_b, mean_b, G_b, p_b = b
    p = max(p_a, p_b)
    if sw_b == 0:
        return (n_a + n_b, sw_a, slw_a + slw_b, mean_a, G_a, p)
    if sw_a == 0:
        return (n_a + n_b, sw_b, slw_a + slw_b, mean_b, G_b, p)
    tot = sw_a + sw_b
    d = mean_b - mean_a
    return (n_a + n_b, tot, slw_a + slw_b, mean_a + d * (sw_b / tot), G_a + G_b + (sw_a * sw_b / tot) * np.outer(d, d), p)


def _gram_moments(chunks: Iterable[tuple], fit_intercept: bool, device) -> tuple | None:
    """(n_rows, Σw, Σlog w, mean, centered weighted co-moments, n_features) of the chunks, or None
    when no row has weight."""
    G = mean = k = None
    n_rows, sw, slw, p = 0, 0.0, 0.0, 0
    buf = None
    for X, Y, w in chunks:
        Xt, Yt = _tensor(X), _tensor(Y)
        m = Xt.shape[0]
        if m == 0:
            continue
        p, k = Xt.shape[1], Xt.shape[1] + Yt.shape[1]
        if buf is None or buf.shape[0] < m:
            buf = torch.empty(m, k, dtype=torch.float64, device=device)  # reused: no allocation per chunk
        Z = buf[:m]
        Z[:, : Xt.shape[1]].copy_(Xt)
        Z[:, Xt.shape[1] :].copy_(Yt)
        if w is None:
            swc, slwc = float(m), 0.0
            mc = Z.mean(dim=0) if fit_intercept else torch.zeros(k, dtype=Z.dtype, device=Z.device)
            Z.sub_(mc)
        else:
            wt = _tensor(w).to(device=Z.device, dtype=torch.float64)
            swc = float(wt.sum())
            pos = wt > 0
            slwc = float(torch.log(wt[pos]).sum()) if bool(pos.all()) else -math.inf
            if swc == 0:
                n_rows, slw = n_rows + m, slw + slwc
                continue
            mc = (wt @ Z) / swc if fit_intercept else torch.zeros(k, dtype=Z.dtype, device=Z.device)
            Z.sub_(mc).mul_(wt.sqrt()[:, None])
        Gc = Z.T @ Z
        if G is None:
            G, mean = Gc, mc
        else:
            tot = sw + swc
            d = mc - mean
            G += Gc + (sw * swc / tot) * torch.outer(d, d)
            mean = mean + d * (swc / tot)
        n_rows, sw, slw = n_rows + m, sw + swc, slw + slwc
    if G is None:
        return None if k is None else (n_rows, 0.0, slw, np.zeros(k), np.zeros((k, k)), p)
    return n_rows, sw, slw, mean.cpu().numpy(), G.cpu().numpy(), p


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
    y_mean : ndarray of shape (n_targets,), optional
        Weighted target means (with an intercept): with ``tss``, the scale of an exact fit's rounding.
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
    y_mean: np.ndarray | None = None  # weighted target means: the scale of an exact fit's rounding

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
        g, rsum = _gradient_double(sol, factor.mean[:p], chunks, device)
        g, rsum = comm.sum(g), comm.sum(rsum)
        ld = np.float64
        coef, b0, xm = sol.coef, sol.intercept, factor.mean[:p]
        return _apply_refinement(sol, factor, g, rsum, coef, b0, xm, ld)
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


def _gradient_double(sol: ExactSolution, xm_np: np.ndarray, chunks: ChunkSource, device) -> tuple[np.ndarray, np.ndarray]:
    """Xcᵀ W r and Σ w r at the current solution, in float64 (torch, on ``device``)."""
    dd = {"device": device, "dtype": torch.float64}
    coef, b0 = torch.as_tensor(sol.coef, **dd), torch.as_tensor(sol.intercept, **dd)
    xm = torch.as_tensor(xm_np, **dd)
    g = torch.zeros(coef.shape[1], coef.shape[0], **dd)
    rsum = torch.zeros(coef.shape[0], **dd)
    block = _Float64Buffer(device)
    for X, Y, w in chunks():
        Xd = block(X)  # a copy, centered in place below: never the caller's array
        r = _tensor(Y).to(**dd) - torch.addmm(b0, Xd, coef.T)
        if w is not None:
            r *= _tensor(w).to(**dd)[:, None]
        g += Xd.sub_(xm).T @ r
        rsum += r.sum(dim=0)
    return g.cpu().numpy(), rsum.cpu().numpy()


def _apply_refinement(sol, factor, g, rsum, coef, b0, xm, ld) -> ExactSolution:
    std = sol.x_std
    p = len(std)
    Rs = _square(factor.R)[:p, :p] / std
    # Solve (Rsᵀ Rs) γ = g / std in the standardized scale, then map back.
    t = _solve_upper(Rs, (g / std[:, None]).astype(np.float64), transpose=True)
    delta = _solve_upper(Rs, t) / std[:, None]
    coef_new = (coef + delta.T).astype(np.float64)
    intercept = sol.intercept
    if sol.fit_intercept:  # the weighted residual mean must vanish: fold its drift into b
        intercept = (b0 + rsum / ld(sol.sum_w) - delta.T.astype(ld) @ xm).astype(np.float64)
    return ExactSolution(**{**sol.__dict__, "coef": coef_new, "intercept": intercept})


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
) -> tuple[np.ndarray, np.ndarray | None]:
    """A data pass: the weighted RSS from the data and, for HC covariances, the sandwich meat.

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

    Returns
    -------
    rss : ndarray of shape (n_targets,)
    meat : ndarray of shape (n_targets, 1 + n_features, 1 + n_features) or None
        Σ uᵢ² zᵢzᵢᵀ in the centered parametrization z = [1, x − mean] (intercept first), with
        the HC2/HC3 leverage corrections applied; None for ``nonrobust``.
    """
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
    if robust:
        A = np.nan_to_num(sol.cov_unscaled)  # (XcᵀWXc)⁺ on identified columns
        A_t = torch.as_tensor(A, **dd)
        power = {"HC0": 0, "HC1": 0, "HC2": 1, "HC3": 2}[cov_type]
    block = _Float64Buffer(device)
    for X, Y, w in chunks():
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
    cov_type : {"nonrobust", "HC0", "HC1", "HC2", "HC3"}
    conf_level : float
        Level of the confidence intervals, in (0, 1).
    meat : ndarray of shape (n_targets, 1 + n_features, 1 + n_features), optional
        From :func:`residual_pass`; required for the HC covariances.

    Returns
    -------
    list of dict
        One per target; the arrays have length n_features (+ 1 with an intercept).
    """
    from scipy import special as sp  # scipy.stats costs ~1 s to import; the special functions suffice

    if cov_type not in COV_TYPES:
        raise ConfigError(f"{{cov_type}} must be one of {', '.join(COV_TYPES)}; got {{cov_type=}}", cov_type=cov_type)
    if not 0 < conf_level < 1:
        raise ConfigError("{conf_level} must be between 0 and 1; got {conf_level=}", conf_level=conf_level)
    p = sol.coef.shape[1]
    q = sol.coef.shape[0]
    n = sol.n_rows
    k_const = int(sol.fit_intercept)
    df_resid = sol.df_resid
    df_model = sol.rank
    ridge = sol.l2 > 0
    nan = float("nan")
    # T maps the centered parametrization [a, β] to the reported [intercept, β] = [a − meanᵀβ, β].
    T = np.eye(p + 1)
    if sol.fit_intercept:
        T[0, 1:] = -sol.x_mean
    exact_fit = exact_fits(sol)
    out = []
    for t in range(q):
        rss, tss = float(sol.rss[t]), float(sol.tss[t])
        if exact_fit[t]:
            rss = 0.0  # statsmodels would report its rounding noise (sigma 1e-15, F 1e30) as if it were real
        sigma2 = rss / df_resid if df_resid > 0 else nan
        est = np.concatenate([[sol.intercept[t]], sol.coef[t]]) if sol.fit_intercept else sol.coef[t].copy()
        if ridge:
            cov = np.full((p + 1, p + 1), nan)
        else:
            bread = np.zeros((p + 1, p + 1))
            bread[0, 0] = 1.0 / sol.sum_w if sol.fit_intercept else 0.0
            bread[1:, 1:] = np.nan_to_num(sol.cov_unscaled)
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
        pval = 2 * sp.stdtr(df_resid, -np.abs(tval)) if df_resid > 0 else np.full_like(se, nan)
        crit = sp.stdtrit(df_resid, 0.5 + conf_level / 2) if df_resid > 0 else nan
        r2 = 1 - rss / tss if tss > 0 else nan
        r2_adj = 1 - (n - k_const) / df_resid * (1 - r2) if df_resid > 0 else nan
        if ridge or df_model == 0 or df_resid <= 0:
            f = f_p = nan
        elif exact_fit[t]:
            f, f_p = (math.inf, 0.0) if tss > 0 else (nan, nan)  # all variation explained, none left
        elif cov_type == "nonrobust":
            f = ((tss - rss) / df_model) / sigma2
            f_p = float(sp.fdtrc(df_model, df_resid, f))
        else:
            idx = np.flatnonzero(~sol.aliased) + k_const
            b = est[idx]
            sub = cov[np.ix_(idx, idx)]
            f = float(b @ np.linalg.solve(sub, b)) / len(idx)
            f_p = float(sp.fdtrc(len(idx), df_resid, f))
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
            }
        )
    return out


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
) -> tuple[ExactSolution, Factor]:
    """Exact least squares over chunks: one factor pass, a stable solve, then refinement if needed.

    Parameters
    ----------
    chunks : callable
        Returns a fresh iterator of ``(X, Y, w)`` chunks: X (n, n_features), Y (n, n_targets),
        w (n,) or None. It is called once more per refinement pass.
    n_features : int
    fit_intercept : bool
    l2 : float
        Ridge penalty in the standardized scale.
    device : torch.device, optional
        Where the chunk QRs run.
    refine_steps : int
        Refinement passes, made only when the error bound exceeds ``REFINE_ABOVE``.
    comm : gradreg.distributed.Comm
        ``chunks`` are this rank's share: the factors and sums of all ranks are merged in rank
        order, and every rank returns the same solution.
    n_targets : int
        Needed when a rank may hold no rows.

    Returns
    -------
    solution : ExactSolution
    factor : Factor
        Of all the rows; merge it with another's to add rows.
    """
    width = n_features + n_targets
    factor = gram_factor(chunks(), fit_intercept=fit_intercept, device=device, comm=comm, width=width)
    sol = solve(factor, n_features, l2=l2) if factor is not None else None
    # The Gram is kept only where QR itself would need no extended-precision refinement: a
    # well-conditioned design whose residuals are not large beside the fit (see error_bound).
    use_qr = sol is None or not (sol.condition_number <= GRAM_COND_LIMIT and error_bound(sol) <= REFINE_ABOVE)
    if comm.agree(use_qr or sol.rank < n_features):
        factor = factor_chunks(chunks(), fit_intercept=fit_intercept, device=device, comm=comm, width=width)
        sol = solve(factor, n_features, l2=l2)
    if comm.agree(error_bound(sol, factor.method) > REFINE_ABOVE):
        for _ in range(refine_steps):
            sol = refine(sol, factor, chunks, extended=factor.method == "qr", device=device, comm=comm)
    return sol, factor


REFINE_ABOVE = 1e-14  # the bound omits growth factors of ~n·p, so refine well before it reaches 1e-12
GRAM_COND_LIMIT = 1e4  # κ of the standardized design up to which the Gram path (error ~ eps·κ²) is used


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
