"""Pictures: the loss curve, predicted vs actual, and residuals. matplotlib is optional and lazy.

Every function writes one PNG atomically and returns its path. Nothing here imports
``matplotlib.pyplot``: figures are built on ``matplotlib.figure.Figure`` with the Agg canvas, so
no GUI backend is touched and the import stays cheap.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .errors import GradregError, MissingDependencyError
from .persist import atomic_path

__all__ = ["loss_curve", "predicted_vs_actual", "residuals", "model_plots", "require_matplotlib"]

MAX_POINTS = 20_000  # scatter plots draw a seeded sample of at most this many rows
INSTALL_HINT = "plots need matplotlib, which is not installed: pip install 'gradreg[plots]' (or pip install matplotlib)"


def require_matplotlib() -> None:
    """Fail fast, before a long fit, when plots were asked for and matplotlib is missing."""
    _figure_class()


def _figure_class():
    try:
        from matplotlib.figure import Figure  # no pyplot: no GUI backend, faster import
    except ImportError:
        raise MissingDependencyError(INSTALL_HINT) from None
    return Figure


def _save(fig, path: str) -> str:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def loss_curve(history: list[dict], optimum: float | None, path: str, *, title: str = "training loss") -> str:
    """Write a PNG of train (and validation) loss per epoch, with the exact optimum as a line.

    Parameters
    ----------
    history : list of dict
        One dict per epoch with ``epoch``, ``loss`` and optionally ``val_loss``.
    optimum : float or None
        The exact least-squares objective on the training rows, drawn as a dashed line.
    path : str
        The PNG to write.
    title : str

    Returns
    -------
    str
        ``path``.
    """
    fig = _figure_class()(figsize=(6.4, 4.0), dpi=100)
    ax = fig.subplots()
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h["loss"] for h in history], marker="o", ms=3, label="train")
    if any(h.get("val_loss") is not None for h in history):
        ax.plot(epochs, [h.get("val_loss", float("nan")) for h in history], marker="s", ms=3, label="validation")
    if optimum is not None:
        ax.axhline(optimum, color="k", ls="--", lw=1, label=f"exact optimum {optimum:.4g}")
    losses = [h["loss"] for h in history] + [optimum or 0]
    if min(losses) > 0:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE (original units)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return _save(fig, path)


def _sample(n: int, seed: int = 0) -> np.ndarray:
    if n <= MAX_POINTS:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, MAX_POINTS, replace=False))


def _grid(q: int) -> tuple[int, int]:
    cols = min(q, 3)
    return (q + cols - 1) // cols, cols


def predicted_vs_actual(Y: Any, Yhat: Any, target_names: list[str], path: str, *, title: str = "") -> str:
    """Write a PNG with one panel per target: predicted against actual, and the line y = x.

    Parameters
    ----------
    Y, Yhat : array-like of shape (n_samples, n_targets)
        Actual and predicted values.
    target_names : list of str, length n_targets
    path : str
    title : str
        Prefix of each panel's title (e.g. the data file).

    Returns
    -------
    str
        ``path``.
    """
    Y, Yhat = np.asarray(Y, dtype=np.float64), np.asarray(Yhat, dtype=np.float64)
    q = Y.shape[1]
    rows, cols = _grid(q)
    fig = _figure_class()(figsize=(4.2 * cols, 4.0 * rows), dpi=100)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    idx = _sample(len(Y))
    for t in range(q):
        ax = axes[t]
        y, f = Y[:, t], Yhat[:, t]
        ss_tot = ((y - y.mean()) ** 2).sum()
        r2 = 1 - ((y - f) ** 2).sum() / ss_tot if ss_tot > 0 else float("nan")
        ax.scatter(y[idx], f[idx], s=12 if len(idx) < 2000 else 3, alpha=0.7 if len(idx) < 2000 else 0.3, edgecolors="none")
        lo, hi = float(min(y.min(), f.min())), float(max(y.max(), f.max()))
        pad = 0.05 * (hi - lo or 1.0)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="k", ls="--", lw=1, label="y = x")
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_xlabel(f"actual {target_names[t]}")
        ax.set_ylabel(f"predicted {target_names[t]}")
        shown = f", {len(idx):,} of {len(y):,} rows shown" if len(idx) < len(y) else ""
        ax.set_title(f"{title + ': ' if title else ''}{target_names[t]} (R² {r2:.4f}{shown})", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left")
    for ax in axes[q:]:
        ax.set_visible(False)
    return _save(fig, path)


def residuals(Y: Any, Yhat: Any, target_names: list[str], path: str, *, title: str = "") -> str:
    """Write a PNG with a row per target: residuals against fitted values, and their histogram.

    Parameters
    ----------
    Y, Yhat : array-like of shape (n_samples, n_targets)
    target_names : list of str, length n_targets
    path : str
    title : str

    Returns
    -------
    str
        ``path``.
    """
    Y, Yhat = np.asarray(Y, dtype=np.float64), np.asarray(Yhat, dtype=np.float64)
    q = Y.shape[1]
    fig = _figure_class()(figsize=(9.6, 3.6 * q), dpi=100)
    axes = fig.subplots(q, 2, squeeze=False, gridspec_kw={"width_ratios": [2, 1]})
    idx = _sample(len(Y))
    for t in range(q):
        r = Y[:, t] - Yhat[:, t]
        left, right = axes[t]
        left.scatter(
            Yhat[idx, t], r[idx], s=12 if len(idx) < 2000 else 3, alpha=0.7 if len(idx) < 2000 else 0.3, edgecolors="none"
        )
        left.axhline(0.0, color="k", ls="--", lw=1)
        left.set_xlabel(f"fitted {target_names[t]}")
        left.set_ylabel("residual (actual − fitted)")
        left.set_title(f"{title + ': ' if title else ''}{target_names[t]}: residuals vs fitted", fontsize=10)
        left.grid(True, alpha=0.3)
        right.hist(r, bins=min(50, max(5, int(np.sqrt(len(r))))), color="C1", edgecolor="white")
        right.axvline(0.0, color="k", ls="--", lw=1)
        right.set_xlabel("residual")
        right.set_ylabel("rows")
        right.yaxis.get_major_locator().set_params(integer=True)
        right.set_title(f"mean {r.mean():.3g}, sd {r.std():.3g}", fontsize=10)
    return _save(fig, path)


def model_plots(model, out_dir: str, X: Any = None, Y: Any = None, *, title: str = "") -> list[str]:
    """Every picture of a fitted model: the loss curve (gradient descent) and, given data, the
    predicted-vs-actual and residual plots. Returns the paths written in ``out_dir``.

    Parameters
    ----------
    model : FittedModel
    out_dir : str
        Created if missing.
    X : array-like of shape (n_samples, n_features), optional
    Y : array-like of shape (n_samples, n_targets), optional
    title : str
        Names the data on the data plots.

    Returns
    -------
    list of str
        The PNGs written: ``loss.png`` (with a training history), ``predicted_vs_actual.png`` and
        ``residuals.png`` (with data).
    """
    require_matplotlib()
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    if model.history:
        optimum = model.optimum.get("mean_objective") if model.optimum else None
        paths.append(
            loss_curve(model.history, optimum, os.path.join(out_dir, "loss.png"), title=f"training loss{title and ': '}{title}")
        )
    if X is not None and Y is not None:
        Yhat = model.predict_matrix(X)
        paths.append(
            predicted_vs_actual(Y, Yhat, model.target_names, os.path.join(out_dir, "predicted_vs_actual.png"), title=title)
        )
        paths.append(residuals(Y, Yhat, model.target_names, os.path.join(out_dir, "residuals.png"), title=title))
    return paths


PLOTTERS = {"loss_curve": loss_curve, "predicted_vs_actual": predicted_vs_actual, "residuals": residuals}


class BackgroundPlotter:
    """A child process that imports matplotlib while this one imports torch and trains.

    matplotlib's import (~0.7 s here) then costs no wall time: the machine has a second core.
    ``draw([(name, kwargs), ...])`` sends the requests and waits for the PNGs; errors come back as
    GradregError with the child's one-line message.
    """

    def __init__(self) -> None:
        import subprocess
        import sys

        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from gradreg.plots import _serve; _serve()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def draw(self, requests: list[tuple[str, dict[str, Any]]]) -> list[str]:
        import json

        from .persist import jsonable

        payload = json.dumps([{"plot": name, "kwargs": jsonable(kw)} for name, kw in requests])
        out, err = self.proc.communicate(payload, timeout=120)
        if self.proc.returncode != 0:
            lines = [ln for ln in err.strip().splitlines() if ln.strip()]
            cls = MissingDependencyError if self.proc.returncode == 3 else GradregError
            raise cls(lines[-1] if lines else f"plotting process failed with status {self.proc.returncode}")
        return out.splitlines()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _serve() -> None:
    """The child side of BackgroundPlotter: a JSON list of requests on stdin, the paths on stdout."""
    import json
    import sys

    try:
        require_matplotlib()  # import matplotlib now, while the parent is busy
        requests = json.loads(sys.stdin.read())
        paths = [PLOTTERS[r["plot"]](**r["kwargs"]) for r in requests]
    except GradregError as e:
        sys.stderr.write(f"{e}\n")
        raise SystemExit(3 if isinstance(e, MissingDependencyError) else 2) from None
    sys.stdout.write("\n".join(paths) + "\n")
