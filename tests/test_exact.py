"""The exact solver: numpy lstsq agreement, chunk merging, rank deficiency."""

import warnings

import numpy as np
import pytest

from gradreg.config import TrainConfig
from gradreg.io import Dataset
from gradreg.pipeline import train
from gradreg.solvers.exact import Factor, RankWarning, factor_chunks, fit_exact, solve

from .conftest import ols


def well_conditioned(n=500, p=6, q=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p)) * rng.uniform(0.5, 3, p) + rng.normal(0, 2, p)
    Y = X @ rng.normal(size=(p, q)) + rng.normal(size=q) + rng.normal(0, 0.5, (n, q))
    return X, Y


def exact(X, Y, w=None, intercept=True, **kw):
    def chunks():
        yield X, Y, w

    sol, _ = fit_exact(chunks, X.shape[1], fit_intercept=intercept, **kw)
    return sol


@pytest.mark.parametrize("intercept", [True, False])
def test_matches_numpy_lstsq(intercept):
    X, Y = well_conditioned()
    sol = exact(X, Y, intercept=intercept)
    coef, icpt = ols(X, Y, intercept=intercept)
    np.testing.assert_allclose(sol.coef, coef, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sol.intercept, icpt, rtol=1e-10, atol=1e-12)
    rss = ((Y - X @ coef.T - icpt) ** 2).sum(axis=0)
    np.testing.assert_allclose(sol.rss, rss, rtol=1e-9)


def test_weighted_matches_lstsq_on_scaled_rows():
    X, Y = well_conditioned(seed=1)
    w = np.random.default_rng(1).uniform(0, 3, len(X))
    sol = exact(X, Y, w)
    coef, icpt = ols(X, Y, w)
    np.testing.assert_allclose(sol.coef, coef, rtol=1e-10)
    np.testing.assert_allclose(sol.intercept, icpt, rtol=1e-10)


@pytest.mark.parametrize("sizes", [[500], [1, 499], [100, 150, 250], [3] * 166 + [2]])
def test_merged_chunks_equal_one_pass(sizes):
    X, Y = well_conditioned()
    w = np.random.default_rng(2).uniform(0.1, 2, len(X))
    edges = np.cumsum([0] + sizes)
    merged = factor_chunks([(X[a:b], Y[a:b], w[a:b]) for a, b in zip(edges[:-1], edges[1:])])
    whole = Factor.of_chunk(X, Y, w)
    np.testing.assert_allclose(merged.mean, whole.mean, rtol=1e-13)
    # R is unique up to the signs of its rows: compare RᵀR and the solutions.
    np.testing.assert_allclose(merged.R.T @ merged.R, whole.R.T @ whole.R, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(solve(merged, 6).coef, solve(whole, 6).coef, rtol=1e-10)


def test_multi_output_equals_separate_fits():
    X, Y = well_conditioned(q=1)
    both = exact(X, np.c_[Y, Y])
    one = exact(X, Y)
    np.testing.assert_allclose(both.coef, np.vstack([one.coef, one.coef]), rtol=1e-12)
    np.testing.assert_allclose(both.intercept, [one.intercept[0]] * 2, rtol=1e-12)


def test_collinear_columns_warn_and_give_minimum_norm():
    X, Y = well_conditioned(p=4, q=1)
    X = np.c_[X, X[:, 0] + 2 * X[:, 1]]  # column 4 = x0 + 2 x1
    names = ["a", "b", "c", "d", "e"]
    with pytest.warns(RankWarning, match=r"collinear columns 'a', 'b', 'e'"):
        m = train(Dataset(X, Y, names, ["y"]), TrainConfig(solver="exact"))
    assert m.info["rank"] == 4
    # Minimum norm in the standardized scale: pinv of the centered, scaled design.
    mu, sd = X.mean(0), X.std(0)
    gamma = np.linalg.pinv((X - mu) / sd) @ (Y[:, 0] - Y[:, 0].mean())
    np.testing.assert_allclose(m.coef[0], gamma / sd, rtol=1e-8)
    se = m.stats[m.target_names[0]]["std_err"]
    assert np.isnan(se[[1, 2, 5]]).all() and np.isfinite(se[[0, 3, 4]]).all()


def test_constant_column_is_aliased_with_intercept():
    X, Y = well_conditioned(p=3, q=1)
    X = np.c_[X, np.full(len(X), 7.0)]
    with pytest.warns(RankWarning, match=r"constant column\(s\) 'k'"):
        m = train(Dataset(X, Y, ["a", "b", "c", "k"], ["y"]), TrainConfig(solver="exact"))
    coef, icpt = ols(X[:, :3], Y)
    np.testing.assert_allclose(m.coef[0, :3], coef[0], rtol=1e-10)
    assert m.coef[0, 3] == 0 and np.isnan(m.stats[m.target_names[0]]["std_err"][4])


def test_full_rank_fit_does_not_warn():
    X, Y = well_conditioned()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train(Dataset(X, Y, [f"x{j}" for j in range(6)], ["a", "b", "c"]), TrainConfig(solver="exact"))


def test_ill_conditioned_polynomial_beats_normal_equations():
    # Degree-8 Vandermonde on [1, 2]: the normal equations lose every digit; QR keeps most.
    x = np.linspace(1, 2, 200)
    X = np.column_stack([x**k for k in range(1, 9)])
    beta = np.arange(1, 9, dtype=float)
    y = X @ beta + 3.0
    sol = exact(X, y[:, None])
    np.testing.assert_allclose(sol.coef[0], beta, rtol=1e-4)
    np.testing.assert_allclose(sol.intercept[0], 3.0, rtol=1e-4)


def mp_lstsq(X, y):
    """Least squares in 60-digit arithmetic (mpmath): the reference for hard designs."""
    import mpmath as mp

    mp.mp.dps = 60
    A = mp.matrix([[1] + [mp.mpf(float(v)) for v in row] for row in X])
    b = mp.matrix([mp.mpf(float(v)) for v in y])
    Q, R = mp.qr(A)
    beta = mp.lu_solve(R[: A.cols, : A.cols], (Q.T * b)[: A.cols, 0])
    return np.array([float(v) for v in beta])


def digits(est, ref):
    return float(np.min(-np.log10(np.abs(est - ref) / np.abs(ref) + 1e-300)))  # exact agreement: 300


@pytest.mark.parametrize("degree", [6, 9])
def test_vandermonde_digits_against_60_digit_reference(degree):
    rng = np.random.default_rng(degree)
    x = np.sort(rng.uniform(2, 5, 60))
    X = np.column_stack([x**k for k in range(1, degree + 1)])
    y = np.sin(x) + rng.normal(0, 0.01, 60)
    sol = exact(X, y[:, None])
    assert digits(np.r_[sol.intercept, sol.coef[0]], mp_lstsq(X, y)) >= 7


def test_near_collinear_digits_against_60_digit_reference():
    rng = np.random.default_rng(11)
    a = rng.normal(size=80)
    X = np.column_stack([a, a + 1e-6 * rng.normal(size=80), rng.normal(size=80)])
    y = X @ [1.0, 2.0, -1.0] + rng.normal(0, 0.1, 80)
    sol = exact(X, y[:, None])
    assert sol.rank == 3
    assert digits(np.r_[sol.intercept, sol.coef[0]], mp_lstsq(X, y)) >= 7


# -- the float32 Gram of large tables (made small here by lowering the thresholds) ---------------


@pytest.fixture
def float32_gram(monkeypatch):
    """Blocks of 2,048 rows (float32 products of 1,024) and the float32 Gram after 4,096 rows."""
    from gradreg.solvers import exact as ex

    monkeypatch.setattr(ex, "BLOCK_ROWS", 2048)
    monkeypatch.setattr(ex, "GRAM_ROWS", 1024)
    monkeypatch.setattr(ex, "FLOAT32_AFTER_ROWS", 4096)
    return ex


def unscaled(n=30_000, p=8, q=2, seed=0, dtype=np.float32):
    """B1's kind of table: columns at scales 1e-2 to 1e3 with offsets of a few scales, noise sd 1."""
    rng = np.random.default_rng(seed)
    scales = np.logspace(-2, 3, p)
    X = (rng.standard_normal((n, p)) * scales + rng.normal(size=p) * scales * 3).astype(dtype)
    Y = (X.astype(np.float64) @ (rng.normal(size=(p, q)) / scales[:, None]) + 5.0 + rng.standard_normal((n, q))).astype(dtype)
    return X, Y


def fit_both(ex, monkeypatch, X, Y, w=None, **cfg):
    """The model by the float32 Gram, and by the float64 Gram alone (the thresholds raised)."""
    names = [f"x{j}" for j in range(X.shape[1])]
    targets = [f"y{t}" for t in range(Y.shape[1])]
    low = train(Dataset(X, Y, names, targets, w), TrainConfig(solver="exact", **cfg))
    with monkeypatch.context() as m:
        m.setattr(ex, "FLOAT32_AFTER_ROWS", 10**12)
        high = train(Dataset(X, Y, names, targets, w), TrainConfig(solver="exact", **cfg))
    return low, high


def assert_same_fit(low, high, se_rtol=1e-6):
    """Coefficients, intercepts and metrics of float64 accuracy; statistics from the factor to se_rtol."""
    np.testing.assert_allclose(low.coef, high.coef, rtol=1e-11, atol=1e-11 * np.abs(high.coef).max())
    np.testing.assert_allclose(low.intercept, high.intercept, rtol=1e-11, atol=1e-11 * np.abs(high.intercept).max())
    for key in ("mse", "mae", "r2"):
        np.testing.assert_allclose(low.metrics["train"][key], high.metrics["train"][key], rtol=1e-11, err_msg=key)
    for a, b in zip(low.stats.values(), high.stats.values()):
        for key in ("std_err", "ci_low", "ci_high"):
            np.testing.assert_allclose(a[key], b[key], rtol=se_rtol, err_msg=key)
        for key in ("r2", "llf"):
            assert a[key] == pytest.approx(b[key], rel=1e-11), key


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float32_gram_refines_to_the_float64_solution(float32_gram, monkeypatch, dtype):
    X, Y = unscaled(dtype=dtype)
    low, high = fit_both(float32_gram, monkeypatch, X, Y)
    assert low._factor.method == "gram32" and high._factor.method == "gram"
    assert_same_fit(low, high)
    coef, icpt = ols(X.astype(np.float64) - X.mean(0, dtype=np.float64), Y.astype(np.float64))
    np.testing.assert_allclose(low.coef, coef, rtol=1e-9)


def test_float32_gram_reads_the_data_twice(float32_gram):
    # the first pass (Gram, peaks) and one float64 pass that refines and stands in for the residual pass
    X, Y = unscaled()
    calls = []

    def chunks():
        calls.append(1)
        for a in range(0, len(X), 5000):
            yield X[a : a + 5000], Y[a : a + 5000], None

    sol, factor = fit_exact(chunks, X.shape[1], n_targets=2)
    assert factor.method == "gram32" and len(calls) == 2
    from gradreg.metrics import MetricsAccumulator
    from gradreg.solvers.exact import residual_pass

    acc = MetricsAccumulator(2)
    rss, _ = residual_pass(sol, chunks, "nonrobust", metrics=acc)
    assert len(calls) == 2  # the refinement's pass, not a third
    r = Y.astype(np.float64) - (X.astype(np.float64) @ sol.coef.T + sol.intercept)
    np.testing.assert_allclose(rss, (r * r).sum(axis=0), rtol=1e-11)
    np.testing.assert_allclose(acc.result()["mae"], np.abs(r).mean(axis=0), rtol=1e-11)


@pytest.mark.parametrize("intercept", [True, False])
def test_float32_gram_with_weights_zero_weights_and_no_intercept(float32_gram, monkeypatch, intercept):
    X, Y = unscaled(seed=1)
    if not intercept:  # about 0: offsets would make the uncentered design ill-conditioned (float64's)
        X -= X.mean(axis=0)
    w = np.random.default_rng(1).uniform(0, 3, len(X))
    w[::7] = 0.0
    low, high = fit_both(float32_gram, monkeypatch, X, Y, w, fit_intercept=intercept, cov_type="HC3")
    assert low._factor.method == "gram32"
    assert_same_fit(low, high)


def test_float32_gram_follows_a_trend_and_extreme_scales(float32_gram, monkeypatch):
    # a sorted column (each block's mean far from the last's), columns at 1e30 and 1e-30 (scaled by
    # powers of two), and one at 1e45, beyond float32 (its blocks are summed in float64)
    X, Y = unscaled(n=20_000, p=5, dtype=np.float64)
    X[:, 0] = np.arange(len(X)) * 1e-3 + X[:, 0] * 1e-6
    X[:, 1] *= 1e30
    X[:, 2] *= 1e-30
    low, high = fit_both(float32_gram, monkeypatch, X, Y)
    assert low._factor.method == "gram32"
    assert_same_fit(low, high)
    X[:, 3] *= 1e45
    low, high = fit_both(float32_gram, monkeypatch, X, Y)
    assert_same_fit(low, high, se_rtol=1e-9)  # every block fell back to float64


def test_float32_gram_gives_way_to_float64_on_a_correlated_design(float32_gram, monkeypatch):
    monkeypatch.setattr(float32_gram, "FLOAT32_AFTER_ROWS", 2048)
    rng = np.random.default_rng(5)
    X = rng.standard_normal((60_000, 4)) + [1.0, 2.0, 3.0, 4.0]
    late = np.arange(len(X)) >= 2048  # the rows that decide on float32 look independent; the rest are not
    X[late, 1] = X[late, 0] + 0.01 * X[late, 1]
    Y = X @ rng.normal(size=(4, 2)) + 0.01 * rng.standard_normal((len(X), 2))
    low, high = fit_both(float32_gram, monkeypatch, X, Y)
    assert low._factor.method == "gram" and low.info["condition_number"] > float32_gram.GRAM32_COND_LIMIT
    assert_same_fit(low, high, se_rtol=1e-10)
    X[:, 1] = X[:, 0] + 0.1 * rng.standard_normal(len(X))  # correlated from the first rows on
    Y = X @ rng.normal(size=(4, 2)) + 0.01 * rng.standard_normal((len(X), 2))
    low, high = fit_both(float32_gram, monkeypatch, X, Y)
    assert low._factor.method == "gram"
    assert_same_fit(low, high, se_rtol=1e-12)


def test_device_kernels_agree_with_the_cpu_ones():
    """The torch branches (taken on an accelerator) give the numpy branches' sums, here on the CPU."""
    import threading

    import torch

    from gradreg.solvers.exact import _gram_torch, _sweep_block

    X, Y = unscaled(n=5000, p=6)
    w = np.random.default_rng(2).uniform(0, 2, len(X))
    Z = torch.from_numpy(np.c_[X, Y, np.ones(len(X), np.float32)])
    np.testing.assert_allclose(_gram_torch(Z), (Z.T.double() @ Z.double()).numpy(), rtol=1e-5)
    rng = np.random.default_rng(3)
    consts = [X.mean(axis=0, dtype=np.float64), rng.normal(size=2), rng.normal(size=(6, 2))]
    for weights in (None, w):
        cpu = _sweep_block(X, Y, weights, consts, threading.local())
        dev = _sweep_block(X, Y, weights, [torch.from_numpy(c) for c in consts], threading.local())
        for a, b in zip(cpu[:4], dev[:4]):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * np.abs(a).max())
        for key, value in cpu[4].result().items():
            np.testing.assert_allclose(dev[4].result()[key], value, rtol=1e-12)
