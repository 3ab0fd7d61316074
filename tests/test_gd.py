"""Gradient descent: convergence to the exact optimum, torch.optim identity, the tutorial, safety."""

import math

import numpy as np
import pytest
import torch

from gradreg.config import TrainConfig
from gradreg.errors import DivergenceError
from gradreg.io import Dataset
from gradreg.pipeline import train
from gradreg.solvers.gd import Optimizer, auto_batch_size, cosine_lr

from .conftest import ols


def crops_ds(X, Y):
    return Dataset(X, Y, ["temperature", "rainfall", "humidity"], ["mangoes", "oranges"], source="crops")


def unscaled(n=3000, p=8, q=2, seed=0):
    """Columns with scales 1e-2 … 1e3 and offsets, noise sd 1: what breaks the tutorial's loop."""
    rng = np.random.default_rng(seed)
    scales = np.logspace(-2, 3, p)
    X = rng.normal(size=(n, p)) * scales + rng.normal(0, 10, p) * scales
    B = rng.normal(size=(q, p)) / scales
    Y = X @ B.T + 5 + rng.normal(0, 1, (n, q))
    return Dataset(X, Y, [f"x{j}" for j in range(p)], [f"y{t}" for t in range(q)])


def test_demo_settings_reach_the_optimum_on_crops(crops_xy):
    m = train(crops_ds(*crops_xy), TrainConfig(epochs=50, batch_size=3, seed=0))
    coef, icpt = ols(*crops_xy)
    optimum = np.mean((crops_xy[1] - crops_xy[0] @ coef.T - icpt) ** 2)
    assert m.optimum["mean_objective"] == pytest.approx(optimum, rel=1e-12)
    assert m.optimum["mean_objective"] == pytest.approx(0.9094, abs=5e-5)  # the tutorial table's optimum
    assert m.optimum["mean_train_objective"] <= 1.01 * optimum
    np.testing.assert_allclose(m.coef, coef, rtol=0.05, atol=0.02)


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_defaults_converge_on_unscaled_data(optimizer):
    ds = unscaled()
    m = train(ds, TrainConfig(optimizer=optimizer))
    assert 0 <= m.optimum["gap"] < 0.01
    coef, icpt = ols(ds.X, ds.Y)
    pred_gd, pred_ls = ds.X @ m.coef.T + m.intercept, ds.X @ coef.T + icpt
    assert np.abs(pred_gd - pred_ls).max() < 0.1 * ds.Y.std()


def test_train_mse_reported_equals_recomputed(crops_xy):
    X, Y = crops_xy
    m = train(crops_ds(X, Y), TrainConfig(epochs=5, batch_size=3))
    mse = ((Y - X @ m.coef.T - m.intercept) ** 2).mean(axis=0)
    np.testing.assert_allclose(m.metrics["train"]["mse"], mse, rtol=1e-12)
    np.testing.assert_allclose(m.optimum["train_objective"], mse, rtol=1e-12)


def test_same_seed_same_model_other_seed_other_model(crops_xy):
    ds = crops_ds(*crops_xy)
    a = train(ds, TrainConfig(epochs=3, batch_size=3, seed=7))
    b = train(ds, TrainConfig(epochs=3, batch_size=3, seed=7))
    c = train(ds, TrainConfig(epochs=3, batch_size=3, seed=8))
    assert np.array_equal(a.coef, b.coef)
    assert not np.array_equal(a.coef, c.coef)


@pytest.mark.parametrize(
    "name,cls,kw",
    [
        ("sgd", torch.optim.SGD, {}),
        ("momentum", torch.optim.SGD, {"momentum": 0.9}),
        ("adam", torch.optim.Adam, {"foreach": False}),
    ],
)
def test_optimizer_is_bit_identical_to_torch_optim(name, cls, kw):
    torch.manual_seed(3)
    p1 = [torch.randn(2, 3, requires_grad=True), torch.randn(2, requires_grad=True)]
    p2 = [p.detach().clone().requires_grad_(True) for p in p1]
    ours, theirs = Optimizer(name, p1, 0.05), cls(p2, lr=0.05, **kw)
    X, Y = torch.randn(10, 3), torch.randn(10, 2)
    for step in range(20):
        lr = cosine_lr(0.05, step, 20)
        for group in theirs.param_groups:
            group["lr"] = lr
        for params, opt in ((p1, ours), (p2, theirs)):
            opt.zero_grad()
            ((X @ params[0].T + params[1] - Y) ** 2).mean().backward()
        ours.step(lr)
        theirs.step()
    for a, b in zip(p1, p2):
        assert torch.equal(a, b)


def test_cosine_schedule_matches_torch_scheduler_closed_form():
    assert cosine_lr(0.5, 0, 10) == 0.5
    assert cosine_lr(0.5, 5, 10) == pytest.approx(0.25)
    assert cosine_lr(0.5, 10, 10) == pytest.approx(0.0, abs=1e-15)


def test_no_standardize_reproduces_the_tutorial_loop(crops_xy):
    """--no-standardize: raw units, w = randn(2, 3), b = randn(2), w -= grad·lr, same batches."""
    X, Y = crops_xy
    cfg = TrainConfig(epochs=4, batch_size=3, lr=1e-6, lr_schedule="constant", standardize=False, dtype="float32", seed=5)
    m = train(crops_ds(X, Y), cfg)
    # The tutorial's loop, fixed (float inputs, backward, zeroed gradients), with gradreg's RNG use.
    gen = torch.Generator().manual_seed(5)
    w = torch.randn(2, 3, generator=gen, dtype=torch.float64).float().requires_grad_(True)
    b = torch.randn(2, generator=gen, dtype=torch.float64).float().requires_grad_(True)
    inputs, targets = torch.tensor(X, dtype=torch.float32), torch.tensor(Y, dtype=torch.float32)
    for _ in range(4):
        perm = torch.randperm(15, generator=gen)
        for i in range(0, 15, 3):
            x, y = inputs[perm[i : i + 3]], targets[perm[i : i + 3]]
            preds = x @ w.t() + b
            diff = preds - y
            loss = torch.sum(diff * diff) / diff.numel()
            loss.backward()
            with torch.no_grad():
                w -= w.grad * 1e-6
                b -= b.grad * 1e-6
                w.grad.zero_()
                b.grad.zero_()
    np.testing.assert_array_equal(m.coef, w.detach().double().numpy())
    np.testing.assert_array_equal(m.intercept, b.detach().double().numpy())


def test_tutorial_learning_rate_stays_far_from_optimum(crops_xy):
    # The background claim: lr 1e-6 on unscaled features leaves the MSE in the thousands after 50 epochs.
    cfg = TrainConfig(epochs=50, batch_size=3, lr=1e-6, lr_schedule="constant", standardize=False)
    m = train(crops_ds(*crops_xy), cfg)
    assert m.optimum["mean_train_objective"] > 100 * m.optimum["mean_objective"]


def test_divergence_is_an_error_naming_the_epoch(crops_xy):
    cfg = TrainConfig(epochs=50, batch_size=3, lr=10.0, lr_schedule="constant")
    with pytest.raises(DivergenceError, match=r"diverged at epoch \d+.*smaller lr "):
        train(crops_ds(*crops_xy), cfg)


def test_divergence_without_standardization_suggests_it(crops_xy):
    cfg = TrainConfig(epochs=50, batch_size=3, lr=0.01, standardize=False)
    with pytest.raises(DivergenceError, match="drop standardize=False"):
        train(crops_ds(*crops_xy), cfg)


def test_validation_loss_and_early_stopping_keep_best_weights():
    ds = unscaled(n=400, p=5, seed=2)
    cfg = TrainConfig(
        epochs=200, batch_size=32, val_fraction=0.25, early_stopping=3, lr=0.3, lr_schedule="constant", optimizer="momentum"
    )
    m = train(ds, cfg)
    vals = [h["val_loss"] for h in m.history]
    assert all(math.isfinite(v) for v in vals)
    assert m.info["stopped_early"] and len(vals) < 200
    best = int(np.argmin(vals))
    assert m.info["best_epoch"] == best + 1
    assert len(vals) - 1 - best == 3  # stopped three epochs after the best
    assert m.metrics["val"]["mse"] and np.mean(m.metrics["val"]["mse"]) == pytest.approx(vals[best], rel=1e-5)
    assert m.info["n_val"] == 100 and m.info["n_train"] == 300


def test_multi_output_equals_separate_fits():
    ds = unscaled(n=500, p=4, q=2, seed=4)
    cfg = TrainConfig(epochs=20, dtype="float64", tol=0)  # every epoch: tol would judge the targets' mean
    both = train(ds, cfg)
    for t in range(2):
        one = train(Dataset(ds.X, ds.Y[:, t : t + 1], ds.feature_names, [f"y{t}"]), cfg)
        np.testing.assert_allclose(both.coef[t], one.coef[0], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(both.intercept[t], one.intercept[0], rtol=1e-9)


def test_no_intercept_gd_converges_to_origin_fit():
    ds = unscaled(n=1000, p=3, q=1, seed=5)
    m = train(ds, TrainConfig(fit_intercept=False, epochs=100))
    coef, _ = ols(ds.X, ds.Y, intercept=False)
    assert m.optimum["gap"] < 0.01
    assert np.all(m.intercept == 0)
    np.testing.assert_allclose(m.optimum["coef"], coef, rtol=1e-8)


def test_auto_batch_size():
    assert auto_batch_size(15) == 1
    assert auto_batch_size(10_000) == 157
    assert auto_batch_size(10_000_000) == 65_536


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu(crops_xy):
    ds = crops_ds(*crops_xy)
    gpu = train(ds, TrainConfig(device="cuda", dtype="float64", epochs=10, batch_size=3))
    cpu = train(ds, TrainConfig(device="cpu", dtype="float64", epochs=10, batch_size=3))
    np.testing.assert_allclose(gpu.coef, cpu.coef, rtol=1e-6)
    assert gpu.info["device"].startswith("cuda")
