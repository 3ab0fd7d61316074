"""scikit-learn conformance: the estimator checks, and use inside scikit-learn's own tools."""

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import check_estimator, parametrize_with_checks

from gradreg import LinearRegressor
from gradreg.estimator import EXPECTED_FAILED_CHECKS

from .conftest import CROPS_X, CROPS_Y


def _expected_failures(est):
    return EXPECTED_FAILED_CHECKS[est.solver]


@parametrize_with_checks(
    [LinearRegressor(solver="gd"), LinearRegressor(solver="exact")],
    expected_failed_checks=_expected_failures,
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.mark.parametrize("solver", ["gd", "exact"])
def test_check_estimator_reports_only_the_documented_failures(solver):
    results = check_estimator(LinearRegressor(solver=solver), on_fail=None)
    failed = {r["check_name"] for r in results if r["status"] == "failed"}
    assert failed == set(EXPECTED_FAILED_CHECKS[solver])
    assert sum(r["status"] == "passed" for r in results) >= 50
    assert all(reason.strip() for reason in EXPECTED_FAILED_CHECKS[solver].values())


def _regression(n=200, p=4, q=1, seed=0, noise=0.1):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p)) * np.array([1, 10, 0.1, 100])[:p]
    B = rng.normal(size=(p, q))
    Y = X @ B + 3.0 + noise * rng.normal(size=(n, q))
    return X, Y[:, 0] if q == 1 else Y


def test_pipeline_matches_scikit_learn():
    X, y = _regression()
    ours = make_pipeline(StandardScaler(), LinearRegressor(solver="exact")).fit(X, y)
    ref = make_pipeline(StandardScaler(), LinearRegression()).fit(X, y)
    np.testing.assert_allclose(ours.predict(X), ref.predict(X), rtol=1e-10)
    np.testing.assert_allclose(ours[-1].coef_, ref[-1].coef_, rtol=1e-10)
    gd = make_pipeline(StandardScaler(), LinearRegressor(epochs=100, seed=1)).fit(X, y)
    assert gd.score(X, y) == pytest.approx(ref.score(X, y), abs=1e-4)


@pytest.mark.parametrize("solver", ["gd", "exact"])
def test_cross_val_score_matches_scikit_learn(solver):
    X, y = _regression(seed=2)
    cv = KFold(5, shuffle=True, random_state=0)
    ours = cross_val_score(LinearRegressor(solver=solver, epochs=100), X, y, cv=cv, scoring="neg_mean_squared_error")
    ref = cross_val_score(LinearRegression(), X, y, cv=cv, scoring="neg_mean_squared_error")
    np.testing.assert_allclose(ours, ref, rtol=1e-9 if solver == "exact" else 0.05)


def test_grid_search_over_lr_l2_and_solver():
    from sklearn.compose import TransformedTargetRegressor

    X, y = _regression(n=120, seed=3, noise=1.0)
    grid = {"solver": ["gd", "exact"], "lr": [0.01, 0.1], "l2": [0.0, 0.1]}
    cv = KFold(3, shuffle=True, random_state=0)
    search = GridSearchCV(LinearRegressor(epochs=30), grid, cv=cv).fit(X, y)
    scores = search.cv_results_["mean_test_score"]
    assert len(search.cv_results_["params"]) == 8 and np.isfinite(scores).all()
    # the penalty hurts on this well-conditioned problem, so an unpenalized fit wins
    assert search.best_params_["l2"] == 0.0
    assert isinstance(search.best_estimator_, LinearRegressor)
    # the exact ridge cells equal scikit-learn's Ridge on standardized X and y (alpha = n_train·l2)
    ridge = TransformedTargetRegressor(make_pipeline(StandardScaler(), Ridge(alpha=80 * 0.1)), transformer=StandardScaler())
    ref = cross_val_score(ridge, X, y, cv=cv).mean()
    for i, prm in enumerate(search.cv_results_["params"]):
        if prm["solver"] == "exact" and prm["l2"] == 0.1:
            assert scores[i] == pytest.approx(ref, rel=1e-10)


def test_exact_ridge_equals_scikit_learn_ridge_on_standardized_data():
    X, y = _regression(n=80, seed=4)
    l2 = 0.3
    ours = LinearRegressor(solver="exact", l2=l2).fit(X, y)
    Z = (X - X.mean(0)) / X.std(0)
    ref = Ridge(alpha=l2 * len(X)).fit(Z, (y - y.mean()) / y.std())
    np.testing.assert_allclose(ours.coef_ * X.std(0) / y.std(), ref.coef_, rtol=1e-9)


def test_several_targets_in_one_model_without_multioutput_regressor():
    X, Y = _regression(q=3, seed=5)
    ours = LinearRegressor(solver="exact").fit(X, Y)
    ref = LinearRegression().fit(X, Y)
    assert ours.predict(X).shape == (200, 3)
    np.testing.assert_allclose(ours.coef_, ref.coef_, rtol=1e-10)
    np.testing.assert_allclose(ours.intercept_, ref.intercept_, rtol=1e-10)
    cv = cross_val_score(LinearRegressor(solver="exact"), X, Y, cv=3)
    np.testing.assert_allclose(cv, cross_val_score(LinearRegression(), X, Y, cv=3), rtol=1e-10)


def test_get_set_params_clone_and_repr_follow_scikit_learn():
    est = LinearRegressor(solver="exact", l2=0.5)
    assert est.get_params()["l2"] == 0.5 and est.get_params()["solver"] == "exact"
    assert est.set_params(lr=0.1, epochs=7) is est and est.lr == 0.1 and est.epochs == 7
    with pytest.raises(ValueError, match="Invalid parameter 'learning_rate'"):
        est.set_params(learning_rate=1)
    twin = clone(est.fit(CROPS_X, CROPS_Y))
    assert twin.get_params() == est.get_params() and not hasattr(twin, "coef_")
    assert repr(LinearRegressor()) == "LinearRegressor()"
    assert repr(est) == "LinearRegressor(epochs=7, l2=0.5, lr=0.1, solver='exact')"
    # the pipeline repr nests ours like any scikit-learn estimator
    assert "LinearRegressor(solver='exact')" in repr(make_pipeline(StandardScaler(), LinearRegressor(solver="exact")))


def test_feature_names_from_dataframes_and_scikit_learn_errors():
    df = pd.DataFrame(CROPS_X, columns=["temperature", "rainfall", "humidity"])
    est = LinearRegressor(solver="exact").fit(df, CROPS_Y[:, 0])
    assert list(est.feature_names_in_) == ["temperature", "rainfall", "humidity"] and est.n_features_in_ == 3
    ref = LinearRegression().fit(df, CROPS_Y[:, 0])
    renamed = df.rename(columns={"rainfall": "rain"})
    with pytest.raises(ValueError) as ours_err:
        est.predict(renamed)
    with pytest.raises(ValueError) as ref_err:
        ref.predict(renamed)
    assert str(ours_err.value) == str(ref_err.value)
    assert "Feature names unseen at fit time:\n- rain" in str(ours_err.value)
    with pytest.warns(UserWarning, match="X does not have valid feature names, but LinearRegressor was fitted with"):
        est.predict(CROPS_X)
    with pytest.raises(ValueError, match="X has 2 features, but LinearRegressor is expecting 3 features as input"):
        est.predict(CROPS_X[:, :2])


def test_html_repr_is_the_coefficient_table():
    est = LinearRegressor(solver="exact")
    assert "LinearRegressor" in est._repr_html_()  # unfitted: scikit-learn's diagram
    est.fit(
        pd.DataFrame(CROPS_X, columns=["temperature", "rainfall", "humidity"]),
        pd.DataFrame(CROPS_Y, columns=["mangoes", "oranges"]),
    )
    html = est._repr_html_()
    assert "<table" in html and "rainfall" in html and "oranges" in html
    assert f"{est.coef_[1, 1]:.6g}"[:6] in html
    bundle = est._repr_mimebundle_()
    assert bundle["text/html"] == html and bundle["text/plain"] == repr(est)


def test_summary_prints_like_statsmodels():
    sm = pytest.importorskip("statsmodels.api")
    df = pd.DataFrame(CROPS_X, columns=["temperature", "rainfall", "humidity"])
    est = LinearRegressor(solver="exact").fit(df, pd.Series(CROPS_Y[:, 0], name="mangoes"))
    s = est.summary()
    text = str(s)
    ref = sm.OLS(CROPS_Y[:, 0], sm.add_constant(CROPS_X)).fit()
    assert "Dep. variable:" in text and "mangoes" in text and "R-squared:" in text
    assert f"{ref.rsquared:.4f}" in text
    for b, se in zip(ref.params, ref.bse):
        assert f"{b:.4g}"[:5] in text and f"{se:.4g}"[:5] in text
    assert "<table" in s._repr_html_() and s.as_text() == text == repr(s)
    with pytest.raises(ValueError, match="target 'apples' is not one of"):
        est.summary("apples")


def test_loaded_models_show_the_same_tables(tmp_path):
    import gradreg
    from gradreg.fitted import FittedModel

    df = pd.DataFrame(CROPS_X, columns=["temperature", "rainfall", "humidity"])
    est = LinearRegressor(solver="exact").fit(df, pd.Series(CROPS_Y[:, 0], name="mangoes"))
    path = str(tmp_path / "m.safetensors")
    est.save(path)
    loaded = gradreg.load(path)
    assert repr(loaded) == "LinearRegressor(solver='exact')"
    assert loaded._repr_html_() == est._repr_html_()
    raw = FittedModel.load(path)
    assert repr(raw) == "<FittedModel exact: mangoes ~ temperature, rainfall, humidity (15 rows)>"
    assert "<table" in raw._repr_html_() and "humidity" in raw._repr_html_()
    assert str(loaded.summary()) == str(est.summary())
