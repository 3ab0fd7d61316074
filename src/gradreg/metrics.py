"""Regression metrics per target: MSE, RMSE, MAE, R² (weighted when weights are given)."""

from __future__ import annotations

import numpy as np

__all__ = ["regression_metrics"]

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
