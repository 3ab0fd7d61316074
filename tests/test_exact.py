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
