"""Cluster-robust and Newey–West (HAC) standard errors: against Stata's stored results for
Grunfeld (shipped in statsmodels' test suite) and against statsmodels itself, in memory, streamed,
from the CLI, from Python and under 2 ranks."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

sm = pytest.importorskip("statsmodels.api")

from gradreg import LinearRegressor  # noqa: E402
from gradreg.config import TrainConfig  # noqa: E402
from gradreg.errors import ConfigError  # noqa: E402
from gradreg.fitted import FittedModel  # noqa: E402
from gradreg.solvers.dependence import HacScores, _cross, _within  # noqa: E402

MESSY = os.path.join(os.path.dirname(__file__), "data", "messy")


@pytest.fixture(scope="module")
def grunfeld():
    from statsmodels.datasets import grunfeld as g

    return g.load_pandas().data.iloc[:200].reset_index(drop=True)  # Stata's example lacks the last firm


@pytest.fixture(scope="module")
def macro():
    d = sm.datasets.macrodata.load_pandas().data
    return d[["realgdp", "realcons", "realinv", "unemp"]].copy()


@pytest.fixture(scope="module")
def files(tmp_path_factory, grunfeld, macro):
    folder = tmp_path_factory.mktemp("cov")
    grunfeld.to_csv(folder / "g.csv", index=False)
    macro.to_csv(folder / "mac.csv", index=False)
    return folder


def _sm_cluster(d, groups, w=None):
    X = sm.add_constant(d[["value", "capital"]])
    codes = np.column_stack([pd.factorize(d[g])[0] for g in groups]) if len(groups) > 1 else pd.factorize(d[groups[0]])[0]
    model = sm.OLS(d.invest, X) if w is None else sm.WLS(d.invest, X, weights=w)
    return model.fit(cov_type="cluster", cov_kwds={"groups": codes}, use_t=True)


def _assert_matches(s: dict, res, rtol: float = 1e-8) -> None:
    np.testing.assert_allclose(s["coef"], res.params, rtol=rtol)
    np.testing.assert_allclose(s["std_err"], res.bse, rtol=rtol)
    np.testing.assert_allclose(s["t"], res.tvalues, rtol=rtol)
    np.testing.assert_allclose(s["p"], res.pvalues, rtol=rtol)
    ci = np.asarray(res.conf_int())
    np.testing.assert_allclose(s["ci_low"], ci[:, 0], rtol=rtol)
    np.testing.assert_allclose(s["ci_high"], ci[:, 1], rtol=rtol)
    np.testing.assert_allclose(s["f"], res.fvalue, rtol=rtol)
    np.testing.assert_allclose(s["f_p"], res.f_pvalue, rtol=rtol)


def test_grunfeld_by_firm_matches_statas_stored_results(grunfeld):
    from statsmodels.regression.tests.results.results_grunfeld_ols_robust_cluster import results_cluster as stata

    est = LinearRegressor(solver="exact", cov_type="cluster").fit(
        grunfeld[["value", "capital"]], grunfeld.invest, groups=grunfeld.firm
    )
    s = est.model_.stats["invest"]
    order = [2, 0, 1]  # Stata lists _cons last
    table = stata.params_table[order]
    # Stata's stored numbers carry ~8 digits of its own data (float storage): 1e-7, not 1e-8
    np.testing.assert_allclose(s["coef"], table[:, 0], rtol=1e-7)
    np.testing.assert_allclose(s["std_err"], table[:, 1], rtol=1e-7)
    np.testing.assert_allclose(s["t"], table[:, 2], rtol=1e-7)
    np.testing.assert_allclose(s["p"], table[:, 3], rtol=1e-6)
    np.testing.assert_allclose(s["ci_low"], table[:, 4], rtol=1e-7)
    np.testing.assert_allclose(s["ci_high"], table[:, 5], rtol=1e-6)  # 3.49 = -42.7 + 46.2: cancellation
    assert s["df_inference"] == stata.df_r == 9
    np.testing.assert_allclose(s["f"], stata.F, rtol=1e-7)
    # and statsmodels on the same data, to 1e-8
    _assert_matches(s, _sm_cluster(grunfeld, ["firm"]))
    assert est.model_.info["cov"]["n_groups"] == [10]


def test_two_way_clusters_match_statsmodels(grunfeld):
    est = LinearRegressor(solver="exact", cov_type="cluster").fit(
        grunfeld[["value", "capital"]], grunfeld.invest, groups=grunfeld[["firm", "year"]]
    )
    _assert_matches(est.model_.stats["invest"], _sm_cluster(grunfeld, ["firm", "year"]))


def test_weighted_clusters_match_statsmodels_wls(grunfeld):
    w = np.random.default_rng(3).uniform(0.2, 3.0, len(grunfeld))
    est = LinearRegressor(solver="exact", cov_type="cluster").fit(
        grunfeld[["value", "capital"]], grunfeld.invest, sample_weight=w, groups=grunfeld.firm.to_numpy()
    )
    _assert_matches(est.model_.stats["invest"], _sm_cluster(grunfeld, ["firm"], w=w))


@pytest.mark.parametrize("maxlags", [0, 1, 4])
def test_hac_matches_statsmodels_on_macrodata(macro, maxlags):
    X = macro[["realcons", "realinv", "unemp"]]
    est = LinearRegressor(solver="exact", cov_type="HAC", maxlags=maxlags).fit(X, macro.realgdp)
    res = sm.OLS(macro.realgdp, sm.add_constant(X)).fit(cov_type="HAC", cov_kwds={"maxlags": maxlags}, use_t=True)
    _assert_matches(est.model_.stats["realgdp"], res)


def test_hac_chunks_and_rank_boundaries_equal_one_pass():
    """The carried rows and the gathered boundary rows give every lagged pair exactly once,
    whatever the cuts, including blocks shorter than L."""
    rng = np.random.default_rng(0)
    S = rng.normal(size=(23, 2, 3))
    L = 5
    whole = _within(S, L)
    # by definition: Σ_t Σ_{|s-t|<=L} w_|s-t| s_t s_sᵀ
    ref = np.zeros((2, 3, 3))
    for a in range(23):
        for b in range(23):
            if abs(a - b) <= L:
                ref += (1 - abs(a - b) / (L + 1)) * np.einsum("qi,qj->qij", S[a], S[b])
    np.testing.assert_allclose(whole, ref, rtol=1e-12)
    acc = HacScores(L, 2, 3)
    for lo, hi in [(0, 2), (2, 9), (9, 10), (10, 23)]:
        acc.add(S[lo:hi].reshape(hi - lo, -1))
    np.testing.assert_allclose(acc.total, ref, rtol=1e-12)
    # ranks of 3, 2 and 18 rows: the middle rank shorter than L
    parts = [S[:3], S[3:5], S[5:]]
    total = sum(_within(p, L) for p in parts)
    carry = np.zeros((0, 2, 3))
    for p in parts:
        total = total + _cross(carry, p[:L], L)
        carry = np.concatenate([carry, p[-L:]])[-L:]
    np.testing.assert_allclose(total, ref, rtol=1e-12)


def _cli_model(cli, tmp_path, name, *args) -> FittedModel:
    out = tmp_path / f"{name}.safetensors"
    r = cli("train", *args, "--solver", "exact", "-q", "-o", out)
    assert r.code == 0, r.err
    return FittedModel.load(str(out))


def test_cli_cluster_streamed_equals_in_memory_and_statsmodels(cli, files, grunfeld, tmp_path):
    args = (files / "g.csv", "--target", "invest", "--features", "value,capital", "--cov", "cluster", "--groups", "firm")
    mem = _cli_model(cli, tmp_path, "mem", *args)
    streamed = _cli_model(cli, tmp_path, "str", *args, "--stream", "--chunk-rows", "7")
    assert streamed.info.get("streamed")
    _assert_matches(mem.stats["invest"], _sm_cluster(grunfeld, ["firm"]))
    _assert_matches(streamed.stats["invest"], _sm_cluster(grunfeld, ["firm"]))
    assert mem.stats["invest"]["cov_detail"] == "cluster (firm, 10 groups)"
    r = cli("inspect", tmp_path / "str.safetensors")
    assert "cluster (firm, 10 groups); t and F with 9 df" in r.out
    two = _cli_model(cli, tmp_path, "two", *args[:-1], "firm,year", "--stream", "--chunk-rows", "7")
    _assert_matches(two.stats["invest"], _sm_cluster(grunfeld, ["firm", "year"]))


def test_cli_hac_streamed_equals_statsmodels(cli, files, macro, tmp_path):
    args = (files / "mac.csv", "--target", "realgdp", "--cov", "HAC", "--maxlags", "4")
    res = sm.OLS(macro.realgdp, sm.add_constant(macro[["realcons", "realinv", "unemp"]])).fit(
        cov_type="HAC", cov_kwds={"maxlags": 4}, use_t=True
    )
    for extra in ((), ("--stream", "--chunk-rows", "3")):  # chunks shorter than L
        m = _cli_model(cli, tmp_path, "hac" + str(len(extra)), *args, *extra)
        _assert_matches(m.stats["realgdp"], res)
        assert m.info["cov"] == {"type": "HAC", "maxlags": 4, "text": "HAC (Newey-West, 4 lags)"}


def test_gd_fit_keeps_the_cluster_statistics(grunfeld):
    est = LinearRegressor(solver="gd", cov_type="cluster", epochs=200).fit(
        grunfeld[["value", "capital"]], grunfeld.invest, groups=grunfeld.firm
    )
    res = _sm_cluster(grunfeld, ["firm"])
    # the statistics are at the descent's coefficients (as for HC*), within its gap to the optimum
    np.testing.assert_allclose(est.model_.stats["invest"]["std_err"], res.bse, rtol=1e-2)
    assert est.model_.stats["invest"]["df_inference"] == 9


def test_fit_from_a_path_with_a_group_column(files, grunfeld):
    est = LinearRegressor(solver="exact", cov_type="cluster").fit(str(files / "g.csv"), target="invest", groups="firm")
    assert "firm" not in est.model_.feature_names  # the group column is not a feature
    assert est.model_.feature_names == ["value", "capital", "year"]


@pytest.mark.parametrize(
    "args, message",
    [
        (("--cov", "cluster"), "--cov cluster needs --groups"),
        (("--cov", "cluster", "--groups", "nope"), "no column named 'nope'"),
        (("--cov", "HAC"), "--cov HAC needs --maxlags"),
        (("--cov", "HAC", "--maxlags", "-1"), "--maxlags must be an integer >= 0; got --maxlags -1"),
        (("--cov", "HAC", "--maxlags", "2", "--val-fraction", "0.2"), "--val-fraction breaks"),
        (("--groups", "firm"), "--groups is for --cov cluster"),
        (("--maxlags", "2"), "--maxlags is for --cov HAC"),
    ],
)
def test_cli_errors(cli, files, tmp_path, args, message):
    r = cli("train", files / "g.csv", "--target", "invest", "--solver", "exact", *args, "-o", tmp_path / "x.safetensors")
    assert r.code != 0
    assert message in r.err
    assert "Traceback" not in r.err
    assert not (tmp_path / "x.safetensors").exists()


def test_missing_group_value_is_named_or_dropped(cli, tmp_path):
    path = os.path.join(MESSY, "groups_missing.csv")
    base = ("train", path, "--target", "y", "--solver", "exact", "--cov", "cluster", "--groups", "firm", "-q")
    for extra in ((), ("--stream", "--chunk-rows", "2")):
        r = cli(*base, *extra, "-o", tmp_path / "x.safetensors")
        assert r.code != 0
        assert "groups_missing.csv, line 4, column 'firm': missing value" in r.err
    r = cli(*base, "--drop-missing", "-o", tmp_path / "d.safetensors")
    assert r.code == 0, r.err
    m = FittedModel.load(str(tmp_path / "d.safetensors"))
    d = pd.read_csv(path).dropna()
    res = sm.OLS(d.y, sm.add_constant(d[["x"]])).fit(cov_type="cluster", cov_kwds={"groups": pd.factorize(d.firm)[0]}, use_t=True)
    _assert_matches(m.stats["y"], res)


def test_python_errors(grunfeld):
    X, y = grunfeld[["value", "capital"]], grunfeld.invest
    with pytest.raises(ConfigError, match="needs groups"):
        LinearRegressor(solver="exact", cov_type="cluster").fit(X, y)
    with pytest.raises(ConfigError, match="maxlags must be an integer >= 0"):
        LinearRegressor(solver="exact", cov_type="HAC", maxlags=-1).fit(X, y)
    with pytest.raises(ConfigError, match="val_fraction"):
        TrainConfig(cov_type="HAC", maxlags=2, val_fraction=0.1).validate()
    with pytest.raises(ValueError, match="partial_fit: cov_type='cluster' needs a pass over every row"):
        LinearRegressor(solver="exact", cov_type="cluster").partial_fit(X, y)
    with pytest.raises(Exception, match="groups: 3 value"):
        LinearRegressor(solver="exact", cov_type="cluster").fit(X, y, groups=[1, 2, 3])


def test_two_ranks_equal_one_process(files, grunfeld, macro, tmp_path):
    """One 2-rank CLI run each: a cluster spans both ranks' shards; HAC's lags cross the cut."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.pop("WORLD_SIZE", None)
    for name, args, ref in [
        (
            "c",
            (files / "g.csv", "--target", "invest", "--features", "value,capital", "--cov", "cluster", "--groups", "firm,year"),
            lambda m: _assert_matches(m.stats["invest"], _sm_cluster(grunfeld, ["firm", "year"])),
        ),
        (
            "h",
            (files / "mac.csv", "--target", "realgdp", "--cov", "HAC", "--maxlags", "4"),
            lambda m: _assert_matches(
                m.stats["realgdp"],
                sm.OLS(macro.realgdp, sm.add_constant(macro[["realcons", "realinv", "unemp"]])).fit(
                    cov_type="HAC", cov_kwds={"maxlags": 4}, use_t=True
                ),
            ),
        ),
    ]:
        out = tmp_path / f"{name}.safetensors"
        cmd = [
            sys.executable,
            "-m",
            "gradreg",
            "train",
            *map(str, args),
            "--solver",
            "exact",
            "--nproc",
            "2",
            "-q",
            "-o",
            str(out),
        ]
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 0, r.stderr
        m = FittedModel.load(str(out))
        assert m.info.get("world_size") == 2
        ref(m)
