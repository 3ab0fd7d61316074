"""The model: a multi-output linear map with standardization inside it. Forward only."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["LinearModel"]


class LinearModel(nn.Module):
    """ŷ = ((x − x_mean) / x_scale) P Wᵀ + b, then ŷ · y_scale + y_mean.

    W is (n_targets, n_features) and b is (n_targets,), both in standardized units; the buffers
    hold the training statistics. P, when set by :meth:`precondition`, whitens the standardized
    features (without it P is the identity and no product is taken). With every mean 0 and
    scale 1 this is the tutorial's ``X @ w.t() + b`` exactly.

    Parameters
    ----------
    n_features : int
    n_targets : int
    fit_intercept : bool
        Without it, b is a zero buffer rather than a parameter.
    dtype : torch.dtype
    device : torch.device or str, optional
    """

    def __init__(self, n_features: int, n_targets: int, *, fit_intercept: bool = True, dtype=torch.float32, device=None):
        super().__init__()
        kw = {"dtype": dtype, "device": device}
        self.weight = nn.Parameter(torch.zeros(n_targets, n_features, **kw))
        # Without an intercept b stays a zero buffer, so forward is the same code either way.
        if fit_intercept:
            self.bias = nn.Parameter(torch.zeros(n_targets, **kw))
        else:
            self.register_buffer("bias", torch.zeros(n_targets, **kw))
        # The standardization stays float64 whatever the working dtype: a column at 1e-140 or
        # 1e+140 has a scale that float32 cannot hold (the weights are O(1) either way).
        kw64 = {"dtype": torch.float64, "device": device}
        self.register_buffer("x_mean", torch.zeros(n_features, **kw64))
        self.register_buffer("x_scale", torch.ones(n_features, **kw64))
        self.register_buffer("y_mean", torch.zeros(n_targets, **kw64))
        self.register_buffer("y_scale", torch.ones(n_targets, **kw64))
        self.register_buffer("x_rotation", None)  # set by precondition(); None is the identity

    def precondition(self, P) -> None:
        """Whiten the standardized features with P (n_features, n_features), float64.

        Gradient descent then sees a design whose Gram is the identity: its convergence no longer
        depends on the condition number (Longley, NIST's polynomials).

        Parameters
        ----------
        P : array-like of shape (n_features, n_features)
        """
        self.x_rotation = torch.as_tensor(P, dtype=torch.float64, device=self.x_mean.device).clone()

    def standardize_x(self, x: torch.Tensor) -> torch.Tensor:
        """Standardize raw features.

        Parameters
        ----------
        x : Tensor of shape (n, n_features)

        Returns
        -------
        Tensor of shape (n, n_features)
        """
        xs = (x - self.x_mean) / self.x_scale
        return xs if self.x_rotation is None else xs @ self.x_rotation

    def standardize_y(self, y: torch.Tensor) -> torch.Tensor:
        """Standardize raw targets.

        Parameters
        ----------
        y : Tensor of shape (n, n_targets)

        Returns
        -------
        Tensor of shape (n, n_targets)
        """
        return (y - self.y_mean) / self.y_scale

    def forward_standardized(self, xs: torch.Tensor) -> torch.Tensor:
        """Predict in standardized target units from standardized features.

        Parameters
        ----------
        xs : Tensor of shape (n, n_features)

        Returns
        -------
        Tensor of shape (n, n_targets)
        """
        return xs @ self.weight.t() + self.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predict in original units from raw features.

        Parameters
        ----------
        x : Tensor of shape (n, n_features)

        Returns
        -------
        Tensor of shape (n, n_targets)
        """
        xs = self.standardize_x(x).to(self.weight.dtype)
        return self.forward_standardized(xs).double() * self.y_scale + self.y_mean

    @torch.no_grad()
    def original_units(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The coefficients in original units, computed in float64.

        Returns
        -------
        coef : Tensor of shape (n_targets, n_features)
        intercept : Tensor of shape (n_targets,)
        """
        W = self.weight.detach().double()
        if self.x_rotation is not None:
            W = W @ self.x_rotation.T  # ((x − m)/s) P Wᵀ = ((x − m)/s) (W Pᵀ)ᵀ
        xs, xm = self.x_scale.double(), self.x_mean.double()
        ys, ym = self.y_scale.double(), self.y_mean.double()
        coef = ys[:, None] * W / xs[None, :]
        intercept = ym + ys * self.bias.detach().double() - coef @ xm
        return coef, intercept
