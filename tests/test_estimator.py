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
    with pytest.raises(ValueError, match="--lr must be a positive number"):
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
