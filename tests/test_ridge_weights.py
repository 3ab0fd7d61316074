"""Ridge (--l2) and sample weights, for both solvers, against scikit-learn and the exact optimum."""

import json

import numpy as np
import pytest

from gradreg.config import TrainConfig
from gradreg.io import Dataset
from gradreg.pipeline import train

from .conftest import ols


def data(n=300, p=5, q=2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p)) * np.logspace(-1, 2, p) + rng.normal(0, 5, p)
    X[:, 1] += 0.02 * X[:, 0]  # some correlation, so ridge matters
    Y = X @ rng.normal(size=(p, q)) + rng.normal(0, 3, (n, q)) + 4
    return Dataset(X, Y, [f"x{j}" for j in range(p)], [f"y{t}" for t in range(q)])


@pytest.mark.parametrize("l2", [0.01, 0.5, 3.0])
@pytest.mark.parametrize("intercept", [True, False])
def test_exact_ridge_matches_sklearn_convention(l2, intercept):
    """l2 · Σ (std_j β_j)² + MSE  ==  StandardScaler → Ridge(alpha = l2 · n) on Σ residual²."""
    from sklearn.linear_model import Ridge

    ds = data()
    m = train(ds, TrainConfig(solver="exact", l2=l2, fit_intercept=intercept))
    n = len(ds.X)
    if intercept:
        mu, sd = ds.X.mean(0), ds.X.std(0)
    else:  # without an intercept nothing is centered: the scale is the root mean square
        mu, sd = np.zeros(ds.X.shape[1]), np.sqrt((ds.X**2).mean(0))
    ref = Ridge(alpha=l2 * n, fit_intercept=intercept, solver="svd").fit((ds.X - mu) / sd, ds.Y)
    np.testing.assert_allclose(m.coef, ref.coef_ / sd, rtol=1e-9)
    icpt = ref.intercept_ - (ref.coef_ / sd) @ mu if intercept else np.zeros(2)
    np.testing.assert_allclose(m.intercept, icpt, rtol=1e-9, atol=1e-12)


def test_ridge_statistics_are_nan_not_garbage():
    m = train(data(), TrainConfig(solver="exact", l2=0.1))
    s = m.stats[m.target_names[0]]
    assert np.isnan(s["std_err"]).all() and np.isnan(s["f"])
    assert 0 < s["r2"] < 1


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_gd_converges_to_exact_ridge(optimizer):
    ds = data()
    exact = train(ds, TrainConfig(solver="exact", l2=0.5))
    gd = train(ds, TrainConfig(l2=0.5, epochs=100, optimizer=optimizer))
    assert gd.optimum["kind"] == "ridge objective"
    assert gd.optimum["mean_objective"] == pytest.approx(exact.optimum["mean_objective"], rel=1e-12)
    assert 0 <= gd.optimum["gap"] < 0.005
    # Coefficients along nearly flat directions may differ; predictions may not.
    diff = (ds.X @ gd.coef.T + gd.intercept) - (ds.X @ exact.coef.T + exact.intercept)
    assert np.abs(diff).max() < 0.05 * ds.Y.std()


def test_ridge_objective_value():
    ds = data(q=1)
    m = train(ds, TrainConfig(solver="exact", l2=0.7))
    resid = ds.Y[:, 0] - ds.X @ m.coef[0] - m.intercept[0]
    expected = (resid**2).mean() + 0.7 * ((ds.X.std(0) * m.coef[0]) ** 2).sum()
    assert m.optimum["mean_objective"] == pytest.approx(expected, rel=1e-12)
    # Any nearby point is worse: it is the minimum.
    for j in range(5):
        c = m.coef[0].copy()
        c[j] *= 1.001
        r = ds.Y[:, 0] - ds.X @ c - m.intercept[0]
        assert (r**2).mean() + 0.7 * ((ds.X.std(0) * c) ** 2).sum() > expected


def test_weighted_gd_converges_to_wls():
    ds = data(seed=3)
    ds.sample_weight = np.random.default_rng(3).uniform(0.1, 5, len(ds.X))
    gd = train(ds, TrainConfig(epochs=100))
    coef, icpt = ols(ds.X, ds.Y, ds.sample_weight)
    np.testing.assert_allclose(gd.optimum["coef"], coef, rtol=1e-9)
    assert 0 <= gd.optimum["gap"] < 0.005
    resid = ds.Y - ds.X @ gd.coef.T - gd.intercept
    wmse = (ds.sample_weight[:, None] * resid**2).sum(0) / ds.sample_weight.sum()
    np.testing.assert_allclose(gd.optimum["train_objective"], wmse, rtol=1e-10)


def test_integer_weights_equal_repeated_rows():
    ds = data(n=60, seed=4)
    w = np.random.default_rng(4).integers(1, 4, 60).astype(float)
    a = train(Dataset(ds.X, ds.Y, ds.feature_names, ds.target_names, w), TrainConfig(solver="exact"))
    rep = np.repeat(np.arange(60), w.astype(int))
    b = train(Dataset(ds.X[rep], ds.Y[rep], ds.feature_names, ds.target_names), TrainConfig(solver="exact"))
    np.testing.assert_allclose(a.coef, b.coef, rtol=1e-10)


def test_cli_weight_and_l2(cli, tmp_path):
    ds = data(n=50, p=2, q=1, seed=5)
    w = np.linspace(1, 2, 50)
    path = tmp_path / "d.csv"
    rows = ["a,b,y,w"] + [f"{float(x[0])!r},{float(x[1])!r},{float(y[0])!r},{float(wi)!r}" for x, y, wi in zip(ds.X, ds.Y, w)]
    path.write_text("\n".join(rows) + "\n")
    out = tmp_path / "m.safetensors"
    r = cli("train", path, "--target", "y", "--weight", "w", "--l2", "0.2", "--solver", "exact", "-o", out, "-q")
    assert r.code == 0, r.err
    model = json.loads(cli("inspect", out, "--json").out)
    ref = train(Dataset(ds.X, ds.Y, ["a", "b"], ["y"], w), TrainConfig(solver="exact", l2=0.2))
    np.testing.assert_allclose(model["coef"], ref.coef, rtol=1e-12)
    assert model["features"] == ["a", "b"] and model["config"]["l2"] == 0.2
