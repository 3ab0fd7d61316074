"""Meats of the covariances for errors that are not independent: cluster-robust and Newey–West.

Both take the residual pass's score rows sᵢ = wᵢ rᵢ zᵢ (z = [1, x − mean], as the HC meat does),
chunk by chunk, and merge across ranks, so that in-memory, streamed and distributed fits give the
same numbers:

- :class:`ClusterScores` sums the scores of each cluster, keyed by the group value (text or
  numbers), merging the sums of a cluster that spans chunks or ranks; the meat is Σ_g s_g s_gᵀ
  with Stata's ``vce(cluster)`` correction G/(G − 1)·(N − 1)/(N − K), and two-way clustering is
  V₁ + V₂ − V₁₂ (Cameron, Gelbach and Miller), as statsmodels computes it.
- :class:`HacScores` is Newey–West with Bartlett weights 1 − l/(L + 1) over the rows in the order
  read: each chunk carries its last L score rows into the next, and across ranks (contiguous
  shards in rank order) the cross terms at the boundaries come from each rank's first and last L
  rows, gathered.
"""

from __future__ import annotations

import numpy as np

from ..distributed import Comm

__all__ = ["DEPENDENT", "ClusterScores", "HacScores", "group_keys", "scores_for"]

DEPENDENT = ("cluster", "HAC")  # the cov_types whose meat needs more than each row on its own
CONSOLIDATE_ROWS = 1 << 16  # per-chunk cluster sums held before they are merged into one table
SEP = "\x1f"  # between the two keys of a two-way intersection


def group_keys(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct groups of a chunk's group column, as text keys, and each row's group.

    Parameters
    ----------
    values : ndarray of shape (n,)
        int64, float64 or object (str) values, none missing.

    Returns
    -------
    keys : ndarray of str, shape (n_groups,)
        Integers as ``"7"``, floats by their shortest repr (``"1.5"``), text as it is.
    inverse : ndarray of int64, shape (n,)
    """
    uniq, inverse = np.unique(values, return_inverse=True)
    return np.asarray([str(u) for u in uniq.tolist()], dtype=str), inverse.reshape(-1).astype(np.int64)


def _sum_rows(S: np.ndarray, inverse: np.ndarray, n_groups: int) -> np.ndarray:
    import torch

    out = torch.zeros((n_groups, S.shape[1]), dtype=torch.float64)
    out.index_add_(0, torch.from_numpy(inverse), torch.from_numpy(np.ascontiguousarray(S)))
    return out.numpy()


def _consolidate(keys: list[np.ndarray], sums: list[np.ndarray], width: int) -> tuple[np.ndarray, np.ndarray]:
    if not keys:
        return np.zeros(0, dtype=str), np.zeros((0, width))
    allk = np.concatenate(keys)
    uniq, inverse = np.unique(allk, return_inverse=True)
    return uniq, _sum_rows(np.concatenate(sums), inverse.reshape(-1).astype(np.int64), len(uniq))


def _gather_ragged(comm: Comm, a: np.ndarray) -> list[np.ndarray]:
    """Every rank's ``a`` (float64, any number of rows, the same trailing shape), in rank order."""
    counts = comm.counts(a.shape[0])
    top = max(counts)
    padded = np.zeros((top, *a.shape[1:]))
    padded[: a.shape[0]] = a
    return [p[:c] for p, c in zip(comm.gather(padded), counts)]


def _gather_keys(comm: Comm, keys: np.ndarray) -> list[np.ndarray]:
    raw = "\x1e".join(keys.tolist()).encode("utf-8")
    parts = _gather_ragged(comm, np.frombuffer(raw, dtype=np.uint8).astype(np.float64))
    out = []
    for p in parts:
        text = p.astype(np.uint8).tobytes().decode("utf-8")
        out.append(np.asarray(text.split("\x1e") if text else [], dtype=str))
    return out


class ClusterScores:
    """Per-cluster sums of score rows, one-way or two-way, merged over chunks and ranks.

    Parameters
    ----------
    n_ways : {1, 2}
        Group columns.
    n_targets : int
    width : int
        Columns of a score row (1 + n_features).
    """

    def __init__(self, n_ways: int, n_targets: int, width: int) -> None:
        self.n_ways, self.q, self.k = n_ways, n_targets, width
        self.ways = n_ways if n_ways == 1 else 3  # two-way: each column and their intersection
        self.keys: list[list[np.ndarray]] = [[] for _ in range(self.ways)]
        self.sums: list[list[np.ndarray]] = [[] for _ in range(self.ways)]
        self.held = 0
        self.n_groups: list[int] = []

    def add(self, S: np.ndarray, groups) -> None:
        """Take one chunk's score rows and group values.

        Parameters
        ----------
        S : ndarray of shape (n, n_targets * width)
            Row i holds target t's scores at ``[t * width:(t + 1) * width]``.
        groups : list of ndarray
            One array of n group values per group column.
        """
        if S.shape[0] == 0:
            return
        parts = [group_keys(np.asarray(g)) for g in groups]
        if self.n_ways == 2:
            (k1, i1), (k2, i2) = parts
            code = i1 * len(k2) + i2
            uniq, inverse = np.unique(code, return_inverse=True)
            keys12 = np.char.add(np.char.add(k1[uniq // len(k2)], SEP), k2[uniq % len(k2)])
            parts.append((keys12, inverse.reshape(-1).astype(np.int64)))
        for way, (keys, inverse) in enumerate(parts):
            self.keys[way].append(keys)
            self.sums[way].append(_sum_rows(S, inverse, len(keys)))
            self.held += len(keys)
        if self.held > CONSOLIDATE_ROWS:
            self._consolidate()

    def _consolidate(self) -> None:
        width = self.q * self.k
        for way in range(self.ways):
            keys, sums = _consolidate(self.keys[way], self.sums[way], width)
            self.keys[way], self.sums[way] = [keys], [sums]
        self.held = sum(len(k[0]) for k in self.keys)

    def meat(self, comm: Comm, n_rows: int, n_params: int) -> np.ndarray:
        """Σ_g s_g s_gᵀ over every rank's clusters, with Stata's small-sample correction.

        Parameters
        ----------
        comm : gradreg.distributed.Comm
        n_rows : int
            N, rows over all ranks.
        n_params : int
            K, columns of the design (the intercept included).

        Returns
        -------
        ndarray of shape (n_targets, width, width)
            For two-way clustering c₁M₁ + c₂M₂ − c₁₂M₁₂, each c = G/(G − 1)·(N − 1)/(N − K).
            ``n_groups`` then holds G of each group column.
        """
        width = self.q * self.k
        self._consolidate()
        total = np.zeros((self.q, self.k, self.k))
        self.n_groups = []
        for way in range(self.ways):
            keys, sums = self.keys[way][0], self.sums[way][0]
            if comm.world > 1:
                keys, sums = _consolidate(_gather_keys(comm, keys), _gather_ragged(comm, sums), width)
            G = len(keys)
            self.n_groups.append(G)
            s = sums.reshape(G, self.q, self.k)
            m = np.einsum("gqi,gqj->qij", s, s)
            c = G / (G - 1.0) * (n_rows - 1.0) / (n_rows - n_params) if G > 1 and n_rows > n_params else np.nan
            total += (-c if way == 2 else c) * m
        self.n_groups = self.n_groups[: self.n_ways]
        return total

    @property
    def df_inference(self) -> float:
        """G − 1 (the smaller G for two-way): the t and F tests' denominator degrees of freedom."""
        return float(min(self.n_groups) - 1)


def _lag_weights(L: int) -> np.ndarray:
    return 1.0 - np.arange(L + 1) / (L + 1.0)  # Bartlett


def _within(S: np.ndarray, L: int) -> np.ndarray:
    """Σ over lags 0..L of the weighted cross products inside one block S (n, q, k)."""
    w = _lag_weights(L)
    A = S.transpose(1, 0, 2)  # (q, n, k)
    out = A.transpose(0, 2, 1) @ A
    for lag in range(1, min(L, S.shape[0] - 1) + 1):
        g = A[:, lag:].transpose(0, 2, 1) @ A[:, :-lag]
        out += w[lag] * (g + g.transpose(0, 2, 1))
    return out


def _cross(prev: np.ndarray, new: np.ndarray, L: int) -> np.ndarray:
    """The weighted cross products of pairs (a in ``prev``, b in ``new``) at most L rows apart,
    ``prev`` ending just before ``new`` begins."""
    w = _lag_weights(L)
    q, k = new.shape[1], new.shape[2]
    out = np.zeros((q, k, k))
    m, n = prev.shape[0], new.shape[0]
    for lag in range(1, L + 1):
        j0, j1 = max(0, lag - m), min(lag, n)
        if j0 >= j1:
            continue
        A = new[j0:j1].transpose(1, 2, 0)  # (q, k, rows)
        B = prev[m - lag + j0 : m - lag + j1].transpose(1, 0, 2)  # (q, rows, k)
        g = A @ B
        out += w[lag] * (g + g.transpose(0, 2, 1))
    return out


class HacScores:
    """Newey–West (Bartlett) meat of score rows in the order read, over chunks and ranks.

    Parameters
    ----------
    maxlags : int
        L.
    n_targets : int
    width : int
        Columns of a score row (1 + n_features).
    """

    def __init__(self, maxlags: int, n_targets: int, width: int) -> None:
        self.L, self.q, self.k = maxlags, n_targets, width
        self.total = np.zeros((n_targets, width, width))
        self.head = np.zeros((0, n_targets, width))  # this rank's first L rows
        self.carry = np.zeros((0, n_targets, width))  # its last L rows so far
        self.n_groups: list[int] = []

    def add(self, S: np.ndarray, groups=None) -> None:
        """Take the next chunk's score rows.

        Parameters
        ----------
        S : ndarray of shape (n, n_targets * width)
        groups : None
            Unused (the signature of :meth:`ClusterScores.add`).
        """
        if S.shape[0] == 0:
            return
        S = S.reshape(S.shape[0], self.q, self.k)
        self.total += _within(S, self.L) + _cross(self.carry, S, self.L)
        if self.head.shape[0] < self.L:
            self.head = np.concatenate([self.head, S[: self.L - self.head.shape[0]]])
        if self.L:
            self.carry = np.concatenate([self.carry, S])[-self.L :]

    def meat(self, comm: Comm, n_rows: int, n_params: int) -> np.ndarray:
        """The Newey–West meat over every rank's rows, rank after rank.

        Parameters
        ----------
        comm : gradreg.distributed.Comm
        n_rows, n_params : int
            Unused: statsmodels' ``cov_type="HAC"`` applies no small-sample correction.

        Returns
        -------
        ndarray of shape (n_targets, width, width)
        """
        total = comm.sum(self.total)
        if comm.world > 1 and self.L:
            flat = (self.q, self.k)
            heads = _gather_ragged(comm, self.head.reshape(self.head.shape[0], -1))
            tails = _gather_ragged(comm, self.carry.reshape(self.carry.shape[0], -1))
            carry = np.zeros((0, *flat))
            for head, tail in zip(heads, tails):
                total = total + _cross(carry, head.reshape(-1, *flat), self.L)
                carry = np.concatenate([carry, tail.reshape(-1, *flat)])[-self.L :]
        return total

    @property
    def df_inference(self) -> None:
        """None: the t and F tests keep the residual degrees of freedom, as statsmodels does."""
        return None


def scores_for(cov_type: str, n_targets: int, width: int, *, n_ways: int = 1, maxlags: int | None = None):
    """The accumulator of a dependent ``cov_type`` (see :data:`DEPENDENT`), or None for the others.

    Parameters
    ----------
    cov_type : str
    n_targets : int
    width : int
        1 + n_features.
    n_ways : int
        Group columns (cluster).
    maxlags : int, optional
        L (HAC).

    Returns
    -------
    ClusterScores, HacScores or None
    """
    if cov_type == "cluster":
        return ClusterScores(n_ways, n_targets, width)
    if cov_type == "HAC":
        return HacScores(int(maxlags or 0), n_targets, width)
    return None
