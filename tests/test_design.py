"""Categorical columns and formulas: numbers against statsmodels' formula API, in memory,
streamed and on 2 ranks, from the CLI and from Python; unseen levels; model files that must not
run code."""

import json
import os
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

import gradreg
from gradreg import LinearRegressor
from gradreg.errors import ConfigError, DataError, ModelFileError
from gradreg.fitted import FittedModel

MESSY = Path(__file__).parent / "data" / "messy"
GRUNFELD = MESSY / "grunfeld.csv"  # statsmodels.datasets.grunfeld: 10 firms (text) x 20 years


@pytest.fixture(scope="module")
def grunfeld() -> pd.DataFrame:
    return pd.read_csv(GRUNFELD)


def _sm_name(name: str) -> str:
    """gradreg's --categorical term as statsmodels' formula names it: firm[T.IBM] is C(firm)[T.IBM]."""
    return name if name.startswith(("C(", "np.")) or "[" not in name else "C(" + name.replace("[", ")[", 1)


def _close(actual, desired, rtol: float = 1e-8) -> None:
    """Equal to rtol, relative to the largest value (a prediction near 0 has no relative digits)."""
    desired = np.asarray(desired)
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=rtol * np.abs(desired).max())


def _check(model: FittedModel, res, target: str, rtol: float = 1e-8, rename=None) -> None:
    """Coefficients, standard errors and the intercept equal statsmodels' to rtol."""
    names = [(rename or {}).get(n, _sm_name(n)) for n in model.feature_names]
    t = model.target_names.index(target)
    np.testing.assert_allclose(model.coef[t], res.params[names].to_numpy(), rtol=rtol, atol=1e-10)
    stats = model.stats[target]
    k = 1 if "Intercept" in res.params.index else 0
    if k:
        np.testing.assert_allclose(model.intercept[t], res.params["Intercept"], rtol=rtol)
        np.testing.assert_allclose(stats["std_err"][0], res.bse["Intercept"], rtol=rtol)
    np.testing.assert_allclose(stats["std_err"][k:], res.bse[names].to_numpy(), rtol=rtol)


def _train(cli, *args) -> FittedModel:
    r = cli("train", *map(str, args), "--solver", "exact", "-q")
    assert r.code == 0, r.err
    out = args[args.index("-o") + 1]
    return FittedModel.load(str(out))


# -- categorical columns ------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_categorical_cli_matches_statsmodels_weighted_hc3(cli, tmp_path, grunfeld, stream):
    out = tmp_path / "m.safetensors"
    data = grunfeld.assign(w=np.linspace(0.5, 2.0, len(grunfeld)))
    path = tmp_path / "g.csv"
    data.to_csv(path, index=False)
    extra = ["--stream", "--chunk-rows", "7"] if stream else []
    model = _train(
        cli, path, "--target", "invest", "--features", "value,capital", "--categorical", "firm",
        "--weight", "w", "--cov", "HC3", "-o", out, *extra,
    )  # fmt: skip
    assert model.feature_names[:3] == ["value", "capital", "firm[T.Atlantic Refining]"]  # 'American Steel' is the reference
    res = smf.wls("invest ~ value + capital + C(firm)", data, weights=data.w).fit(cov_type="HC3")
    _check(model, res, "invest")
    assert model.info.get("streamed", False) is stream


def test_categorical_reference_and_no_intercept(cli, tmp_path, grunfeld):
    out = tmp_path / "m.safetensors"
    model = _train(
        cli, GRUNFELD, "--target", "invest", "--features", "value", "--categorical", "firm", "--reference", "IBM", "-o", out
    )
    res = smf.ols("invest ~ value + C(firm, Treatment(reference='IBM'))", grunfeld).fit()
    assert "firm[T.IBM]" not in model.feature_names and "firm[T.American Steel]" in model.feature_names
    sm = {n.split("[")[-1]: v for n, v in res.params.items()}
    np.testing.assert_allclose(model.coef[0][1:], [sm[n.split("[")[-1]] for n in model.feature_names[1:]], rtol=1e-8)
    # without an intercept every level has its own dummy, as statsmodels' '- 1' gives
    out2 = tmp_path / "m2.safetensors"
    model = _train(
        cli, GRUNFELD, "--target", "invest", "--features", "value", "--categorical", "firm", "--no-intercept", "-o", out2
    )
    res = smf.ols("invest ~ value + C(firm) - 1", grunfeld).fit()
    assert "firm[IBM]" in model.feature_names
    _check(model, res, "invest")


def test_predict_applies_the_levels_and_refuses_unseen_ones(cli, tmp_path, grunfeld):
    out = tmp_path / "m.safetensors"
    model = _train(cli, GRUNFELD, "--target", "invest", "--features", "value,capital", "--categorical", "firm", "-o", out)
    res = smf.ols("invest ~ value + capital + C(firm)", grunfeld).fit()
    r = cli("predict", out, GRUNFELD)
    assert r.code == 0, r.err
    got = np.loadtxt(r.out.splitlines()[1:])
    _close(got, res.fittedvalues, 1e-9)
    new = tmp_path / "new.csv"
    grunfeld.head(3).assign(firm=["IBM", "Acme", "IBM"]).to_csv(new, index=False)
    r = cli("predict", out, new)
    assert r.code != 0
    assert r.err.startswith(f"Error: {new}, line 3, column 'firm': level 'Acme' of categorical column 'firm' was not seen")
    assert "'American Steel', 'Atlantic Refining'" in r.err and "--unknown ignore" in r.err
    assert not r.out
    r = cli("predict", out, new, "--unknown", "ignore")
    assert r.code == 0, r.err
    got = np.loadtxt(r.out.splitlines()[1:])
    row = grunfeld.iloc[1]
    reference = model.intercept[0] + model.coef[0][0] * row.value + model.coef[0][1] * row.capital  # every dummy 0
    np.testing.assert_allclose(got[1], reference, rtol=1e-12)
    np.testing.assert_allclose(got[[0, 2]], model.predict(grunfeld.head(3).assign(firm="IBM"))[[0, 2], 0], rtol=1e-12)


def test_too_many_levels_is_refused_with_the_count(cli, tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "ids.csv"
    pd.DataFrame({"id": [f"c{i}" for i in range(60)], "x": rng.normal(size=60), "y": rng.normal(size=60)}).to_csv(
        path, index=False
    )
    r = cli("train", path, "--target", "y", "--categorical", "id", "--max-levels", "50", "--solver", "exact")
    assert r.code != 0
    assert "column 'id': 60 levels, more than 50 (--max-levels)" in r.err


def test_text_column_is_left_out_with_a_hint_unless_categorical(cli, tmp_path):
    out = tmp_path / "m.safetensors"
    r = cli(
        "train",
        MESSY / "shops.csv",
        "--target",
        "sales",
        "--features",
        "size m2",
        "--drop-missing",
        "--solver",
        "exact",
        "-o",
        out,
    )
    assert r.code == 0, r.err
    r = cli("train", MESSY / "shops.csv", "--target", "sales", "--features", "city", "--solver", "exact", "-o", out)
    assert r.code != 0 and "(--categorical city one-hot encodes it)" in r.err
    r = cli(
        "train",
        MESSY / "shops.csv",
        "--target",
        "sales",
        "--exclude",
        "shop,opened",
        "--drop-missing",
        "--solver",
        "exact",
        "-o",
        out,
    )
    assert "note: left out column 'city': it holds no numbers (--categorical city one-hot encodes it)" in r.err
    # the missing sales cell is named, then dropped on request
    r = cli("train", MESSY / "shops.csv", "--target", "sales", "--features", "size m2", "--categorical", "city", "-o", out)
    assert r.code != 0 and "shops.csv, line 7, column 'sales': missing value" in r.err
    model = _train(
        cli,
        MESSY / "shops.csv",
        "--target",
        "sales",
        "--features",
        "size m2",
        "--categorical",
        "city",
        "--drop-missing",
        "-o",
        out,
    )
    df = pd.read_csv(MESSY / "shops.csv").dropna()
    _check(model, smf.ols("sales ~ Q('size m2') + C(city)", df).fit(), "sales", rename={"size m2": "Q('size m2')"})


# -- formulas -----------------------------------------------------------------------------------

FORMULAS = [
    "invest ~ np.log(value) + capital + C(firm) + value:capital",
    "invest ~ value * capital + np.sqrt(capital) + C(year)",
    "invest ~ np.log(value) + C(firm) - 1",
]


@pytest.mark.parametrize("formula", FORMULAS)
def test_formula_cli_matches_statsmodels(cli, tmp_path, grunfeld, formula):
    out = tmp_path / "m.safetensors"
    model = _train(cli, GRUNFELD, "--formula", formula, "-o", out)
    res = smf.ols(formula, grunfeld).fit()
    _check(model, res, "invest")
    assert model.config["fit_intercept"] is ("- 1" not in formula)
    r = cli("predict", out, GRUNFELD)
    _close(np.loadtxt(r.out.splitlines()[1:]), res.fittedvalues)
    r = cli("evaluate", out, GRUNFELD, "--json")
    assert r.code == 0, r.err
    np.testing.assert_allclose(json.loads(r.out)["metrics"]["mse"][0], res.ssr / len(grunfeld), rtol=1e-8)


def test_formula_streamed_equals_in_memory(cli, tmp_path):
    formula = FORMULAS[0]
    a = _train(cli, GRUNFELD, "--formula", formula, "-o", tmp_path / "a.safetensors")
    b = _train(cli, GRUNFELD, "--formula", formula, "--stream", "--chunk-rows", "7", "-o", tmp_path / "b.safetensors")
    assert a.feature_names == b.feature_names
    np.testing.assert_allclose(b.coef, a.coef, rtol=1e-10)
    r = cli("predict", tmp_path / "b.safetensors", GRUNFELD, "--chunk-rows", "9")
    assert r.code == 0, r.err


def test_formula_two_targets_and_a_transformed_target(tmp_path, grunfeld):
    df = grunfeld.assign(logi=np.log(grunfeld.invest))
    est = LinearRegressor(solver="exact", formula="np.log(invest) + capital ~ value + C(firm)").fit(df)
    assert est.model_.target_names == ["np.log(invest)", "capital"]
    _check(est.model_, smf.ols("np.log(invest) ~ value + C(firm)", df).fit(), "np.log(invest)")
    _check(est.model_, smf.ols("capital ~ value + C(firm)", df).fit(), "capital")
    assert est.predict(df).shape == (len(df), 2)


def test_python_formula_weights_save_load(tmp_path, grunfeld):
    w = np.linspace(1.0, 3.0, len(grunfeld))
    formula = "invest ~ np.log(value) + capital + C(firm) + value:capital"
    est = LinearRegressor(solver="exact", formula=formula, cov_type="HC3").fit(grunfeld, sample_weight=w)
    res = smf.wls(formula, grunfeld, weights=w).fit(cov_type="HC3")
    _check(est.model_, res, "invest")
    path = str(tmp_path / "m.safetensors")
    est.save(path)
    back = gradreg.load(path)
    assert back.formula == formula and list(back.feature_names_in_) == ["value", "capital", "firm"]
    _close(back.predict(grunfeld.sample(frac=1, random_state=0)), res.fittedvalues.sample(frac=1, random_state=0))
    with pytest.raises(DataError, match="give a DataFrame or table with the columns 'value', 'capital', 'firm'"):
        back.model_.predict(np.zeros((2, 3)))


def test_stateful_transform_in_memory_and_refused_streamed(cli, tmp_path, grunfeld):
    formula = "invest ~ center(value) + scale(capital)"
    est = LinearRegressor(solver="exact", formula=formula).fit(grunfeld)
    # formulaic's scale() divides by the sample standard deviation (ddof 1), patsy's standardize() by ddof 0
    res = smf.ols("invest ~ center(value) + I((capital - capital.mean()) / capital.std())", grunfeld).fit()
    np.testing.assert_allclose(est.coef_, res.params.iloc[1:], rtol=1e-9)
    new = grunfeld.head(4)
    _close(
        est.predict(new), res.fittedvalues[:4]
    )  # with the state learned in fit, not new's own mean  # the state learned in fit, not from new
    r = cli("train", GRUNFELD, "--formula", formula, "--stream", "--solver", "exact", "-o", tmp_path / "m.safetensors")
    assert r.code != 0 and "learn from the whole table" in r.err


def test_dataframe_category_and_string_columns_are_categorical(grunfeld):
    X = grunfeld[["value", "capital", "firm"]].assign(firm=grunfeld.firm.astype("category"))
    est = LinearRegressor(solver="exact").fit(X, grunfeld.invest)
    _check(est.model_, smf.ols("invest ~ value + capital + C(firm)", grunfeld).fit(), "invest")
    est2 = LinearRegressor(solver="exact").fit(grunfeld[["value", "capital", "firm"]], grunfeld.invest)
    np.testing.assert_allclose(est2.coef_, est.coef_, rtol=1e-12)
    assert est.predict(X.head(3)).shape == (3,)


def test_parquet_dictionary_column_is_categorical(cli, tmp_path, grunfeld):
    path = tmp_path / "g.parquet"
    grunfeld.assign(firm=grunfeld.firm.astype("category")).to_parquet(path)
    out = tmp_path / "m.safetensors"
    model = _train(cli, path, "--target", "invest", "--exclude", "year", "-o", out)
    _check(model, smf.ols("invest ~ value + capital + C(firm)", grunfeld).fit(), "invest")
    model = _train(cli, path, "--target", "invest", "--exclude", "year", "--stream", "--chunk-rows", "7", "-o", out)
    _check(model, smf.ols("invest ~ value + capital + C(firm)", grunfeld).fit(), "invest")


# -- errors and safety --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "formula, message",
    [
        ("invest ~ __import__('os').system('true')", "invalid syntax"),  # formulaic's grammar stops it first
        ("invest ~ {__import__('os').system('true')}", "__import__('os').system() is not a function a formula may call"),
        ("invest ~ I(value.__class__)", "value.__class__ is not allowed"),
        ("invest ~ np.load('x')", "np.load() is not a function a formula may call"),
        ("invest ~ value.__class__", "the formula reads column 'value.__class__', which the data lack"),
        ("invest ~ C(np.log(value))", "C() takes a column name"),
        ("invest ~ nosuch", "the formula reads column 'nosuch', which the data lack"),
        ("invest ~ ", "makes no feature columns"),
    ],
)
def test_bad_formulas_are_one_line_errors(cli, formula, message):
    r = cli("train", GRUNFELD, "--formula", formula, "--solver", "exact")
    assert r.code != 0
    assert message in r.err and len(r.err.strip().splitlines()) == 1


def test_formula_and_target_together_are_refused(cli):
    r = cli("train", GRUNFELD, "--formula", "invest ~ value", "--target", "invest")
    assert r.code != 0 and "--formula names the targets and features itself; leave out --target" in r.err
    r = cli("train", GRUNFELD, "--features", "value")
    assert r.code != 0 and "--target" in r.err and "--formula" in r.err


def _rewrite_design(path: Path, change) -> None:
    """Edit the JSON header of a safetensors model file in place (what an attacker could do)."""
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    meta = json.loads(header["__metadata__"]["gradreg"])
    change(meta["schema"]["design"])
    header["__metadata__"]["gradreg"] = json.dumps(meta)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n :])


def test_a_model_file_with_a_hostile_formula_is_refused_at_load(cli, tmp_path):
    out = tmp_path / "m.safetensors"
    _train(cli, GRUNFELD, "--formula", "invest ~ value + C(firm)", "-o", out)
    marker = tmp_path / "pwned"
    _rewrite_design(out, lambda d: d.update(formula=f"invest ~ value + {{__import__('os').system('touch {marker}')}}"))
    with pytest.raises(ModelFileError, match="not allowed"):
        FittedModel.load(str(out))
    r = cli("predict", out, GRUNFELD)
    assert r.code != 0 and "not a function a formula may call" in r.err
    assert not marker.exists()


def test_formula_config_errors_are_configerrors():
    from gradreg.io.design import DesignRequest

    with pytest.raises(ConfigError):
        DesignRequest(unknown="maybe")
    with pytest.raises(ConfigError):
        DesignRequest(max_levels=1)


def test_warnings_free_fit(grunfeld):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LinearRegressor(solver="exact", formula="invest ~ value + C(firm)").fit(grunfeld)


# -- two ranks ----------------------------------------------------------------------------------


def test_two_ranks_learn_every_level_and_match_one_process(tmp_path, grunfeld):
    # sorted by firm: rank 0 and rank 1 see different firms, so the levels must be merged
    path = tmp_path / "g.csv"
    grunfeld.sort_values("firm").to_csv(path, index=False)
    out = tmp_path / "m.safetensors"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.pop("WORLD_SIZE", None)
    args = ["train", str(path), "--formula", FORMULAS[0], "--solver", "exact", "--nproc", "2", "-q", "-o", str(out)]
    r = subprocess.run([sys.executable, "-m", "gradreg", *args], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    model = FittedModel.load(str(out))
    assert model.info["world_size"] == 2
    _check(model, smf.ols(FORMULAS[0], grunfeld).fit(), "invest")


@pytest.mark.filterwarnings("ignore:covariance of constraints does not have full rank")
def test_formula_with_clustered_errors_rank_deficient_wald_test(grunfeld, tmp_path):
    # firm dummies clustered by firm: each firm's residuals sum to 0, so its dummy's cluster score
    # is 0 and the covariance has rank 2 (the two other slopes) for 12 slopes. statsmodels warns and
    # divides by the rank it finds, a number that moves with the last digits of the coefficients;
    # Stata reports no F, and neither does gradreg, saying why
    formula = "invest ~ np.log(value) + capital + C(firm)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = smf.ols(formula, grunfeld).fit(cov_type="cluster", cov_kwds={"groups": pd.factorize(grunfeld.firm)[0]}, use_t=True)
        f = res.fvalue
    est = LinearRegressor(solver="exact", formula=formula, cov_type="cluster").fit(grunfeld, groups=grunfeld.firm)
    _check(est.model_, res, "invest")
    stats = est.model_.stats["invest"]
    np.testing.assert_allclose(stats["ci_low"][1:], res.conf_int()[0][est.model_.feature_names].to_numpy(), rtol=1e-8)
    assert np.isfinite(f) and np.isnan(stats["f"]) and np.isnan(stats["f_p"])
    assert stats["f_note"] == "not defined: the cluster covariance has rank 2 for 12 slopes (as Stata reports it)"
    assert "F test:             not defined" in str(est.summary())
    path = str(tmp_path / "m.safetensors")
    est.save(path)
    assert gradreg.load(path).model_.stats["invest"]["f_note"] == stats["f_note"]


def test_a_formula_without_targets_takes_them_from_repeated_target(cli, tmp_path, grunfeld):
    out = tmp_path / "m.safetensors"
    model = _train(cli, GRUNFELD, "--formula", "~ value + C(firm)", "--target", "invest", "--target", "capital", "-o", out)
    assert model.target_names == ["invest", "capital"]
    for t in model.target_names:
        _check(model, smf.ols(f"{t} ~ value + C(firm)", grunfeld).fit(), t)
    r = cli("train", GRUNFELD, "--formula", "value + C(firm)", "--solver", "exact")
    assert r.code != 0 and "names no target" in r.err
    r = cli("evaluate", out, GRUNFELD, "--json")
    assert r.code == 0 and json.loads(r.out)["targets"] == ["invest", "capital"]


@pytest.mark.parametrize("chunk", [None, "3"])
def test_formula_with_a_date_column_predicts_with_keep(cli, tmp_path, chunk):
    # --dates converts before the formula reads; predict --keep copies IDs and the model's inputs
    src = MESSY / "dated_regions.csv"
    out = tmp_path / "m.safetensors"
    extra = ["--stream", "--chunk-rows", chunk] if chunk else []
    model = _train(cli, src, "--formula", "y ~ x + day + C(region)", "--dates", "day", "-o", out, *extra)
    df = pd.read_csv(src)
    df["day"] = (pd.to_datetime(df.day) - pd.Timestamp("1970-01-01")).dt.days
    _check(model, smf.ols("y ~ x + day + C(region)", df).fit(), "y")
    r = cli("predict", out, src, "--keep", "region,day", "--interval", "confidence", *(["--chunk-rows", chunk] if chunk else []))
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0] == "region,day,y,y_lower,y_upper"
    assert lines[1].startswith('"north",19723,')
    _close(np.array([float(v.split(",")[2]) for v in lines[1:]]), smf.ols("y ~ x + day + C(region)", df).fit().fittedvalues)


# -- what a new user ran into -------------------------------------------------------------------


def test_formula_with_clustered_errors_streamed_equals_in_memory(cli, tmp_path):
    formula = "invest ~ np.log(value) + capital + C(firm)"
    args = ["--formula", formula, "--cov", "cluster", "--groups", "firm"]
    a = _train(cli, GRUNFELD, *args, "-o", tmp_path / "a.safetensors")
    b = _train(cli, GRUNFELD, *args, "--stream", "--chunk-rows", "7", "-o", tmp_path / "b.safetensors")
    np.testing.assert_allclose(b.stats["invest"]["std_err"], a.stats["invest"]["std_err"], rtol=1e-10)
    # firm dummies clustered by firm, with --categorical too
    c = _train(cli, GRUNFELD, "--target", "invest", "--features", "value", "--categorical", "firm", "--cov", "cluster",
               "--groups", "firm", "-o", tmp_path / "c.safetensors")  # fmt: skip
    assert "firm[T.IBM]" in c.feature_names and c.stats["invest"]["cov_detail"].startswith("cluster (firm, 11 groups)")


def test_stateful_transforms_from_a_file_in_memory(cli, tmp_path, grunfeld):
    formula = "invest ~ center(value) + poly(capital, 2)"
    model = _train(cli, GRUNFELD, "--formula", formula, "-o", tmp_path / "m.safetensors")
    # patsy has no poly(); an orthogonal quadratic spans what capital + capital² spans: the same fit
    res = smf.ols("invest ~ center(value) + capital + I(capital**2)", grunfeld).fit()
    r = cli("predict", tmp_path / "m.safetensors", GRUNFELD)
    _close(np.loadtxt(r.out.splitlines()[1:]), res.fittedvalues)
    assert model.feature_names[0] == "center(value)"


def test_a_categorical_level_that_first_appears_late_in_a_big_file(cli, tmp_path):
    rng = np.random.default_rng(3)
    n = 120_000  # pyarrow infers a CSV column's type from its first block: these rows fill several
    code = rng.choice(["1", "2", "3"], n).astype(object)
    code[-40:] = "X9"
    x = rng.normal(size=n)
    y = x + (code == "2") + 5.0 * (code == "X9") + 0.1 * rng.normal(size=n)
    path = tmp_path / "late.csv"
    pd.DataFrame({"code": code, "x": x, "y": y}).to_csv(path, index=False)
    for extra in ([], ["--stream"]):
        model = _train(cli, path, "--target", "y", "--categorical", "code", "-o", tmp_path / "m.safetensors", *extra)
        assert model.feature_names == ["code[T.2]", "code[T.3]", "code[T.X9]", "x"]
        assert abs(model.coef[0][2] - 5.0) < 0.05


def test_bracketed_names_are_printed_as_they_are(cli, tmp_path):
    path = tmp_path / "b.csv"
    path.write_text("g,price[usd],y\na,1,2\nb,2,3.5\nc,3,7\na,4,6\nb,5,8\nc,6,10\n")
    r = cli("train", path, "--formula", "y ~ Q('price[usd]') + C(g) - 1", "--solver", "exact", "-o", tmp_path / "m.safetensors")
    assert r.code == 0, r.err
    assert "features: Q('price[usd]'), C(g)[a], C(g)[b], C(g)[c] (4)" in r.err
    assert "C(g)[b]" in r.out
    df = pd.read_csv(path)
    res = smf.ols("y ~ Q('price[usd]') + C(g) - 1", df).fit()
    _check(FittedModel.load(str(tmp_path / "m.safetensors")), res, "y", rename={"Q('price[usd]')": "Q('price[usd]')"})


def test_formula_estimator_in_cross_validation_and_groups_by_name(grunfeld):
    from sklearn.model_selection import KFold, cross_val_score

    cv = KFold(3, shuffle=True, random_state=0)
    est = LinearRegressor(solver="exact", formula="invest ~ value + C(firm)")
    a = cross_val_score(est, grunfeld, grunfeld.invest, cv=cv, error_score="raise")
    b = cross_val_score(est, grunfeld.drop(columns="invest"), grunfeld.invest, cv=cv, error_score="raise")
    np.testing.assert_allclose(a, b)
    for train, test in cv.split(grunfeld):
        res = smf.ols("invest ~ value + C(firm)", grunfeld.iloc[train]).fit()
        y = grunfeld.invest.iloc[test]
        r2 = 1 - ((y - res.predict(grunfeld.iloc[test])) ** 2).sum() / ((y - y.mean()) ** 2).sum()
        np.testing.assert_allclose(a[0], r2, rtol=1e-9)
        break
    est = LinearRegressor(solver="exact", cov_type="cluster", categorical="firm").fit(
        grunfeld[["value", "firm"]], grunfeld.invest, groups="firm"
    )
    assert est.model_.stats["invest"]["cov_detail"].startswith("cluster (firm, 11 groups)")


def test_intervals_of_a_model_without_residual_degrees_of_freedom_are_refused(cli, tmp_path):
    path = tmp_path / "wide.csv"
    path.write_text("a,b,c,d,y\n1,2,3,4,5\n2,1,4,3,6\n3,5,1,2,9\n")
    out = tmp_path / "w.safetensors"
    assert cli("train", path, "--target", "y", "--solver", "exact", "-q", "-o", out).code == 0
    r = cli("predict", out, path, "--interval", "confidence")
    assert r.code != 0 and "intervals need residual degrees of freedom" in r.err and not r.out


def test_two_reference_levels_for_one_column_are_refused(cli):
    r = cli(
        "train",
        GRUNFELD,
        "--target",
        "invest",
        "--categorical",
        "firm",
        "--reference",
        "firm=IBM",
        "--reference",
        "firm=Chrysler",
    )
    assert r.code != 0 and "column 'firm' is given two reference levels, 'IBM' and 'Chrysler'" in r.err


def test_unknown_ignore_counts_the_rows_it_predicted_at_the_reference(cli, tmp_path, grunfeld):
    out = tmp_path / "m.safetensors"
    _train(cli, GRUNFELD, "--formula", FORMULAS[0], "-o", out)
    new = tmp_path / "new.csv"
    grunfeld.assign(firm=grunfeld.firm.replace("IBM", "IBX")).to_csv(new, index=False)
    for extra in ([], ["--chunk-rows", "7"]):
        r = cli("predict", out, new, "--unknown", "ignore", *extra)
        assert r.code == 0, r.err
        assert r.err.strip() == (
            "note: 20 row(s) had a level of 'firm' not seen in training; --unknown ignore predicted them "
            "with every 'firm' dummy 0 (at the reference level)"
        )


def test_no_intercept_with_every_level_has_statsmodels_implicit_constant(grunfeld):
    # '- 1' and a column per firm: the constant is in the span, and statsmodels' R², F and df_model
    # are those about the mean; its robust F is NaN then
    formula = "invest ~ value + capital + C(firm) - 1"
    w = np.linspace(1.0, 2.0, len(grunfeld))
    for cov in ("nonrobust", "HC1"):
        res = smf.wls(formula, grunfeld, weights=w).fit(cov_type=cov, use_t=True)
        est = LinearRegressor(solver="exact", formula=formula, cov_type=cov).fit(grunfeld, sample_weight=w)
        s = est.model_.stats["invest"]
        np.testing.assert_allclose(
            [s["r2"], s["r2_adj"], s["df_model"], s["aic"]], [res.rsquared, res.rsquared_adj, res.df_model, res.aic], rtol=1e-10
        )
        np.testing.assert_allclose([s["f"], s["f_p"]], [res.fvalue, res.f_pvalue], rtol=1e-8)  # NaN for HC1, as statsmodels
    assert "firm: 11 levels, a column for every level" in est.summary().__str__()
    # without every level (no categorical), no constant is implied: the uncentered R², as statsmodels
    res = smf.ols("invest ~ value + capital - 1", grunfeld).fit()
    est = LinearRegressor(solver="exact", formula="invest ~ value + capital - 1").fit(grunfeld)
    np.testing.assert_allclose(est.model_.stats["invest"]["r2"], res.rsquared, rtol=1e-10)


def test_a_formula_text_column_of_odd_numbers_is_not_made_categorical(cli, tmp_path):
    path = tmp_path / "eu.csv"
    path.write_text('y;x;sales\n1,5;2;"1.234,5"\n2,5;3;"2.234,5"\n3,0;5;"4.000,0"\n4,5;6;"3.500,0"\n')
    r = cli("train", path, "--formula", "y ~ x + sales", "--decimal", ",", "--solver", "exact")
    assert r.code != 0 and "give --thousands '.'" in r.err and "write C(sales)" in r.err
    r = cli("train", path, "--formula", "y ~ x + sales", "--decimal", ",", "--thousands", ".", "--solver", "exact", "-q",
            "-o", tmp_path / "m.safetensors")  # fmt: skip
    assert r.code == 0, r.err


def test_python_group_values_with_a_gap_and_y_that_disagrees(grunfeld):
    firm = grunfeld.firm.where(grunfeld.index > 0)
    with pytest.raises(DataError, match="groups, row 1, column 0: missing group value"):
        LinearRegressor(solver="exact", formula="invest ~ value", cov_type="cluster").fit(grunfeld, groups=firm)
    with pytest.raises(ValueError, match="fits X's column 'invest', and y holds other values"):
        LinearRegressor(solver="exact", formula="invest ~ value").fit(grunfeld, grunfeld.capital)
