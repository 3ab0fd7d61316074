"""How a source's rows divide into training and validation rows, as :func:`gradreg.pipeline.train`
reads them: the :class:`Split` every source returns from its ``split`` method."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from ..distributed import SINGLE, Comm
from ..errors import DataError

__all__ = ["Split", "split_arrays", "CHUNK_ROWS"]

CHUNK_ROWS = 65_536  # rows per view of in-memory data: the solvers' passes work in cache-sized float64 blocks


@dataclass
class Split:
    """A source's rows for one fit, as :func:`train` reads them.

    Parameters
    ----------
    chunks : callable
        Returns a fresh iterator of this rank's training chunks ``(X, Y, w)`` (w may be None).
    epoch_chunks : callable
        ``epoch_chunks(epoch)``: the same rows in that epoch's order (files and row groups shuffled).
    val_chunks : callable or None
        Returns a fresh iterator of this rank's validation chunks; None without a validation split.
    n_val : callable
        This rank's validation rows (known once ``chunks()`` has been read through).
    resident : tuple or None
        ``(X, Y, w, X_val, Y_val, w_val, offset)`` when the rows are held in memory (offset:
        training rows on lower ranks); gradient descent then keeps them as tensors instead of
        reading the chunks again every epoch.
    streamed : bool
        Whether the rows are read from files chunk by chunk (recorded in the model's info).
    grouped_chunks : callable or None
        Like ``chunks``, each chunk with a fourth item: the list of its group columns' values (for
        the cluster-robust covariance); None when the source has no group columns.
    """

    chunks: Callable[[], Iterator[tuple]]
    epoch_chunks: Callable[[int], Iterator[tuple]]
    val_chunks: Callable[[], Iterator[tuple]] | None
    n_val: Callable[[], int]
    resident: tuple | None = None
    streamed: bool = False
    grouped_chunks: Callable[[], Iterator[tuple]] | None = None


def split_arrays(ds, val_fraction: float, seed: int, comm: Comm = SINGLE) -> Split:
    """The :class:`Split` of rows held in memory (a :class:`~gradreg.io.Dataset`; on several
    ranks, this rank's contiguous share of the rows, in rank order).

    The validation rows are a seeded random choice among all rows of all ranks, the same as one
    process would make; the chunks are views of cache-sized blocks.

    Parameters
    ----------
    ds : Dataset
    val_fraction : float
    seed : int
    comm : gradreg.distributed.Comm

    Returns
    -------
    Split
    """
    n_here = len(ds.X)
    n_all, first = comm.offsets(n_here)  # rows on all ranks, on lower ranks
    tr, va = _split(n_all, val_fraction, seed)
    offset = int(np.searchsorted(tr, first))  # training rows on lower ranks
    tr = tr[(tr >= first) & (tr < first + n_here)] - first  # this rank's rows of each
    va = va[(va >= first) & (va < first + n_here)] - first
    w_all = ds.sample_weight
    if len(tr) < n_here:
        X, Y, w = ds.X[tr], ds.Y[tr], None if w_all is None else w_all[tr]
    else:  # no copies of (possibly very large) arrays
        X, Y, w = ds.X, ds.Y, w_all
    Xv, Yv, wv = ds.X[va], ds.Y[va], None if w_all is None else w_all[va]
    groups = getattr(ds, "groups", None)
    if groups is not None and len(tr) < n_here:
        groups = [g[tr] for g in groups]

    def blocks(A, B, c):
        for start in range(0, len(A), CHUNK_ROWS):  # views, processed in cache-sized float64 blocks
            stop = start + CHUNK_ROWS
            yield A[start:stop], B[start:stop], None if c is None else c[start:stop]

    def grouped():
        for start, (A, B, c) in zip(range(0, len(X), CHUNK_ROWS), blocks(X, Y, w)):
            yield A, B, c, [g[start : start + CHUNK_ROWS] for g in groups]

    return Split(
        grouped_chunks=grouped if groups is not None else None,
        chunks=lambda: blocks(X, Y, w),
        epoch_chunks=lambda epoch: blocks(X, Y, w),
        val_chunks=(lambda: blocks(Xv, Yv, wv)) if val_fraction > 0 else None,
        n_val=lambda: len(va),
        resident=(X, Y, w, Xv, Yv, wv, offset),
    )


def _split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, val) row indices; val takes round(n·fraction) rows, at least one."""
    if fraction <= 0:
        return np.arange(n), np.arange(0)
    import torch

    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1)).numpy()
    n_val = max(1, int(round(n * fraction)))
    if n - n_val < 2:
        raise DataError(f"{{val_fraction=}} leaves {n - n_val} training row(s); at least 2 are needed", val_fraction=fraction)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])
