"""``gradreg report``: one self-contained HTML page about a model.

The page carries its own CSS and its pictures as ``data:`` URIs: no scripts, no links to
anything outside the file, so it opens offline and can be mailed as it is.
"""

from __future__ import annotations

import base64
import html
import os
import tempfile
from typing import Any

from . import display
from .metrics import regression_metrics

__all__ = ["html_report"]

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1100px;
       padding: 0 1rem; color: #1b1b1b; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; } h2 { font-size: 1.2rem; margin-top: 2rem;
     border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; }
table { border-collapse: collapse; margin: 0.6rem 0 1rem; font-variant-numeric: tabular-nums; }
th, td { padding: 0.25rem 0.7rem; white-space: nowrap; border-bottom: 1px solid #e5e5e5; text-align: right; }
thead th { background: #f5f5f7; } td:first-child, th:first-child { text-align: left; }
.meta { color: #555; font-size: 0.92rem; } .warning { color: #a33; }
figure { margin: 1rem 0; } img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9rem; }
"""


def _img(path: str, caption: str) -> str:
    with open(path, "rb") as f:
        data = base64.b64encode(f.read()).decode("ascii")
    alt = html.escape(caption)
    return f'<figure><img src="data:image/png;base64,{data}" alt="{alt}"><figcaption>{alt}</figcaption></figure>'


def html_report(model, model_path: str, X: Any = None, Y: Any = None, *, data_label: str | None = None) -> str:
    """The report page for a fitted model, as one HTML string.

    Parameters
    ----------
    model : FittedModel
    model_path : str
        Shown in the title.
    X : ndarray of shape (n_samples, n_features), optional
    Y : ndarray of shape (n_samples, n_targets), optional
        Data to evaluate and plot; without it the page shows the training metrics and loss curve.
    data_label : str, optional
        How the data is named on the page.

    Returns
    -------
    str
        A complete HTML document.
    """
    from .plots import model_plots

    esc = html.escape
    info, cfg = model.info, model.config
    metrics = dict(model.metrics)
    if X is not None:
        m = regression_metrics(Y, model.predict_matrix(X))
        metrics[f"data: {data_label}"] = {k: v.tolist() for k, v in m.items()}
    meta = [
        f"solver <b>{esc(str(cfg.get('solver')))}</b>",
        f"{info.get('n_rows', '?')} training rows",
        f"{model.n_features} feature(s)",
        f"{len(model.target_names)} target(s)",
        f"seed {cfg.get('seed')}",
        f"trained on {esc(str(info.get('source', '?')))} (sha256 {esc(str(info.get('data_sha256', ''))[:16])}…)",
        f"gradreg {esc(str(info.get('gradreg_version')))}, torch {esc(str(info.get('torch_version')))}, {esc(str(info.get('created')))}",
    ]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>gradreg report: {esc(os.path.basename(model_path))}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>gradreg report: {esc(os.path.basename(model_path))}</h1>",
        f"<p class='meta'>{' · '.join(meta)}</p>",
    ]
    if cfg.get("solver") == "gd" and model.optimum:
        parts.append(
            f"<p>{esc(display.gap_line(model))} after {info.get('epochs_run')} epoch{'' if info.get('epochs_run') == 1 else 's'} "
            f"(lr {display.fmt(info.get('lr'))}, batch size {info.get('batch_size')}, {esc(str(cfg.get('optimizer')))})</p>"
        )
    parts += [w and f"<p class='warning'>Warning: {esc(w)}</p>" for w in model.warnings]
    parts += ["<h2>Metrics</h2>", display.metrics_html(metrics, model.target_names)]
    parts += ["<h2>Coefficients (original units)</h2>", display.coef_html(model, with_stats=False)]
    if model.stats:
        parts += ["<h2>Statistics</h2>", display.Summary(model).as_html()]
    with tempfile.TemporaryDirectory(prefix="gradreg-report-") as tmp:
        paths = model_plots(model, tmp, X, Y, title=data_label or "")
        if paths:
            parts.append("<h2>Plots</h2>")
        captions = {
            "loss.png": "Training loss per epoch; the dashed line is the exact least-squares optimum.",
            "predicted_vs_actual.png": f"Predicted against actual on {data_label}; points on the dashed line are exact.",
            "residuals.png": f"Residuals against fitted values on {data_label}, and their histogram.",
        }
        parts += [_img(p, captions[os.path.basename(p)]) for p in paths]
    parts.append("</body></html>\n")
    return "\n".join(parts)
