"""Inference statistics against statsmodels, and accuracy on the NIST StRD linear regression sets."""

import json
import os

import numpy as np
import pytest

from gradreg.config import TrainConfig
from gradreg.io import Dataset
from gradreg.pipeline import train

sm = pytest.importorskip("statsmodels.api", reason="statsmodels is the reference for these statistics")

NIST = os.path.join(os.path.dirname(__file__), "data", "nist")
COVS = ["nonrobust", "HC0", "HC1", "HC2", "HC3"]


def longley():
    data = sm.datasets.longley.load_pandas()
    return data.exog.to_numpy(float), data.endog.to_numpy(float)[:, None], list(data.exog.columns), ["TOTEMP"]


def linnerud():
    from sklearn.datasets import load_linnerud

    d = load_linnerud()
    return d.data.astype(float), d.target.astype(float), list(d.feature_names), list(d.target_names)


def reference(X, y, intercept, cov, w=None, conf=0.95):
    A = sm.add_constant(X, has_constant="add") if intercept else X
    model = sm.OLS(y, A) if w is None else sm.WLS(y, A, weights=w)
    return model.fit(cov_type=cov, use_t=True), conf


def check(stats, res, conf, rtol=1e-8):
    ci = res.conf_int(alpha=1 - conf)
    for key, ref in [("coef", res.params), ("std_err", res.bse), ("t", res.tvalues)]:
        np.testing.assert_allclose(stats[key], ref, rtol=rtol, atol=1e-300, err_msg=key)
    # An interval is its center and half-width; an endpoint near 0 cancels digits in both tools.
    np.testing.assert_allclose((stats["ci_high"] + stats["ci_low"]) / 2, ci.mean(axis=1), rtol=rtol, err_msg="ci center")
    np.testing.assert_allclose((stats["ci_high"] - stats["ci_low"]) / 2, (ci[:, 1] - ci[:, 0]) / 2, rtol=rtol, err_msg="ci width")
    # Tail probabilities amplify the last digits of t and F (statsmodels' F on Longley is itself off
    # by 1e-12 relative); their logarithms are the well-conditioned quantities to compare.
    np.testing.assert_allclose(np.log(stats["p"]), np.log(res.pvalues), rtol=rtol, err_msg="p")
    assert np.log(stats["f_p"]) == pytest.approx(np.log(res.f_pvalue), rel=rtol), "f_p"
    for key, ref in [
        ("r2", res.rsquared),
        ("r2_adj", res.rsquared_adj),
        ("f", res.fvalue),
        ("df_resid", res.df_resid),
        ("df_model", res.df_model),
        ("llf", res.llf),
        ("aic", res.aic),
        ("bic", res.bic),
        ("nobs", res.nobs),
    ]:
        assert stats[key] == pytest.approx(float(ref), rel=rtol, abs=1e-300), key
    assert stats["sigma"] == pytest.approx(np.sqrt(res.scale), rel=rtol)


@pytest.mark.parametrize("cov", COVS)
@pytest.mark.parametrize("intercept", [True, False])
@pytest.mark.parametrize("data", [longley, linnerud])
def test_matches_statsmodels(data, intercept, cov):
    X, Y, features, targets = data()
    m = train(Dataset(X, Y, features, targets), TrainConfig(solver="exact", fit_intercept=intercept, cov_type=cov))
    for t in range(Y.shape[1]):
        res, conf = reference(X, Y[:, t], intercept, cov)
        check(list(m.stats.values())[t], res, conf)


@pytest.mark.parametrize("cov", ["nonrobust", "HC1", "HC3"])
def test_weighted_matches_statsmodels_wls(cov):
    X, Y, features, targets = linnerud()
    w = np.linspace(0.5, 3.0, len(X))
    m = train(Dataset(X, Y, features, targets, w), TrainConfig(solver="exact", cov_type=cov))
    for t in range(3):
        res, conf = reference(X, Y[:, t], True, cov, w)
        check(list(m.stats.values())[t], res, conf)


def test_conf_level():
    X, Y, features, targets = longley()
    m = train(Dataset(X, Y, features, targets), TrainConfig(solver="exact", conf_level=0.9))
    res, _ = reference(X, Y[:, 0], True, "nonrobust")
    check(m.stats[m.target_names[0]], res, 0.9)


def test_gd_statistics_use_its_own_coefficients():
    X, Y, features, targets = linnerud()
    m = train(Dataset(X, Y, features, targets), TrainConfig(epochs=200))
    np.testing.assert_allclose(m.stats[m.target_names[0]]["coef"][1:], m.coef[0], rtol=1e-15)
    assert m.stats[m.target_names[0]]["r2"] == pytest.approx(m.metrics["train"]["r2"][0], rel=1e-10)


def lre(est, cert):
    est, cert = np.asarray(est), np.asarray(cert)
    return float(np.min(-np.log10(np.abs(est - cert) / np.abs(cert) + 1e-300)))


CERTIFIED = json.load(open(os.path.join(NIST, "certified.json")))
WELL_CONDITIONED = {"norris", "longley", "noint1", "noint2", "pontius"}


@pytest.mark.parametrize("name", sorted(k for k in CERTIFIED if not k.startswith("_")))
def test_nist_strd_digits_through_the_cli(cli, tmp_path, name):
    """≥ 7 correct significant digits on every coefficient; ≥ 10 on the well-conditioned sets."""
    cert = CERTIFIED[name]
    out = tmp_path / "m.safetensors"
    args = ["train", os.path.join(NIST, f"{name}.csv"), "--target", "y", "--solver", "exact", "-q", "-o", out]
    assert cli(*args, *([] if cert["intercept"] else ["--no-intercept"])).code == 0
    model = json.loads(cli("inspect", out, "--json").out)
    est = ([model["intercept"][0]] if cert["intercept"] else []) + model["coef"][0]
    digits = lre(est, cert["coef"])
    assert digits >= (10 if name in WELL_CONDITIONED else 7), f"{name}: {digits:.1f} digits"
