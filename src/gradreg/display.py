"""Human-readable output: coefficient, metric and summary tables (rich), and number formats."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def fmt(x: Any, digits: int = 4) -> str:
    """A number for a table: 4 significant digits, NaN shown as 'nan'."""
    if x is None:
        return "nan"
    x = float(x)
    if not math.isfinite(x):
        return "nan" if x != x else ("inf" if x > 0 else "-inf")
    if x != 0 and (abs(x) >= 1e6 or abs(x) < 1e-3):
        return f"{x:.{digits - 1}e}"
    return f"{x:#.{digits}g}".rstrip(".") if abs(x) >= 1 else f"{x:.{digits}f}"


def gap_line(model) -> str:
    """'train MSE 0.9126 (optimum 0.9094, +0.35%)' — the distance to the exact optimum."""
    o = model.optimum
    kind = "MSE" if o.get("kind", "MSE") == "MSE" else "objective"
    return f"train {kind} {o['mean_train_objective']:.4f} (optimum {o['mean_objective']:.4f}, {o['gap']:+.2%})"


def coef_table(model) -> Any:
    from rich.table import Table

    t = Table(title="coefficients (original units)", title_justify="left")
    t.add_column("term")
    for name in model.target_names:
        t.add_column(name, justify="right")
    if model.config.get("fit_intercept", True):
        t.add_row("intercept", *[fmt(v, 6) for v in model.intercept])
    for j, f in enumerate(model.feature_names):
        t.add_row(f, *[fmt(v, 6) for v in model.coef[:, j]])
    return t


def metrics_table(metrics: dict[str, dict[str, list[float]]], targets: list[str]) -> Any:
    from rich.table import Table

    t = Table(title="metrics", title_justify="left")
    t.add_column("split")
    t.add_column("target")
    for m in ("MSE", "RMSE", "MAE", "R²"):
        t.add_column(m, justify="right")
    for split, vals in metrics.items():
        for i, name in enumerate(targets):
            t.add_row(split, name, *[fmt(vals[k][i]) for k in ("mse", "rmse", "mae", "r2")])
    return t


def summary_text(model, target: int) -> str:
    """A statsmodels-style summary of one target, as plain text."""
    s = model.stats[target]
    name = model.target_names[target]
    cfg = model.config
    width = 78
    lines = ["=" * width, f"{'gradreg regression results':^{width}}", "=" * width]
    left = [
        ("Dep. variable:", name),
        ("Solver:", cfg.get("solver", "")),
        ("No. observations:", f"{int(s['nobs'])}"),
        ("Df residuals:", f"{s['df_resid']:.0f}"),
        ("Df model:", f"{s['df_model']:.0f}"),
        ("Covariance type:", str(s.get("cov_type", "nonrobust"))),
    ]
    right = [
        ("R-squared:", fmt(s["r2"])),
        ("Adj. R-squared:", fmt(s["r2_adj"])),
        ("F-statistic:", fmt(s["f"])),
        ("Prob (F-statistic):", fmt(s["f_p"])),
        ("Log-likelihood:", fmt(s["llf"], 6)),
        ("AIC / BIC:", f"{fmt(s['aic'], 5)} / {fmt(s['bic'], 5)}"),
    ]
    for (a, b), (c, d) in zip(left, right):
        lines.append(f"{a:<20}{b:>18}   {c:<20}{d:>16}")
    lines.append(
        f"{'Residual std. error:':<20}{fmt(s['sigma']):>18}   {'Cond. no. (scaled):':<20}{fmt(model.info.get('condition_number')):>16}"
    )
    if cfg.get("l2", 0):
        lines.append(f"{'Ridge l2:':<20}{fmt(cfg['l2']):>18}   (standard errors are not defined for ridge)")
    lines.append("=" * width)
    level = float(s.get("conf_level", 0.95))
    lo, hi = f"[{(1 - level) / 2:.3g}", f"{(1 + level) / 2:.3g}]"
    lines.append(f"{'':<16}{'coef':>11}{'std err':>11}{'t':>9}{'P>|t|':>9}{lo:>11}{hi:>11}")
    lines.append("-" * width)
    terms = (["intercept"] if cfg.get("fit_intercept", True) else []) + list(model.feature_names)
    for i, term in enumerate(terms):
        label = term if len(term) <= 15 else term[:14] + "…"
        lines.append(
            f"{label:<16}{fmt(s['coef'][i]):>11}{fmt(s['std_err'][i]):>11}{fmt(s['t'][i]):>9}{_p(s['p'][i]):>9}"
            f"{fmt(s['ci_low'][i]):>11}{fmt(s['ci_high'][i]):>11}"
        )
    lines.append("=" * width)
    for w in model.warnings:
        lines.append(f"Warning: {w}")
    return "\n".join(lines)


def _p(p: float) -> str:
    p = float(p)
    if p != p:
        return "nan"
    return "0.000" if p < 5e-4 else f"{p:.3f}"


def predictions_table(X: np.ndarray, Y: np.ndarray, Yhat: np.ndarray, targets: list[str], labels: list[str] | None = None) -> Any:
    from rich.table import Table

    t = Table(title="predictions vs actual (training rows)", title_justify="left")
    t.add_column("row")
    for name in targets:
        t.add_column(f"{name}", justify="right")
        t.add_column("predicted", justify="right")
    for i in range(len(Y)):
        cells = []
        for j in range(len(targets)):
            cells += [fmt(Y[i, j]), f"{Yhat[i, j]:.2f}"]
        t.add_row(labels[i] if labels else str(i + 1), *cells)
    return t
