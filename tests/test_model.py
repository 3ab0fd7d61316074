"""The model and its gradient: autograd against the closed form."""

import numpy as np
import torch

from gradreg.model import LinearModel


def test_autograd_gradient_equals_analytic(crops_xy):
    X, Y = crops_xy
    Xt, Yt = torch.tensor(X), torch.tensor(Y)
    n, q = Y.shape
    model = LinearModel(3, 2, dtype=torch.float64)
    with torch.no_grad():
        model.weight.copy_(torch.randn(2, 3, dtype=torch.float64))
        model.bias.copy_(torch.randn(2, dtype=torch.float64))
    E = model(Xt) - Yt
    loss = (E * E).mean()  # the tutorial's mse_loss: sum / numel
    loss.backward()
    E = E.detach().numpy()
    # d/dW of (1/(n q)) Σ e² = 2/(n q) Eᵀ X; per target (q = 1) this is 2/n (XWᵀ + b − Y)ᵀ X.
    np.testing.assert_allclose(model.weight.grad.numpy(), 2 / (n * q) * E.T @ X, rtol=1e-6, atol=0)
    np.testing.assert_allclose(model.bias.grad.numpy(), 2 / (n * q) * E.sum(axis=0), rtol=1e-6, atol=1e-12)


def test_single_target_gradient_is_the_issue_formula(crops_xy):
    X, Y = crops_xy
    y = Y[:, :1]
    model = LinearModel(3, 1, dtype=torch.float64)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.1, -0.2, 0.3]], dtype=torch.float64))
        model.bias.fill_(0.5)
    E = model(torch.tensor(X)) - torch.tensor(y)
    (E * E).mean().backward()
    expected = 2 / len(X) * (X @ np.array([[0.1, -0.2, 0.3]]).T + 0.5 - y).T @ X
    np.testing.assert_allclose(model.weight.grad.numpy(), expected, rtol=1e-6)


def test_original_units_round_trip():
    rng = np.random.default_rng(1)
    X = rng.normal(5, 3, size=(20, 4))
    model = LinearModel(4, 2, dtype=torch.float64)
    with torch.no_grad():
        model.weight.copy_(torch.tensor(rng.normal(size=(2, 4))))
        model.bias.copy_(torch.tensor(rng.normal(size=2)))
        model.x_mean.copy_(torch.tensor(rng.normal(size=4)))
        model.x_scale.copy_(torch.tensor(rng.uniform(0.5, 2, size=4)))
        model.y_mean.copy_(torch.tensor([3.0, -1.0]))
        model.y_scale.copy_(torch.tensor([10.0, 0.1]))
    coef, intercept = model.original_units()
    np.testing.assert_allclose(X @ coef.numpy().T + intercept.numpy(), model(torch.tensor(X)).detach().numpy(), rtol=1e-12)


def test_no_intercept_model_has_no_bias_parameter():
    model = LinearModel(3, 1, fit_intercept=False)
    assert [n for n, _ in model.named_parameters()] == ["weight"]
