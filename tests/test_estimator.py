"""The Python API: scikit-learn conventions over the same solvers."""

import numpy as np
import pytest
import torch

import gradreg
from gradreg import LinearRegressor

from .conftest import CROPS_X, CROPS_Y, ols


def test_init_is_keyword_only_and_stores_only():
    with pytest.raises(TypeError):
        LinearRegressor("exact")  # type: ignore[misc]
    est = LinearRegressor(lr=-1)  # validated in fit, not here
    assert est.get_params()["lr"] == -1
    with pytest.raises(ValueError, match="lr must be a positive number; got lr=-1"):
        est.fit(CROPS_X, CROPS_Y)


@pytest.mark.parametrize("solver", ["gd", "exact"])
def test_fit_predict_score_shapes(solver):
    est = LinearRegressor(solver=solver, batch_size=3)
    assert est.fit(CROPS_X, CROPS_Y) is est
    assert est.coef_.shape == (2, 3) and est.intercept_.shape == (2,)
    assert est.predict(CROPS_X).shape == (15, 2)
    coef, icpt = ols(CROPS_X, CROPS_Y)
    np.testing.assert_allclose(est.coef_, coef, rtol=0.05 if solver == "gd" else 1e-10, atol=0.02 if solver == "gd" else 0)
    from sklearn.metrics import r2_score

    assert est.score(CROPS_X, CROPS_Y) == pytest.approx(r2_score(CROPS_Y, est.predict(CROPS_X)), rel=1e-12)


def test_one_dimensional_y_gives_one_dimensional_output():
    est = LinearRegressor(solver="exact").fit(CROPS_X, CROPS_Y[:, 0])
    assert est.coef_.shape == (3,) and isinstance(est.intercept_, float)
    assert est.predict(CROPS_X).shape == (15,)


def test_tensor_and_dataframe_inputs():
    import pandas as pd

    df = pd.DataFrame(CROPS_X, columns=["temperature", "rainfall", "humidity"])
    a = LinearRegressor(solver="exact").fit(df, pd.Series(CROPS_Y[:, 0], name="mangoes"))
    b = LinearRegressor(solver="exact").fit(torch.tensor(CROPS_X), torch.tensor(CROPS_Y[:, 0]))
    np.testing.assert_allclose(a.coef_, b.coef_, rtol=1e-12)
    assert list(a.feature_names_in_) == ["temperature", "rainfall", "humidity"]
    assert a.model_.target_names == ["mangoes"]
    assert not hasattr(b, "feature_names_in_") and a.n_features_in_ == 3


def test_predict_before_fit():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        LinearRegressor().predict(CROPS_X)


def test_save_and_load(tmp_path):
    est = LinearRegressor(solver="exact").fit(CROPS_X, CROPS_Y[:, 0])
    path = str(tmp_path / "m.safetensors")
    est.save(path)
    loaded = gradreg.load(path)
    assert loaded.solver == "exact"
    np.testing.assert_array_equal(loaded.predict(CROPS_X), est.predict(CROPS_X))
    assert loaded.predict(CROPS_X).ndim == 1


def test_sample_weight_matches_weighted_lstsq():
    w = np.linspace(0.5, 2, 15)
    est = LinearRegressor(solver="exact").fit(CROPS_X, CROPS_Y, sample_weight=w)
    coef, icpt = ols(CROPS_X, CROPS_Y, w)
    np.testing.assert_allclose(est.coef_, coef, rtol=1e-10)
    np.testing.assert_allclose(est.intercept_, icpt, rtol=1e-10)


def test_bad_arrays():
    from gradreg.errors import DataError

    with pytest.raises(DataError, match=r"X, row 1, column 0: values must be finite \(not NaN or inf\); got nan"):
        LinearRegressor().fit(np.array([[np.nan], [1.0]]), np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"inconsistent numbers of samples: \[2, 3\]"):
        LinearRegressor().fit(np.ones((2, 1)), np.ones(3))
    with pytest.raises(ValueError, match=r"Found array with 1 sample\(s\) \(shape=\(1, 1\)\) while a minimum of 2 is required"):
        LinearRegressor().fit(np.ones((1, 1)), np.ones(1))


def test_exact_partial_fit_equals_one_fit_on_all_rows():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1000, 3)) * [1, 100, 0.01] + [5, 0, 3]
    Y = X @ np.array([[1.0, 0.02, 50], [2, -0.01, 3]]).T + rng.normal(size=(1000, 2))
    w = rng.uniform(0.5, 2, size=1000)
    inc = LinearRegressor(solver="exact")
    for start in range(0, 1000, 137):  # uneven batches, the first smaller than the features + 2
        inc.partial_fit(X[start : start + 137], Y[start : start + 137], sample_weight=w[start : start + 137])
    whole = LinearRegressor(solver="exact").fit(X, Y, sample_weight=w)
    np.testing.assert_allclose(inc.coef_, whole.coef_, rtol=1e-10)
    np.testing.assert_allclose(inc.intercept_, whole.intercept_, rtol=1e-10)
    for a, b in zip(inc.model_.stats.values(), whole.model_.stats.values()):
        for key in ("std_err", "t", "p", "ci_low", "ci_high"):
            np.testing.assert_allclose(a[key], b[key], rtol=1e-8)
        assert a["r2"] == pytest.approx(b["r2"], rel=1e-10)
    np.testing.assert_allclose(inc.model_.metrics["train"]["mse"], whole.model_.metrics["train"]["mse"], rtol=1e-8)
    # after fit, partial_fit merges into the same factor: fit(first half) + partial_fit(second) = fit(all)
    half = LinearRegressor(solver="exact").fit(X[:500], Y[:500], sample_weight=w[:500])
    half.partial_fit(X[500:], Y[500:], sample_weight=w[500:])
    np.testing.assert_allclose(half.coef_, whole.coef_, rtol=1e-10)


def test_gd_partial_fit_converges_and_checks_shapes():
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(1)
    X = rng.normal(size=(4000, 3)) * [1, 10, 100]
    y = X @ np.array([1.0, 0.1, 0.01]) + 2 + 0.1 * rng.normal(size=4000)
    est = LinearRegressor(batch_size=32)
    for _ in range(5):
        for start in range(0, 4000, 500):
            est.partial_fit(X[start : start + 500], y[start : start + 500])
    ref = LinearRegression().fit(X, y)
    np.testing.assert_allclose(est.coef_, ref.coef_, rtol=0.02)
    assert est.n_iter_ == 40 and est.coef_.shape == (3,)
    with pytest.raises(ValueError, match="X has 2 features, but LinearRegressor is expecting 3 features"):
        est.partial_fit(X[:10, :2], y[:10])
    with pytest.raises(ValueError, match="cov_type='HC3' needs a pass over every row"):
        LinearRegressor(solver="exact", cov_type="HC3").partial_fit(X, y)
    fitted = LinearRegressor(epochs=20).fit(X, y)
    before = fitted.score(X, y)
    fitted.partial_fit(X, y)  # continues from the fit instead of starting over
    assert fitted.score(X, y) == pytest.approx(before, abs=1e-3)
