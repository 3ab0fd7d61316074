"""Regression metrics per target: MSE, RMSE, MAE, R² (weighted when weights are given)."""

from __future__ import annotations

import numpy as np

__all__ = ["regression_metrics", "MetricsAccumulator"]

NAMES = ("mse", "rmse", "mae", "r2")


def regression_metrics(Y: np.ndarray, Yhat: np.ndarray, sample_weight: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """MSE, RMSE, MAE and R² of each target.

    R² is 1 − SSE/SST about the (weighted) mean of Y, as scikit-learn's ``r2_score``; a constant
    target gives NaN.

    Parameters
    ----------
    Y : array-like of shape (n_samples, n_targets) or (n_samples,)
        Actual values.
    Yhat : array-like of the same shape as Y
        Predictions.
    sample_weight : array-like of shape (n_samples,), optional

    Returns
    -------
    dict of str to ndarray of shape (n_targets,)
        Keys ``mse``, ``rmse``, ``mae``, ``r2``.
    """
    Y = np.asarray(Y, dtype=np.float64).reshape(len(Y), -1)
    Yhat = np.asarray(Yhat, dtype=np.float64).reshape(len(Yhat), -1)
    w = np.ones(len(Y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    sw = w.sum()
    r = Y - Yhat
    mse = (w[:, None] * r**2).sum(axis=0) / sw
    mae = (w[:, None] * np.abs(r)).sum(axis=0) / sw
    mean = (w[:, None] * Y).sum(axis=0) / sw
    sst = (w[:, None] * (Y - mean) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(sst > 0, 1 - (mse * sw) / sst, np.nan)
    return {"mse": mse, "rmse": np.sqrt(mse), "mae": mae, "r2": r2}


class MetricsAccumulator:
    """:func:`regression_metrics` over chunks of rows, in one pass and bounded memory.

    Sums of w·r² and w·|r| add up; the total sum of squares of Y about its (weighted) mean is
    merged chunk by chunk with Chan's update, so a large mean does not cancel the spread.

    Parameters
    ----------
    n_targets : int
    """

    def __init__(self, n_targets: int) -> None:
        self.sw = 0.0
        self.sse = np.zeros(n_targets)
        self.sae = np.zeros(n_targets)
        self.mean = np.zeros(n_targets)
        self.m2 = np.zeros(n_targets)

    def add(self, Y: np.ndarray, residual: np.ndarray, sample_weight: np.ndarray | None = None) -> None:
        """Add a chunk.

        Parameters
        ----------
        Y : ndarray of shape (n, n_targets)
            Actual values.
        residual : ndarray of shape (n, n_targets)
            Y minus the predictions.
        sample_weight : ndarray of shape (n,), optional
        """
        Y = np.asarray(Y, dtype=np.float64)
        r = np.asarray(residual, dtype=np.float64)
        w = np.ones(len(Y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        swc = float(w.sum())
        if swc <= 0:
            return
        self.sse += w @ (r * r)
        self.sae += w @ np.abs(r)
        mc = (w @ Y) / swc
        m2c = w @ ((Y - mc) ** 2)
        tot = self.sw + swc
        d = mc - self.mean
        self.m2 += m2c + d * d * (self.sw * swc / tot)
        self.mean += d * (swc / tot)
        self.sw = tot

    def result(self) -> dict[str, np.ndarray]:
        """The metrics so far.

        Returns
        -------
        dict of str to ndarray of shape (n_targets,)
            Keys ``mse``, ``rmse``, ``mae``, ``r2``, as :func:`regression_metrics`.
        """
        mse = self.sse / self.sw if self.sw > 0 else np.full_like(self.sse, np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = np.where(self.m2 > 0, 1 - self.sse / self.m2, np.nan)
            mae = self.sae / self.sw
        return {"mse": mse, "rmse": np.sqrt(mse), "mae": mae, "r2": r2}

    def merge(self, other: MetricsAccumulator) -> MetricsAccumulator:
        """Add another accumulator's rows (Chan's update for the spread of Y).

        Parameters
        ----------
        other : MetricsAccumulator

        Returns
        -------
        MetricsAccumulator
            self.
        """
        if other.sw <= 0:
            return self
        tot = self.sw + other.sw
        d = other.mean - self.mean
        self.m2 = self.m2 + other.m2 + d * d * (self.sw * other.sw / tot)
        self.mean = self.mean + d * (other.sw / tot)
        self.sse = self.sse + other.sse
        self.sae = self.sae + other.sae
        self.sw = tot
        return self

    def merge_ranks(self, comm) -> None:
        """Become the merge of every rank's accumulator, in rank order (the same on all ranks).

        Parameters
        ----------
        comm : gradreg.distributed.Comm
        """
        q = len(self.sse)

        def decode(a: np.ndarray) -> MetricsAccumulator:
            acc = MetricsAccumulator(q)
            acc.sw, acc.sse, acc.sae, acc.mean, acc.m2 = float(a[0]), *(a[1 + i * q : 1 + (i + 1) * q] for i in range(4))
            return acc

        def encode(acc: MetricsAccumulator) -> np.ndarray:
            return np.concatenate([[acc.sw], acc.sse, acc.sae, acc.mean, acc.m2])

        total = comm.fold(self, lambda a, b: a.merge(b), encode, decode)
        self.sw, self.sse, self.sae, self.mean, self.m2 = total.sw, total.sse, total.sae, total.mean, total.m2
