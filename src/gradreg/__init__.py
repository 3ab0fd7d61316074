"""gradreg: linear regression with PyTorch, by minibatch gradient descent or exact least squares.

>>> import gradreg
>>> model = gradreg.LinearRegressor(solver="exact").fit(X, y)   # doctest: +SKIP
>>> model.coef_.shape                                            # doctest: +SKIP
(n_targets, n_features)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__

__all__ = ["LinearRegressor", "load", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from .estimator import LinearRegressor, load


def __getattr__(name: str) -> Any:
    # Lazy: `gradreg --help` must not pay for importing torch.
    if name in ("LinearRegressor", "load"):
        from . import estimator

        return getattr(estimator, name)
    raise AttributeError(f"module 'gradreg' has no attribute {name!r}")
