"""Gradient descent comes within 1% of the exact optimum with default settings, or says so."""

from __future__ import annotations

import json
import math
import os
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from gradreg import LinearRegressor
from gradreg.config import TrainConfig
from gradreg.fitted import FittedModel, gap_to_optimum, train
from gradreg.io import load

from .conftest import ols

NIST = os.path.join(os.path.dirname(__file__), "data", "nist")
CERTIFIED = json.load(open(os.path.join(NIST, "certified.json")))


def quiet_fit(est, X, y):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est.fit(X, y)
    return [w for w in caught if issubclass(w.category, ConvergenceWarning)]


def reference_mse(X, y, intercept):
    coef, icpt = ols(np.asarray(X, dtype=float), np.asarray(y, dtype=float), intercept=intercept)
    return float(((np.asarray(y) - np.asarray(X) @ coef[0] - icpt[0]) ** 2).mean())


@pytest.mark.parametrize("intercept", [True, False])
def test_longley_with_defaults_is_within_one_percent(intercept):
    sm = pytest.importorskip("statsmodels.api")
    d = sm.datasets.longley.load_pandas()
    est = LinearRegressor(fit_intercept=intercept)
    assert quiet_fit(est, d.exog, d.endog) == []
    mse = float(((d.endog - est.predict(d.exog)) ** 2).mean())
    optimum = reference_mse(d.exog, d.endog, intercept)  # numpy lstsq, independent of gradreg
    assert mse <= 1.01 * optimum, f"{mse / optimum:.4f}× the optimum"
    assert est.model_.info["converged"] is True


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(k for k in CERTIFIED if not k.startswith("_")))
def test_every_nist_set_with_defaults_is_within_one_percent(name, dtype):
    cert = CERTIFIED[name]
    ds = load(os.path.join(NIST, f"{name}.csv"), "y")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = train(ds, TrainConfig(fit_intercept=cert["intercept"], dtype=dtype))
    assert not [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    mse = float(((ds.Y - m.predict(ds.X)) ** 2).mean())
    optimum = reference_mse(ds.X, ds.Y[:, 0], cert["intercept"])
    y_square = float((ds.Y**2).mean())
    if optimum > 1e-10 * y_square:
        assert mse <= 1.01 * optimum, f"{name}: {mse / optimum:.4f}× the optimum"
    else:  # Wampler1 and 2 are exact fits: judged by the absolute gap
        assert mse <= 1e-10 * y_square


def test_adam_on_crops_is_within_one_percent(crops_xy):
    X, Y = crops_xy
    est = LinearRegressor(optimizer="adam")
    assert quiet_fit(est, X, Y) == []
    assert est.model_.optimum["gap"] < 0.01


def test_tutorial_mode_stays_bit_for_bit_and_warns_with_the_remedy(crops_xy):
    X, Y = crops_xy
    est = LinearRegressor(standardize=False, lr=1e-6, lr_schedule="constant", batch_size=3, epochs=5)
    (w,) = quiet_fit(est, X, Y)
    text = str(w.message)
    assert text.startswith("gradient descent did not converge: train MSE ")
    assert "× the exact optimum 0.909" in text
    assert "set standardize=True" in text and "(solver='exact')" in text and "--" not in text  # Python's words
    assert est.model_.info["converged"] is False
    assert text in est.model_.warnings


def test_the_flag_and_warning_are_in_the_model_file_and_the_cli(cli, tmp_path):
    path = tmp_path / "m.safetensors"
    r = cli("train", "crops", "--target", "mangoes,oranges", "--epochs", "2", "--lr", "1e-4", "-o", path)
    assert r.code == 0
    lines = [ln for ln in r.err.splitlines() if "did not converge" in ln]
    assert len(lines) == 1 and lines[0].startswith("warning: gradient descent did not converge")
    assert "leave out --lr (now 0.0001) for the automatic learning rate" in lines[0]  # the CLI's words
    assert "lr=None" not in lines[0] and lines[0].endswith("(--solver exact)")
    m = FittedModel.load(str(path))
    assert m.info["converged"] is False and any("did not converge" in w for w in m.warnings)
    j = json.loads(cli("inspect", path, "--json").out)
    assert j["info"]["converged"] is False


@pytest.mark.parametrize(
    "objective, optimum, y_square, gap, within",
    [
        (1.005, 1.0, 10.0, 0.005, True),
        (1.02, 1.0, 10.0, 0.02, False),
        (1e-14, 1e-31, 1.0, math.nan, True),  # an exact fit reached to float32 rounding
        (1e-6, 1e-31, 1.0, math.nan, False),  # an exact fit missed
    ],
)
def test_gap_is_relative_or_absolute_near_zero(objective, optimum, y_square, gap, within):
    g = gap_to_optimum(objective, optimum, y_square)
    assert g["within_tolerance"] is within
    assert g["gap_abs"] == pytest.approx(objective - optimum)
    assert (math.isnan(g["gap"]) and math.isnan(gap)) or g["gap"] == pytest.approx(gap)


def test_gap_line_is_absolute_when_the_optimum_is_about_zero(cli, tmp_path):
    data = tmp_path / "exact.csv"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 2))
    y = 3 * x[:, 0] - 2 * x[:, 1] + 1
    data.write_text("a,b,y\n" + "".join(f"{a:.17g},{b:.17g},{c:.17g}\n" for (a, b), c in zip(x, y)))
    r = cli("train", data, "--target", "y", "-o", tmp_path / "m.safetensors")
    assert r.code == 0
    line = next(ln for ln in r.out.splitlines() if ln.startswith("train MSE"))
    assert "an exact fit" in line and line.endswith("absolute)") and "%" not in line


@pytest.mark.parametrize("name", ["longley", "filip", "wampler5", "noint1"])
def test_streamed_descent_is_preconditioned_too(name):
    from gradreg.io import Stream, StreamingDataset

    cert = CERTIFIED[name]
    path = os.path.join(NIST, f"{name}.csv")
    sds = StreamingDataset(Stream(path, chunk_rows=7), ["y"])  # several chunks even for 16 rows
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = train(sds, TrainConfig(fit_intercept=cert["intercept"]))
    assert m.info["streamed"] and not [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    ds = load(path, "y")
    mse = float(((ds.Y - m.predict(ds.X)) ** 2).mean())
    assert mse <= 1.01 * reference_mse(ds.X, ds.Y[:, 0], cert["intercept"])


def test_warnings_point_at_the_callers_line(crops_xy):
    X, Y = crops_xy
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        LinearRegressor(epochs=1, lr=1e-5).fit(X, Y)  # the line Python should show
    (w,) = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert w.filename == __file__
