"""Prediction and confidence intervals against statsmodels' get_prediction().summary_frame().

The references are statsmodels' ``mean_ci_*`` (confidence, for the mean response) and ``obs_ci_*``
(prediction, for a new observation). Intervals are compared as center and half-width, as the
coefficient intervals are in test_statistics.py: an endpoint near 0 would cancel digits in both tools.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from gradreg import LinearRegressor
from gradreg import load as load_estimator
from gradreg.config import TrainConfig
from gradreg.errors import ConfigError, ModelFileError
from gradreg.fitted import FittedModel
from gradreg.io import Dataset
from gradreg.pipeline import train

from .conftest import CROPS_X, CROPS_Y

sm = pytest.importorskip("statsmodels.api", reason="statsmodels is the reference for these intervals")

KEYS = {"confidence": "mean_ci", "prediction": "obs_ci"}


def design(n: int, seed: int = 0, collinear: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3)) * [1.0, 10.0, 100.0] + [5.0, 0.0, -3.0]
    return np.c_[X, X[:, 0] + 0.02 * X[:, 1]] if collinear else X


def targets(X: np.ndarray, q: int = 2, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    beta = rng.normal(size=(X.shape[1], q)) * 0.5
    return X @ beta + rng.normal(size=(len(X), q)) * np.arange(1, q + 1)


def linnerud():
    from sklearn.datasets import load_linnerud

    d = load_linnerud()
    return d.data.astype(float), d.target.astype(float)


def reference(X, y, Xnew, *, intercept=True, cov="nonrobust", w=None, level=0.95, new_weights=None):
    """statsmodels' summary_frame for one target."""
    A = sm.add_constant(X, has_constant="add") if intercept else X
    model = sm.OLS(y, A) if w is None else sm.WLS(y, A, weights=w)
    res = model.fit(cov_type=cov, use_t=True)
    An = sm.add_constant(Xnew, has_constant="add") if intercept else Xnew
    kw = {} if new_weights is None else {"weights": new_weights}
    return res.get_prediction(An, **kw).summary_frame(alpha=1 - level)


def check(yhat, lower, upper, frame, interval, rtol=1e-8):
    key = KEYS[interval]
    lo, hi = frame[f"{key}_lower"].to_numpy(), frame[f"{key}_upper"].to_numpy()
    np.testing.assert_allclose(yhat, frame["mean"].to_numpy(), rtol=rtol, atol=1e-12 * np.abs(hi).max())
    np.testing.assert_allclose((upper + lower) / 2, (hi + lo) / 2, rtol=rtol, atol=1e-12 * np.abs(hi).max())
    np.testing.assert_allclose((upper - lower) / 2, (hi - lo) / 2, rtol=rtol, err_msg="half-width")


def names(p: int, q: int):
    return [f"x{j}" for j in range(p)], [f"y{t}" for t in range(q)]


@pytest.mark.parametrize("cov", ["nonrobust", "HC3"])
@pytest.mark.parametrize("intercept", [True, False])
@pytest.mark.parametrize("data", ["random", "linnerud"])
def test_ols_matches_statsmodels(data, intercept, cov):
    if data == "random":
        X = design(60)
        Y, Xnew = targets(X), design(9, seed=5)
    else:
        X, Y = linnerud()
        Xnew = X[::3] * 1.1
    m = train(Dataset(X, Y, *names(X.shape[1], Y.shape[1])), TrainConfig(solver="exact", fit_intercept=intercept, cov_type=cov))
    for interval in KEYS:
        for level in (0.95, 0.8):
            out = m.predict_interval(Xnew, interval, level)
            for t in range(Y.shape[1]):
                frame = reference(X, Y[:, t], Xnew, intercept=intercept, cov=cov, level=level)
                check(*(a[:, t] for a in out), frame, interval)


@pytest.mark.parametrize("cov", ["nonrobust", "HC3"])
def test_wls_matches_statsmodels_with_and_without_new_weights(cov):
    X = design(50, seed=2)
    Y, Xnew = targets(X, q=1), design(7, seed=3)
    w = np.linspace(0.5, 3.0, len(X))
    m = train(Dataset(X, Y, *names(4 - 1, 1), w), TrainConfig(solver="exact", cov_type=cov))
    for interval in KEYS:
        check(
            *(a[:, 0] for a in m.predict_interval(Xnew, interval, 0.9)),
            reference(X, Y[:, 0], Xnew, cov=cov, w=w, level=0.9),
            interval,
        )
    new_w = np.linspace(0.2, 4.0, len(Xnew))
    frame = reference(X, Y[:, 0], Xnew, cov=cov, w=w, new_weights=new_w)
    check(*(a[:, 0] for a in m.predict_interval(Xnew, "prediction", weights=new_w)), frame, "prediction")


def test_ill_conditioned_longley_keeps_its_digits():
    """Longley's design has κ ≈ 1e7 in raw units (statsmodels computes on raw x; we center)."""
    data = sm.datasets.longley.load_pandas()
    X, y = data.exog.to_numpy(float), data.endog.to_numpy(float)
    Xnew = X[::4] * 1.01
    m = train(Dataset(X, y[:, None], list(data.exog.columns), ["TOTEMP"]), TrainConfig(solver="exact"))
    for interval in KEYS:
        check(*(a[:, 0] for a in m.predict_interval(Xnew, interval)), reference(X, y, Xnew), interval)


@pytest.mark.filterwarnings("ignore::gradreg.solvers.exact.RankWarning")
@pytest.mark.filterwarnings("ignore:The design matrix is rank-deficient")  # statsmodels says so too
@pytest.mark.parametrize("cov", ["nonrobust", "HC3"])
def test_collinear_columns_give_statsmodels_intervals_where_the_prediction_is_estimable(cov):
    """x3 = x0 + 0.02 x1: the minimum-norm coefficients differ from statsmodels', but the
    prediction at a point that keeps the collinearity, and its variance, do not."""
    X = design(40, collinear=True)
    y = targets(X[:, :3], q=1)[:, 0]
    Xnew = design(6, seed=9, collinear=True)
    m = train(Dataset(X, y[:, None], *names(4, 1)), TrainConfig(solver="exact", cov_type=cov))
    assert m.stats["y0"]["std_err"][1] != m.stats["y0"]["std_err"][1]  # aliased: NaN
    ref = sm.OLS(y, sm.add_constant(X)).fit(cov_type=cov, use_t=True)
    assert m.stats["y0"]["std_err"][0] == pytest.approx(ref.bse[0], rel=1e-8)  # the intercept is estimable
    for interval in KEYS:
        check(*(a[:, 0] for a in m.predict_interval(Xnew, interval)), reference(X, y, Xnew, cov=cov), interval)


def test_an_exact_fit_collapses_the_intervals():
    X = design(20)
    y = X @ [1.0, -2.0, 0.5] + 3.0
    m = train(Dataset(X, y[:, None], *names(3, 1)), TrainConfig(solver="exact"))
    yhat, lo, hi = m.predict_interval(X[:5], "prediction")
    np.testing.assert_array_equal(lo, yhat)
    np.testing.assert_array_equal(hi, yhat)
    np.testing.assert_allclose(yhat[:, 0], y[:5], rtol=1e-12)


def test_gradient_descent_is_centered_on_its_prediction_with_the_exact_factors_covariance():
    X = design(200, seed=4)
    Y, Xnew = targets(X, q=1), design(8, seed=6)
    m = train(Dataset(X, Y, *names(3, 1)), TrainConfig(epochs=60, tol=0))
    A, An = sm.add_constant(X), sm.add_constant(Xnew)
    exact = sm.OLS(Y[:, 0], A).fit()
    # statsmodels' results at gradient descent's coefficients, with their residual variance
    params = np.r_[m.intercept[0], m.coef[0]]
    assert not np.allclose(params, exact.params, rtol=1e-9, atol=0)  # a different point than the optimum
    scale = ((Y[:, 0] - A @ params) ** 2).sum() / exact.df_resid
    at_gd = sm.regression.linear_model.OLSResults(exact.model, params, exact.normalized_cov_params, scale=scale)
    for interval in KEYS:
        out = m.predict_interval(Xnew, interval)
        check(*(a[:, 0] for a in out), at_gd.get_prediction(An).summary_frame(), interval)
        # converged: the width is the exact fit's to the gap's order
        frame = exact.get_prediction(An).summary_frame()
        width = frame[f"{KEYS[interval]}_upper"] - frame[f"{KEYS[interval]}_lower"]
        np.testing.assert_allclose((out[2] - out[1])[:, 0], width, rtol=1e-2)


def test_estimator_return_std_and_intervals_survive_save_and_load(tmp_path):
    X = design(40, seed=7)
    y = targets(X, q=1)[:, 0]
    Xnew = design(5, seed=8)
    est = LinearRegressor(solver="exact", cov_type="HC3").fit(X, y)
    frame = reference(X, y, Xnew, cov="HC3")
    path = tmp_path / "m.safetensors"
    est.save(path)
    for e in (est, load_estimator(str(path))):
        yhat, std = e.predict(Xnew, return_std=True)
        assert yhat.shape == std.shape == (5,)
        np.testing.assert_array_equal(yhat, e.predict(Xnew))
        obs_se = np.sqrt(frame["mean_se"] ** 2 + sm.OLS(y, sm.add_constant(X)).fit().scale)
        np.testing.assert_allclose(std, obs_se, rtol=1e-8)
        out = e.predict_interval(Xnew, interval="prediction")
        assert all(a.shape == (5,) for a in out)
        check(*out, frame, "prediction")
    two = LinearRegressor(solver="exact").fit(X, np.c_[y, 2 * y])
    assert all(a.shape == (5, 2) for a in two.predict(Xnew, return_std=True))


def test_refusals_are_one_clear_line(tmp_path):
    X = design(30)
    Y = targets(X, q=1)
    ds = Dataset(X, Y, *names(3, 1))
    m = train(ds, TrainConfig(solver="exact"))
    with pytest.raises(ConfigError, match="interval must be one of confidence, prediction; got interval='mean'"):
        m.predict_interval(X, "mean")
    for level in (0, 1, 1.5, -0.1, float("nan")):
        with pytest.raises(ConfigError, match="level must be between 0 and 1"):
            m.predict_interval(X, level=level)
    with pytest.raises(ConfigError, match="weights apply to interval='prediction'"):
        m.predict_interval(X, weights=2.0)
    with pytest.raises(ConfigError, match="weights must be finite and > 0; got 0.0"):
        m.predict_interval(X, "prediction", weights=0.0)
    ridge = train(ds, TrainConfig(solver="exact", l2=0.1))
    with pytest.raises(ConfigError, match=r"ridge model \(l2=0.1\)"):
        ridge.predict_interval(X)
    with pytest.raises(ConfigError, match="ridge"):
        LinearRegressor(solver="exact", l2=0.1).fit(X, Y[:, 0]).predict(X, return_std=True)
    with pytest.raises(ConfigError, match="this model has no statistics"):
        LinearRegressor(epochs=2).partial_fit(X, Y[:, 0]).predict(X, return_std=True)
    exact = LinearRegressor(solver="exact").partial_fit(X[:15], Y[:15, 0]).partial_fit(X[15:], Y[15:, 0])
    np.testing.assert_allclose(
        exact.predict(X, return_std=True)[1],
        LinearRegressor(solver="exact").fit(X, Y[:, 0]).predict(X, return_std=True)[1],
        rtol=1e-10,
    )


def write_model_without(path, tmp_path, drop=(), edit=None):
    """The model file at ``path`` rewritten without some tensors, or with some edited."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(str(path), framework="np") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys() if k not in drop}
    if edit:
        edit(tensors)
    out = tmp_path / "edited.safetensors"
    save_file(tensors, str(out), metadata=meta)
    return out


def test_old_and_hostile_model_files(tmp_path, cli):
    path = tmp_path / "m.safetensors"
    assert cli("train", "crops", "--target", "mangoes,oranges", "--solver", "exact", "-q", "-o", path).code == 0
    old = write_model_without(path, tmp_path, drop=("stats.cov", "stats.cov_center"))
    model = FittedModel.load(str(old))  # an old file still predicts
    assert model.predict(np.ones((1, 3))).shape == (1, 2)
    with pytest.raises(ModelFileError, match="this model file has no covariance of its estimates.*retrain it with gradreg"):
        model.predict_interval(np.ones((1, 3)))
    r = cli("predict", old, "crops", "--interval", "confidence")
    assert r.code == 2 and r.out == "" and r.err.count("\n") == 1 and "no covariance" in r.err
    bad = write_model_without(path, tmp_path, edit=lambda t: t.update({"stats.cov": np.zeros((2, 3, 3))}))
    with pytest.raises(ModelFileError, match=r"tensor 'stats.cov' has shape \[2, 3, 3\]; the metadata implies \[2, 4, 4\]"):
        FittedModel.load(str(bad))
    half = write_model_without(path, tmp_path, drop=("stats.cov_center",))
    with pytest.raises(ModelFileError, match="without its center"):
        FittedModel.load(str(half))


def crops_csv(tmp_path, missing: bool = False) -> str:
    rows = ["temperature,rainfall,humidity,mangoes,oranges"]
    rows += [",".join(f"{v:g}" for v in (*x, *y)) for x, y in zip(CROPS_X, CROPS_Y)]
    if missing:
        rows[3] = "87,,58,119,133"
    path = tmp_path / ("crops_missing.csv" if missing else "crops.csv")
    path.write_text("\n".join(rows) + "\n")
    return str(path)


def read_csv(text: str):
    lines = text.strip().split("\n")
    cells = [[float(c) if c else np.nan for c in line.split(",")] for line in lines[1:]]
    return lines[0].split(","), np.array(cells)


@pytest.mark.parametrize("solver", ["exact", "gd"])
def test_cli_whole_streamed_and_json_equal_python(cli, tmp_path, solver):
    csv = crops_csv(tmp_path)
    model, streamed = tmp_path / "m.safetensors", tmp_path / "s.safetensors"
    base = ["train", csv, "--target", "mangoes,oranges", "--solver", solver, "--cov", "HC3", "-q"]
    assert cli(*base, "-o", model).code == 0
    m = FittedModel.load(str(model))
    ref = m.predict_interval(CROPS_X, "prediction", 0.9)
    expected = np.stack(ref, axis=2).reshape(len(CROPS_X), -1)
    header = ["mangoes", "mangoes_lower", "mangoes_upper", "oranges", "oranges_lower", "oranges_upper"]
    for args in ([], ["--chunk-rows", "7"]):  # the file read whole in one chunk, and in chunks of 7 rows
        r = cli("predict", model, csv, "--interval", "prediction", "--level", "0.9", *args)
        assert r.code == 0, r.err
        names_, values = read_csv(r.out)
        assert names_ == header
        np.testing.assert_allclose(values, expected, rtol=1e-15)
    r = cli("predict", model, "crops", "--interval", "prediction", "--level", "0.9", "--json")
    rows = [json.loads(line) for line in r.out.splitlines()]
    np.testing.assert_allclose([[row[h] for h in header] for row in rows], expected, rtol=1e-15)
    # confidence intervals of the exact solver equal statsmodels' (the whole chain, from the CLI)
    if solver == "exact":
        out = tmp_path / "p.csv"
        assert cli("predict", model, csv, "--interval", "confidence", "--chunk-rows", "7", "-o", out).code == 0
        _, values = read_csv(out.read_text())
        for t in range(2):
            frame = reference(CROPS_X, CROPS_Y[:, t], CROPS_X, cov="HC3")
            check(*(values[:, 3 * t + j] for j in range(3)), frame, "confidence")
        # a model trained streamed in chunks of 7 rows gives the same intervals
        assert cli(*base, "--stream", "--chunk-rows", "7", "-o", streamed).code == 0
        again = FittedModel.load(str(streamed)).predict_interval(CROPS_X, "prediction", 0.9)
        for a, b in zip(again, ref):
            np.testing.assert_allclose(a, b, rtol=1e-10)


def test_cli_drop_missing_leaves_every_interval_cell_empty(cli, tmp_path):
    model = tmp_path / "m.safetensors"
    assert cli("train", crops_csv(tmp_path), "--target", "mangoes", "--solver", "exact", "-q", "-o", model).code == 0
    r = cli(
        "predict", model, crops_csv(tmp_path, missing=True), "--interval", "confidence", "--drop-missing", "--chunk-rows", "2"
    )
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert len(lines) == 16 and lines[3] == ",,"  # data row 3 has no rainfall
    _, values = read_csv(r.out)
    assert np.isfinite(np.delete(values, 2, axis=0)).all()


def test_cli_option_errors(cli, tmp_path):
    model = tmp_path / "m.safetensors"
    assert cli("train", "crops", "--target", "mangoes", "--solver", "exact", "-q", "-o", model).code == 0
    r = cli("predict", model, "crops", "--level", "0.9")
    assert (
        r.code == 2
        and r.out == ""
        and r.err == "Error: --level goes with --interval confidence|prediction; got --level 0.9 alone\n"
    )
    r = cli("predict", model, "crops", "--interval", "confidence", "--level", "95")
    assert r.code == 2 and r.out == "" and r.err == "Error: --level must be between 0 and 1; got --level 95\n"
    r = cli("predict", model, "crops", "--interval", "mean")
    assert r.code == 2 and "invalid choice: 'mean'" in r.err
    ridge = tmp_path / "r.safetensors"
    assert cli("train", "crops", "--target", "mangoes", "--solver", "exact", "--l2", "0.1", "-q", "-o", ridge).code == 0
    r = cli("predict", ridge, "crops", "--interval", "prediction", "-o", tmp_path / "p.csv")
    assert r.code == 2 and r.err.startswith("Error: intervals need") and "--l2 0.1" in r.err
    assert not (tmp_path / "p.csv").exists()


def test_cli_piped_into_head(tmp_path):
    model = tmp_path / "m.safetensors"
    subprocess.run(
        [sys.executable, "-m", "gradreg", "train", "crops", "--target", "mangoes", "--solver", "exact", "-q", "-o", model],
        check=True,
    )
    r = subprocess.run(
        f"{sys.executable} -m gradreg predict {model} crops --interval prediction | head -2",
        shell=True,
        capture_output=True,
        text=True,
    )
    assert r.stdout.splitlines()[0] == "mangoes,mangoes_lower,mangoes_upper" and r.stderr == ""


def test_two_ranks_give_the_single_process_intervals(tmp_path):
    import pyarrow as pa
    import pyarrow.csv as pcsv

    X = design(600, seed=11)
    Y = targets(X)
    w = np.random.default_rng(3).uniform(0.5, 2.0, len(X))
    pcsv.write_csv(
        pa.table({"x0": X[:, 0], "x1": X[:, 1], "x2": X[:, 2], "y0": Y[:, 0], "y1": Y[:, 1], "w": w}), tmp_path / "d.csv"
    )
    out = tmp_path / "m.safetensors"
    args = ["train", str(tmp_path / "d.csv"), "--target", "y0,y1", "--weight", "w", "--solver", "exact", "--cov", "HC3"]
    env = {"OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    r = subprocess.run(
        [sys.executable, "-m", "gradreg", *args, "--nproc", "2", "-q", "-o", str(out)],
        capture_output=True,
        text=True,
        env={k: v for k, v in {**os.environ, **env}.items() if k != "WORLD_SIZE"},
        timeout=240,
    )
    assert r.returncode == 0, r.stderr
    two = FittedModel.load(str(out))
    assert two.info["world_size"] == 2
    single = train(Dataset(X, Y, ["x0", "x1", "x2"], ["y0", "y1"], w), TrainConfig(solver="exact", cov_type="HC3"))
    Xnew = design(5, seed=12)
    for interval in KEYS:
        for a, b in zip(two.predict_interval(Xnew, interval), single.predict_interval(Xnew, interval)):
            np.testing.assert_allclose(a, b, rtol=1e-10)
    for t in range(2):
        check(
            *(a[:, t] for a in two.predict_interval(Xnew, "confidence")),
            reference(X, Y[:, t], Xnew, cov="HC3", w=w),
            "confidence",
        )
