"""Human-readable output: coefficient, metric and summary tables (rich), and number formats."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["Summary"]


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
    ours, best = o["mean_train_objective"], o["mean_objective"]
    gap = o.get("gap")
    if o.get("optimum_near_zero") or gap is None or gap != gap:  # an exact fit: a relative gap means nothing
        return f"train {kind} {_small(ours)} (optimum {_small(best)}, an exact fit; {_small(o.get('gap_abs', ours - best), '+')} absolute)"
    return f"train {kind} {_small(ours)} (optimum {_small(best)}, {gap:+.2%})"


def _small(x: float, sign: str = "") -> str:
    """4 decimals, or 4 significant digits for what 4 decimals would show as 0.0000."""
    return f"{x:{sign}.4f}" if x == 0 or abs(x) >= 1e-3 else f"{x:{sign}.3e}"


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
    name = model.target_names[target]
    s = model.stats[name]
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
    if s.get("cov_detail"):
        df = f"; t and F with {s['df_inference']:.0f} df" if s.get("df_inference") is not None else ""
        lines.append(f"{'Covariance:':<20}{s['cov_detail']}{df}")
    if s.get("f_note"):
        lines.append(f"{'F test:':<20}{s['f_note']}")
    design = model.design
    if design is not None:
        if not design.sugar:
            lines.append(f"{'Formula:':<20}{design.formula}")
        for col, levels in design.levels.items():
            full = any(n.endswith(f"[{levels[0]}]") and col in n for n in model.feature_names)  # '- 1': no level dropped
            ref = "a column for every level" if full else f"reference {levels[0]!r}"
            lines.append(f"{'Categorical:':<20}{col}: {len(levels)} levels, {ref}")
    if cfg.get("l2", 0):
        lines.append(f"{'Ridge l2:':<20}{fmt(cfg['l2']):>18}   (standard errors are not defined for ridge)")
    lines.append("=" * width)
    level = float(s.get("conf_level", 0.95))
    lo, hi = f"[{(1 - level) / 2:.3g}", f"{(1 + level) / 2:.3g}]"
    terms = (["intercept"] if cfg.get("fit_intercept", True) else []) + list(model.feature_names)
    # as statsmodels does, the term column widens for long names (C(firm)[T.Atlantic Refining]), up to 40
    label_width = min(40, max(16, max(len(t) for t in terms) + 1))
    lines.append(f"{'':<{label_width}}{'coef':>11}{'std err':>11}{'t':>9}{'P>|t|':>9}{lo:>11}{hi:>11}")
    lines.append("-" * width)
    for i, term in enumerate(terms):
        label = term if len(term) < label_width else term[: label_width - 2] + "…"
        lines.append(
            f"{label:<{label_width}}{fmt(s['coef'][i]):>11}{fmt(s['std_err'][i]):>11}{fmt(s['t'][i]):>9}{_p(s['p'][i]):>9}"
            f"{fmt(s['ci_low'][i]):>11}{fmt(s['ci_high'][i]):>11}"
        )
    lines.append("=" * width)
    if model.info.get("stop_reason"):
        lines.append(f"Note: {model.info['stop_reason']}")
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


def _terms(model) -> list[str]:
    return (["intercept"] if model.config.get("fit_intercept", True) else []) + list(model.feature_names)


def coef_html(model, with_stats: bool = True) -> str:
    """The coefficient table as an HTML ``<table>``: a block of columns per target, with standard
    errors, t, p and the confidence interval when ``with_stats`` and the model has statistics."""
    import html

    esc = html.escape
    stats = [model.stats[t] for t in model.target_names] if with_stats and model.stats else []
    head = "".join(f'<th colspan="{5 if stats else 1}" style="text-align:center">{esc(t)}</th>' for t in model.target_names)
    sub = "".join(
        ("<th>coef</th><th>std err</th><th>t</th><th>P&gt;|t|</th><th>CI</th>" if stats else "<th>coef</th>")
        for _ in model.target_names
    )
    rows = []
    coefs = [
        np.concatenate([[b], c]) if model.config.get("fit_intercept", True) else c for b, c in zip(model.intercept, model.coef)
    ]
    for i, term in enumerate(_terms(model)):
        cells = []
        for t in range(len(model.target_names)):
            cells.append(f"<td>{fmt(coefs[t][i], 6)}</td>")
            if stats:
                s = stats[t]
                ci = f"[{fmt(s['ci_low'][i])}, {fmt(s['ci_high'][i])}]"
                cells.append(f"<td>{fmt(s['std_err'][i])}</td><td>{fmt(s['t'][i])}</td><td>{_p(s['p'][i])}</td><td>{ci}</td>")
        rows.append(f"<tr><th style='text-align:left'>{esc(term)}</th>{''.join(cells)}</tr>")
    header = (
        f"<tr><th></th>{head}</tr><tr><th style='text-align:left'>term</th>{sub}</tr>"
        if stats
        else f"<tr><th>term</th>{head}</tr>"
    )
    return f'<table class="gradreg-coef"><thead>{header}</thead><tbody>{"".join(rows)}</tbody></table>'


def metrics_html(metrics: dict[str, dict[str, list[float]]], targets: list[str]) -> str:
    """The metrics table (split × target × MSE/RMSE/MAE/R²) as an HTML ``<table>``."""
    import html

    rows = []
    for split, vals in metrics.items():
        for i, name in enumerate(targets):
            cells = "".join(f"<td>{fmt(vals[k][i])}</td>" for k in ("mse", "rmse", "mae", "r2"))
            rows.append(f"<tr><td>{html.escape(split)}</td><td>{html.escape(name)}</td>{cells}</tr>")
    return (
        '<table class="gradreg-metrics"><thead><tr><th>split</th><th>target</th><th>MSE</th><th>RMSE</th>'
        f"<th>MAE</th><th>R²</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def model_html(model, title: str = "") -> str:
    """What a notebook shows for a fitted model: a title line, the coefficients and the metrics."""
    import html

    line = f"{model.config.get('solver', '')} solver, {model.info.get('n_rows', '?')} rows"
    if model.config.get("solver") == "gd" and model.optimum:
        line += f"; {gap_line(model)}"
    return (
        f"<div class='gradreg'><p><b>{html.escape(title)}</b><br>{html.escape(line)}</p>"
        f"{coef_html(model)}{metrics_html(model.metrics, model.target_names)}</div>"
    )


class Summary:
    """The result of :meth:`LinearRegressor.summary`: statsmodels-style tables, one per target.

    ``print(summary)`` (or ``str``) gives the text; notebooks show :meth:`as_html`.

    Parameters
    ----------
    model : FittedModel
    target : int or str, optional
        One target by index or name; default every target.
    """

    def __init__(self, model, target: int | str | None = None) -> None:
        if not model.stats:
            raise ValueError("this model has no statistics to summarize")
        if target is None:
            self.targets = list(range(len(model.target_names)))
        elif isinstance(target, str):
            if target not in model.target_names:
                raise ValueError(f"target {target!r} is not one of {model.target_names}")
            self.targets = [model.target_names.index(target)]
        else:
            if not -len(model.target_names) <= int(target) < len(model.target_names):
                raise ValueError(f"target index {target} is out of range for {len(model.target_names)} target(s)")
            self.targets = [int(target) % len(model.target_names)]
        self.model = model

    def as_text(self) -> str:
        """The summary as plain text.

        Returns
        -------
        str
            One 78-column table per target.
        """
        return "\n\n".join(summary_text(self.model, t) for t in self.targets)

    def as_html(self) -> str:
        """The summary as HTML.

        Returns
        -------
        str
            A heading line and a statistics ``<table>`` per target.
        """
        import html

        parts = []
        for t in self.targets:
            s = self.model.stats[self.model.target_names[t]]
            head = (
                f"<p><b>{html.escape(self.model.target_names[t])}</b>: R² {fmt(s['r2'])}, adj. R² {fmt(s['r2_adj'])}, "
                f"F {fmt(s['f'])} (p {fmt(s['f_p'])}), n {int(s['nobs'])}, cov {html.escape(str(s.get('cov_type')))}</p>"
            )
            rows = "".join(
                f"<tr><th style='text-align:left'>{html.escape(term)}</th><td>{fmt(s['coef'][i])}</td>"
                f"<td>{fmt(s['std_err'][i])}</td><td>{fmt(s['t'][i])}</td><td>{_p(s['p'][i])}</td>"
                f"<td>{fmt(s['ci_low'][i])}</td><td>{fmt(s['ci_high'][i])}</td></tr>"
                for i, term in enumerate(_terms(self.model))
            )
            parts.append(
                f"{head}<table class='gradreg-summary'><thead><tr><th></th><th>coef</th><th>std err</th><th>t</th>"
                f"<th>P&gt;|t|</th><th>CI low</th><th>CI high</th></tr></thead><tbody>{rows}</tbody></table>"
            )
        return "".join(parts)

    def __str__(self) -> str:
        return self.as_text()

    def __repr__(self) -> str:
        return self.as_text()

    def _repr_html_(self) -> str:
        return self.as_html()
