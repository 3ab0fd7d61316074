"""A scikit-learn compatible estimator over gradreg's solvers."""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from . import errors
from .config import TrainConfig
from .data import Dataset, as_2d_float
from .errors import DataError
from .fitted import FittedModel, train


class LinearRegressor:
    """Linear regression by minibatch gradient descent (``solver="gd"``) or exact least squares.

    Parameters mirror :class:`gradreg.config.TrainConfig` (and the CLI flags); ``__init__`` only
    stores them, as scikit-learn requires.

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,) or (n_targets, n_features)
        Coefficients in original units; 1-D when ``y`` was 1-D, like scikit-learn.
    intercept_ : float or ndarray of shape (n_targets,)
    n_features_in_ : int
    feature_names_in_ : ndarray of str, only when X had string column names
    model_ : FittedModel
        Everything else: metrics, statistics, history, optimum, versions.
    history_ : list of dict
        Per epoch: loss, val_loss, lr, seconds (gradient descent only).
    """

    def __init__(
        self,
        *,
        solver: str = "gd",
        epochs: int = 50,
        batch_size: int | None = None,
        lr: float | None = None,
        optimizer: str = "sgd",
        lr_schedule: str = "cosine",
        l2: float = 0.0,
        fit_intercept: bool = True,
        standardize: bool = True,
        val_fraction: float = 0.0,
        early_stopping: int | None = None,
        seed: int = 0,
        device: str = "auto",
        dtype: str = "float32",
        cov_type: str = "nonrobust",
        conf_level: float = 0.95,
    ) -> None:
        self.solver = solver
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.optimizer = optimizer
        self.lr_schedule = lr_schedule
        self.l2 = l2
        self.fit_intercept = fit_intercept
        self.standardize = standardize
        self.val_fraction = val_fraction
        self.early_stopping = early_stopping
        self.seed = seed
        self.device = device
        self.dtype = dtype
        self.cov_type = cov_type
        self.conf_level = conf_level

    # -- scikit-learn parameter protocol ---------------------------------------------------------
    @classmethod
    def _get_param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return sorted(p.name for p in sig.parameters.values() if p.kind == p.KEYWORD_ONLY)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params: Any) -> LinearRegressor:
        valid = self._get_param_names()
        for key, value in params.items():
            if key not in valid:
                raise ValueError(f"Invalid parameter {key!r} for estimator {type(self).__name__}; valid parameters are {valid}")
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        defaults = {
            p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values() if p.kind == p.KEYWORD_ONLY
        }
        changed = [f"{k}={v!r}" for k, v in self.get_params().items() if v != defaults[k]]
        return f"{type(self).__name__}({', '.join(changed)})"

    def _config(self) -> TrainConfig:
        return TrainConfig(**self.get_params()).validate()

    # -- fitting -----------------------------------------------------------------------------
    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> LinearRegressor:
        """Fit on X (n_samples, n_features) and y (n_samples,) or (n_samples, n_targets); returns self."""
        cfg = self._config()
        names = _column_names(X)
        Xa = as_2d_float(X, "X")
        y_arr = y.to_numpy() if hasattr(y, "to_numpy") else y
        y_1d = np.ndim(y_arr) == 1
        Ya = as_2d_float(y_arr, "y")
        if len(Ya) != len(Xa):
            raise DataError(f"X has {len(Xa)} rows but y has {len(Ya)}")
        w = None
        if sample_weight is not None:
            w = as_2d_float(sample_weight, "sample_weight")[:, 0]
            if len(w) != len(Xa):
                raise DataError(f"sample_weight has {len(w)} entries; X has {len(Xa)} rows")
            if (w < 0).any():
                raise DataError(f"sample_weight, row {int(np.argmax(w < 0)) + 1}: weights must be >= 0; got {w[w < 0][0]}")
            if not (w > 0).any():
                raise DataError("sample_weight: all weights are zero; at least one must be > 0")
        if len(Xa) < 2:
            raise DataError(f"X: need at least 2 rows; got {len(Xa)}")
        feature_names = names or [f"x{j}" for j in range(Xa.shape[1])]
        target_names = _column_names(y) if not y_1d else None
        if not target_names:
            target_names = [getattr(y, "name", None) or "y"] if y_1d else [f"y{t}" for t in range(Ya.shape[1])]
        ds = Dataset(Xa, Ya, [str(f) for f in feature_names], [str(t) for t in target_names], w, "<array>")
        self._set_fitted(train(ds, cfg), y_1d, names)
        return self

    def _set_fitted(self, model: FittedModel, y_1d: bool, names: list[str] | None) -> None:
        self.model_ = model
        model.info["y_1d"] = y_1d
        self._y_1d = y_1d
        self.coef_ = model.coef[0].copy() if y_1d else model.coef.copy()
        self.intercept_ = float(model.intercept[0]) if y_1d else model.intercept.copy()
        self.n_features_in_ = model.n_features
        if names is not None:
            self.feature_names_in_ = np.asarray(names, dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        self.history_ = model.history
        self.n_iter_ = len(model.history)

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise errors.NotFittedError(f"This {type(self).__name__} instance is not fitted yet; call 'fit' first.")

    def predict(self, X: Any) -> np.ndarray:
        """Predictions of shape (n_samples,) for 1-D training y, else (n_samples, n_targets)."""
        self._check_fitted()
        names = _column_names(X)
        if hasattr(self, "feature_names_in_") and names is not None and list(names) != list(self.feature_names_in_):
            raise ValueError(
                "The feature names should match those that were passed during fit.\n"
                f"Expected {list(self.feature_names_in_)}; got {list(names)}"
            )
        Xa = as_2d_float(X, "X")
        if Xa.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {Xa.shape[1]} features, but {type(self).__name__} is expecting {self.n_features_in_} features as input."
            )
        out = self.model_.predict(Xa)
        return out[:, 0] if self._y_1d else out

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """R² of the predictions, averaged uniformly over targets (scikit-learn's convention)."""
        from .metrics import regression_metrics

        Ya = as_2d_float(y.to_numpy() if hasattr(y, "to_numpy") else y, "y")
        pred = self.predict(X).reshape(len(Ya), -1)
        w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        return float(np.mean(regression_metrics(Ya, pred, w)["r2"]))

    def save(self, path: str) -> None:
        """Write the fitted model to a .safetensors file."""
        self._check_fitted()
        self.model_.save(path)


def _column_names(X: Any) -> list[str] | None:
    cols = getattr(X, "columns", None)
    if cols is None:
        return None
    names = list(cols)
    return [str(c) for c in names] if all(isinstance(c, str) for c in names) else None


def load(path: str) -> LinearRegressor:
    """Load a model file written by gradreg as a fitted :class:`LinearRegressor`. Never unpickles."""
    model = FittedModel.load(path)
    params = {k: v for k, v in model.config.items() if k in LinearRegressor._get_param_names()}
    est = LinearRegressor(**params)
    est._set_fitted(model, len(model.target_names) == 1 and model.info.get("y_1d", False), None)
    est.feature_names_in_ = np.asarray(model.feature_names, dtype=object)
    return est
