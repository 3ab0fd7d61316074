"""Trust in real use: exact fits, a model file's input schema, one shape for the statistics."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from gradreg import LinearRegressor, load
from gradreg.fitted import FittedModel
from gradreg.io.formats import builtin_path

from .conftest import ols, write

sm = pytest.importorskip("statsmodels.api", reason="statsmodels is the reference for the statistics")

COVS = ["nonrobust", "HC0", "HC1", "HC2", "HC3"]
CROPS_EXACT = ("train", "crops", "--target", "mangoes", "--features", "temperature,rainfall,humidity", "--solver", "exact")


def exact_fit_sets():
    """Data sets whose least-squares residuals are exactly zero: (name, X, y, fit_intercept)."""
    rng = np.random.default_rng(3)
    X3 = rng.normal(size=(40, 3)) * [1.0, 10.0, 0.1] + [5.0, -2.0, 100.0]
    return [
        ("line", np.array([[1.0], [2.0], [3.0], [4.0]]), np.array([3.0, 5.0, 7.0, 9.0]), True),
        ("plane", X3, X3 @ [2.0, -0.5, 30.0] + 7.0, True),
        ("no intercept", X3, X3 @ [1.5, 0.25, -4.0], False),
        ("integers", np.arange(1.0, 21.0)[:, None] ** [1, 2], 3 * np.arange(1.0, 21.0) ** 2 - np.arange(1.0, 21.0) + 11, True),
    ]


@pytest.mark.parametrize("cov", COVS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("name, X, y, intercept", exact_fit_sets(), ids=[s[0] for s in exact_fit_sets()])
def test_exact_fit_gives_coefficients_and_degenerate_statistics(name, X, y, intercept, cov, weighted):
    w = np.linspace(0.5, 2.0, len(X)) if weighted else None
    est = LinearRegressor(solver="exact", cov_type=cov, fit_intercept=intercept).fit(X, y, sample_weight=w)
    coef, icpt = ols(X, y, w, intercept=intercept)
    np.testing.assert_allclose(est.coef_, coef[0], rtol=1e-9, atol=1e-9)
    assert est.intercept_ == pytest.approx(icpt[0], rel=1e-9, abs=1e-9)
    s = est.model_.stats["y"]
    # statsmodels on the same data: its "standard errors" are rounding noise, its F astronomically large
    A = sm.add_constant(X) if intercept else X
    res = (sm.WLS(y, A, weights=w) if weighted else sm.OLS(y, A)).fit(cov_type=cov)
    np.testing.assert_allclose(s["coef"], res.params, rtol=1e-9, atol=1e-9)
    assert np.all(np.abs(res.bse) < 1e-9 * np.maximum(np.abs(res.params), 1))
    assert res.rsquared == pytest.approx(1.0, abs=1e-12)
    # gradreg's: σ = 0, standard errors 0, intervals on the estimates, t infinite, p 0, F infinite
    assert s["sigma"] == 0.0 and s["r2"] == 1.0 and s["r2_adj"] == 1.0
    np.testing.assert_array_equal(s["std_err"], 0.0)
    np.testing.assert_array_equal(s["ci_low"], s["coef"])
    np.testing.assert_array_equal(s["ci_high"], s["coef"])
    assert np.all(np.isinf(s["t"][s["coef"] != 0])) and np.all(s["p"][s["coef"] != 0] == 0.0)
    assert s["f"] == math.inf and s["f_p"] == 0.0
    assert s["llf"] == math.inf and s["aic"] == -math.inf and s["bic"] == -math.inf


@pytest.mark.parametrize("name, X, y, intercept", exact_fit_sets(), ids=[s[0] for s in exact_fit_sets()])
def test_exact_fit_by_gradient_descent_does_not_crash(name, X, y, intercept):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a ConvergenceWarning is allowed here; a crash is not
        est = LinearRegressor(fit_intercept=intercept, dtype="float64").fit(X, y)
    s = est.model_.stats["y"]
    assert np.isfinite(est.coef_).all() and s["r2"] == pytest.approx(1.0, abs=1e-6)
    assert est.model_.optimum["mean_objective"] < 1e-20


def test_constant_target_is_an_exact_fit():
    X = np.arange(10.0)[:, None]
    est = LinearRegressor(solver="exact").fit(X, np.full(10, 4.0))
    s = est.model_.stats["y"]
    assert est.coef_[0] == pytest.approx(0.0, abs=1e-12) and est.intercept_ == pytest.approx(4.0)
    assert s["sigma"] == 0.0 and math.isnan(s["r2"])  # statsmodels: 1 - 0/0


def test_exact_fit_statistics_survive_save_load_and_json(tmp_path):
    X, y = np.array([[1.0], [2.0], [3.0], [4.0]]), np.array([3.0, 5.0, 7.0, 9.0])
    est = LinearRegressor(solver="exact").fit(X, y)
    est.save(tmp_path / "m.safetensors")
    back = FittedModel.load(str(tmp_path / "m.safetensors"))
    s = back.stats["y"]
    assert s["f"] == math.inf and s["llf"] == math.inf and s["aic"] == -math.inf
    j = json.loads(json.dumps(back.to_json(), allow_nan=False))  # strict JSON
    assert j["stats"]["y"]["f"] == "inf" and j["stats"]["y"]["t"] == ["inf", "inf"]


def test_cli_trains_and_inspects_an_exact_fit(cli, tmp_path):
    data = write(tmp_path / "exact.csv", "x,y\n1,3\n2,5\n3,7\n4,9\n")
    for solver in ("exact", "gd"):
        out = tmp_path / f"{solver}.safetensors"
        r = cli("train", data, "--target", "y", "--solver", solver, "-o", out)
        assert r.code == 0, r.err
        assert "Traceback" not in r.err and out.exists()
    r = cli("inspect", tmp_path / "exact.safetensors")
    assert r.code == 0 and "inf" in r.out
    r = cli("predict", tmp_path / "exact.safetensors", data)
    assert r.code == 0 and [float(v) for v in r.out.split()[1:]] == pytest.approx([3, 5, 7, 9])


# -- the model file's schema: a loaded model predicts by column name, or refuses ---------------------


@pytest.fixture
def frame():
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.normal(size=40), "b": rng.normal(size=40) * 5, "c": rng.integers(0, 9, 40)})
    y = 2 * df.a - 0.3 * df.b + df.c + rng.normal(size=40) * 0.1
    return df, y


@pytest.mark.parametrize("solver", ["exact", "gd"])
def test_loaded_estimator_refuses_reordered_columns_like_the_saved_one(frame, tmp_path, solver):
    df, y = frame
    est = LinearRegressor(solver=solver).fit(df, y)
    est.save(tmp_path / "m.safetensors")
    loaded = load(tmp_path / "m.safetensors")
    np.testing.assert_array_equal(loaded.feature_names_in_, ["a", "b", "c"])
    np.testing.assert_allclose(loaded.predict(df), est.predict(df), rtol=1e-15)
    for model in (est, loaded):
        with pytest.raises(ValueError, match="feature names should match"):
            model.predict(df[["c", "a", "b"]])


def test_cli_model_loaded_in_python_refuses_reordered_columns(cli, tmp_path):
    pd = pytest.importorskip("pandas")
    path = tmp_path / "m.safetensors"
    assert cli(*CROPS_EXACT, "-o", path).code == 0
    loaded = load(path)
    df = pd.read_csv(builtin_path("crops"))
    X = df[["temperature", "rainfall", "humidity"]]
    ref = X.to_numpy() @ np.atleast_2d(loaded.coef_).T + loaded.intercept_  # a CLI model's targets are 2-D
    np.testing.assert_allclose(loaded.predict(X).reshape(ref.shape), ref, rtol=1e-12)
    with pytest.raises(ValueError, match="feature names should match"):
        loaded.predict(X[["humidity", "temperature", "rainfall"]])


def test_fitted_model_predicts_tables_by_name(frame, tmp_path):
    pa = pytest.importorskip("pyarrow")
    df, y = frame
    est = LinearRegressor(solver="exact").fit(df, y)
    est.save(tmp_path / "m.safetensors")
    m = FittedModel.load(str(tmp_path / "m.safetensors"))
    ref = df[["a", "b", "c"]].to_numpy() @ est.coef_ + est.intercept_
    shuffled = df[["c", "a", "b"]].assign(extra="text")
    np.testing.assert_allclose(m.predict(shuffled)[:, 0], ref, rtol=1e-12)
    np.testing.assert_allclose(m.predict(pa.Table.from_pandas(shuffled))[:, 0], ref, rtol=1e-12)
    np.testing.assert_allclose(m.predict({k: df[k].to_numpy() for k in "cba"})[:, 0], ref, rtol=1e-12)
    from gradreg.errors import DataError

    with pytest.raises(DataError, match="lacks the model's feature column\\(s\\) 'b'"):
        m.predict(df[["a", "c"]])


def test_schema_records_names_order_and_dtypes(frame, cli, tmp_path):
    df, y = frame
    est = LinearRegressor(solver="exact").fit(df, y)
    schema = est.model_.schema
    assert [c["name"] for c in schema["features"]] == ["a", "b", "c"]
    assert [c["dtype"] for c in schema["features"]] == ["float64", "float64", "int64"]
    assert schema["named"] is True
    arr = LinearRegressor(solver="exact").fit(df.to_numpy(dtype=float), y.to_numpy())
    arr.save(tmp_path / "a.safetensors")
    assert load(tmp_path / "a.safetensors").model_.schema["named"] is False
    assert not hasattr(load(tmp_path / "a.safetensors"), "feature_names_in_")
    path = tmp_path / "c.safetensors"
    assert cli(*CROPS_EXACT, "-o", path).code == 0
    j = json.loads(cli("inspect", path, "--json").out)
    assert j["schema"]["features"] == [
        {"name": "temperature", "dtype": "int64"},
        {"name": "rainfall", "dtype": "int64"},
        {"name": "humidity", "dtype": "int64"},
    ]


def test_statistics_have_one_shape_in_python_and_json(cli, tmp_path):
    path = tmp_path / "m.safetensors"
    assert cli("train", "crops", "--target", "mangoes,oranges", "--solver", "exact", "-o", path).code == 0
    model = FittedModel.load(str(path))
    j = json.loads(cli("inspect", path, "--json").out)
    assert list(model.stats) == list(j["stats"]) == ["mangoes", "oranges"]
    for t in model.target_names:
        assert set(model.stats[t]) == set(j["stats"][t])
        assert j["stats"][t]["terms"] == ["intercept", "temperature", "rainfall", "humidity"]
        np.testing.assert_allclose(j["stats"][t]["coef"], model.stats[t]["coef"], rtol=1e-15)
        np.testing.assert_allclose(model.stats[t]["coef"][1:], model.coef[model.target_names.index(t)], rtol=1e-15)


def test_more_features_than_rows_says_underdetermined(cli, tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(5, 20))
    header = ",".join(f"x{j}" for j in range(20)) + ",y\n"
    rows = "".join(",".join(f"{v:.6f}" for v in row) + f",{i}\n" for i, row in enumerate(X))
    data = write(tmp_path / "wide.csv", header + rows)
    for solver in ("exact", "gd"):
        out = tmp_path / f"{solver}.safetensors"
        r = cli("train", data, "--target", "y", "--solver", solver, "-o", out)
        assert r.code == 0 and out.exists()
        assert "underdetermined: 5 row(s) for 21 coefficients (fewer rows than coefficients)" in r.err
        assert "collinear columns" not in r.err
    m = FittedModel.load(str(tmp_path / "exact.safetensors"))
    np.testing.assert_allclose(m.predict(X)[:, 0], np.arange(5.0), atol=1e-5)  # it interpolates the (rounded) rows


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_predict_drop_missing_keeps_rows_aligned(cli, tmp_path, fmt):
    model = tmp_path / "m.safetensors"
    assert cli("train", "crops", "--target", "mangoes,oranges", "--solver", "exact", "-q", "-o", model).code == 0
    data = write(tmp_path / "new.csv", "temperature,rainfall,humidity\n73,67,43\n91,,64\n87,134,58\n,43,37\n")
    args = ["predict", model, data, "--drop-missing"]
    out = tmp_path / "p.parquet"
    args += {"csv": [], "json": ["--json"], "parquet": ["-o", out]}[fmt]
    r = cli(*args)
    assert r.code == 0
    assert "note: 2 row(s) with a missing feature value got empty predictions (line 3, line 5)" in r.err
    m = FittedModel.load(str(model))
    ref = m.predict(np.array([[73.0, 67, 43], [87, 134, 58]]))
    if fmt == "csv":
        lines = r.out.splitlines()
        assert lines[0] == "mangoes,oranges" and lines[2] == lines[4] == ","
        got = np.array([[float(v) for v in lines[i].split(",")] for i in (1, 3)])
    elif fmt == "json":
        rows = [json.loads(ln) for ln in r.out.splitlines()]
        assert len(rows) == 4 and rows[1] == rows[3] == {"mangoes": None, "oranges": None}
        got = np.array([[rows[i]["mangoes"], rows[i]["oranges"]] for i in (0, 2)])
    else:
        import pyarrow.parquet as pq

        t = pq.read_table(out)
        assert t.num_rows == 4 and t.column("mangoes").null_count == 2
        got = np.column_stack([t.column(c).to_numpy(zero_copy_only=False) for c in ("mangoes", "oranges")])[[0, 2]]
    np.testing.assert_allclose(got, ref, rtol=1e-15)


def test_python_refuses_text_and_date_columns_by_name():
    pd = pytest.importorskip("pandas")
    from gradreg.errors import DataError

    d = pd.DataFrame({"x": [1.0, 2, 3, 4], "city": ["Oslo", "Rome", "Oslo", "Rome"], "y": [1.0, 2, 3, 5]})
    d["when"] = pd.date_range("2024-01-01", periods=4)
    # a DataFrame's text column is categorical (issue 14): one-hot encoded, as statsmodels' formula would
    est = LinearRegressor(solver="exact").fit(d[["x", "city"]], d.y)
    assert est.model_.feature_names == ["x", "city[T.Rome]"]
    with pytest.raises(DataError, match=r"^X, column 'when': .*dates or times are not numbers"):
        LinearRegressor(solver="exact").fit(d[["x", "when"]], d.y)
    with pytest.raises(DataError, match=r"^y: expected numbers"):
        LinearRegressor(solver="exact").fit(d[["x"]], d.city)
    est = LinearRegressor(solver="exact").fit(d[["x"]], d.y)
    with pytest.raises(DataError, match=r"^X, column 'x': expected numbers"):
        est.predict(d[["city"]].rename(columns={"city": "x"}))


@pytest.mark.parametrize("name", ["m.pkl", "m.joblib", "model", "folder"])
def test_save_refuses_a_folder_or_another_suffix(tmp_path, name):
    from gradreg.errors import ConfigError

    (tmp_path / "folder").mkdir()
    est = LinearRegressor(solver="exact").fit([[0.0], [1.0], [2.0]], [1.0, 3.0, 5.5])
    with pytest.raises(ConfigError, match="is a folder" if name == "folder" else "must end in .safetensors"):
        est.save(tmp_path / name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]  # nothing written
