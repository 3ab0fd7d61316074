"""A fitted model: coefficients in original units plus everything that explains them.

:func:`gradreg.pipeline.train` returns a :class:`FittedModel`; ``FittedModel.save``/``load``
move it through a .safetensors file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from . import persist
from .config import INTERVALS
from .errors import ConfigError, DataError, ModelFileError
from .io import require_numeric_columns

__all__ = ["FittedModel", "Optimum", "gap_to_optimum", "stop_reason", "make_schema"]

STAT_ARRAYS = ("coef", "std_err", "t", "p", "ci_low", "ci_high")
STAT_SCALARS = ("r2", "r2_adj", "f", "f_p", "df_resid", "df_model", "sigma", "llf", "aic", "bic", "nobs")
TENSORS = ("coef", "intercept", "x_mean", "x_scale", "y_mean", "y_scale")


@dataclass
class Optimum(Mapping):
    """The exact least-squares optimum of a fit's training rows, and how far the fit is from it.

    Every fit solves exactly first, so every model carries this. It reads as the dict it is saved
    as (``optimum["gap"]`` is ``optimum.gap``), so model files and JSON keep their shape.

    Parameters
    ----------
    kind : {"MSE", "ridge objective"}
    objective : list of float
        The optimum's objective per target (MSE, + the ridge penalty).
    mean_objective : float
    train_objective : list of float
        This fit's objective per target (equal to ``objective`` for the exact solver).
    mean_train_objective : float
    gap : float
        Relative excess of this fit over the optimum (NaN when the optimum is about 0).
    gap_abs : float
    optimum_near_zero : bool
        The optimum is below 1e-10 of the target's mean square: an exact fit.
    within_tolerance : bool
        The fit is within 1% of the optimum (or 1e-10 of the mean square above an exact fit).
    coef : list of list of float
        The optimum's coefficients, (n_targets, n_features).
    intercept : list of float
    """

    kind: str = "MSE"
    objective: list[float] = field(default_factory=list)
    mean_objective: float = math.nan
    train_objective: list[float] = field(default_factory=list)
    mean_train_objective: float = math.nan
    gap: float = math.nan
    gap_abs: float = math.nan
    optimum_near_zero: bool = False
    within_tolerance: bool = True
    coef: list[list[float]] = field(default_factory=list)
    intercept: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, optimum, fit, y_square: float, l2: float = 0.0) -> Optimum:
        """The optimum of ``optimum`` (an :class:`~gradreg.solvers.exact.ExactSolution`) and the
        gap of ``fit`` (another, or the same one) to it.

        Parameters
        ----------
        optimum, fit : ExactSolution
            With their residual sums of squares set.
        y_square : float
            Mean over targets of the target's weighted mean square (see :func:`gap_to_optimum`).
        l2 : float

        Returns
        -------
        Optimum
        """
        best, ours = optimum.objective(), fit.objective()
        return cls(
            kind="ridge objective" if l2 > 0 else "MSE",
            objective=best.tolist(),
            mean_objective=float(best.mean()),
            train_objective=ours.tolist(),
            mean_train_objective=float(ours.mean()),
            **gap_to_optimum(float(ours.mean()), float(best.mean()), y_square),
            coef=optimum.coef.tolist(),
            intercept=optimum.intercept.tolist(),
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Optimum:
        """From a model file's JSON (older files may lack keys, which keep their defaults).

        Parameters
        ----------
        d : mapping or None

        Returns
        -------
        Optimum
        """
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (d or {}).items() if k in known})

    def __getitem__(self, key: str) -> Any:
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self):
        return iter(self.__dataclass_fields__)

    def __len__(self) -> int:
        return len(self.__dataclass_fields__)


@dataclass(repr=False)
class FittedModel:
    """A fitted linear model: Ŷ = X coefᵀ + intercept, and everything that explains it.

    Parameters
    ----------
    feature_names : list of str, length n_features
    target_names : list of str, length n_targets
    coef : ndarray of shape (n_targets, n_features)
        In original units, float64.
    intercept : ndarray of shape (n_targets,)
    x_mean, x_scale : ndarray of shape (n_features,)
        The standardization the model trained with (zeros and ones without it).
    y_mean, y_scale : ndarray of shape (n_targets,)
    config : dict
        The :class:`~gradreg.config.TrainConfig` as a dict.
    metrics : dict
        Split (``train``, ``val``) → metric (``mse``, ``rmse``, ``mae``, ``r2``) → list per target.
    optimum : Optimum
        The exact least-squares objective and solution, and the gap of this fit to it (a dict
        is accepted and read into one).
    stats : dict of str to dict
        Keyed by target name, in the order of ``target_names`` (the shape ``gradreg inspect
        --json`` prints): ``terms`` (``intercept`` first, then the features), the arrays
        ``coef``, ``std_err``, ``t``, ``p``, ``ci_low``, ``ci_high`` over the terms, and
        ``r2``, ``r2_adj``, ``f``, ``f_p``, ``aic``, ``bic``, … (see
        :func:`gradreg.solvers.exact.statistics`). A list in target order is accepted and keyed.
    history : list of dict
        Per epoch of gradient descent: ``epoch``, ``loss``, ``val_loss``, ``lr``, ``seconds``.
    info : dict
        Versions, data source and fingerprint, rows, device, condition number, and the like.
    warnings : list of str
        For example collinear columns, or a gradient-descent fit that ended far from the optimum.
    schema : dict
        The input the model expects: ``features`` and ``targets`` as lists of ``{"name", "dtype"}``
        in the model's order (dtype as read: ``double``, ``int64``, ``float32``, …), and ``named``
        (False when the model was fitted on arrays without column names: x0, x1, … stand in).
    cov : ndarray of shape (n_targets, k, k) or None
        Per target, the covariance of the estimates as the statistics computed it (``cov_type``),
        in the centered parametrization ŷ = a + (x − ``cov_center``)ᵀβ: [a, β] with the intercept
        a first (k = n_features + 1), or β alone without an intercept (k = n_features). Aliased
        (collinear) columns have rows and columns of 0. What :meth:`predict_interval` needs; None
        for a ridge fit, a model without statistics, or a file written before gradreg had it. The
        statistics' dicts from :func:`gradreg.solvers.exact.statistics` carry it (``cov_centered``,
        ``cov_center``); the model moves it out of them.
    cov_center : ndarray of shape (n_features,) or None
        The point the covariance is centered on: the (weighted) feature means of the training
        rows with an intercept, zeros without one.
    """

    feature_names: list[str]
    target_names: list[str]
    coef: np.ndarray
    intercept: np.ndarray
    x_mean: np.ndarray  # the model's standardization (zeros/ones without it)
    x_scale: np.ndarray
    y_mean: np.ndarray
    y_scale: np.ndarray
    config: dict[str, Any]
    metrics: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # split → metric → per target
    optimum: Optimum = field(default_factory=Optimum)
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)  # by target name, see solvers.exact.statistics
    history: list[dict] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    schema: dict[str, Any] = field(default_factory=dict)
    cov: np.ndarray | None = None  # (n_targets, k, k), centered: see predict_interval
    cov_center: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.optimum, Optimum):
            self.optimum = Optimum.from_dict(self.optimum)
        if isinstance(self.stats, list):  # solvers return one dict per target, in order
            self.stats = dict(zip(self.target_names, self.stats))
        self._take_covariance()
        terms = (["intercept"] if self.config.get("fit_intercept", True) else []) + list(self.feature_names)
        for s in self.stats.values():
            s.setdefault("terms", terms)
        if not self.schema:
            self.schema = make_schema(self.feature_names, self.target_names)

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    @property
    def design(self):
        """How the features are made from the input columns (categorical columns, a formula), or
        None when they are the input columns themselves.

        Returns
        -------
        gradreg.io.design.Design or None
        """
        raw = self.schema.get("design") if self.schema else None
        if raw is None:
            return None
        cached = self.__dict__.get("_design")
        if cached is None or cached[0] is not raw:
            from .io.design import Design

            cached = (raw, Design.from_json(raw))
            self.__dict__["_design"] = cached
        return cached[1]

    @property
    def input_names(self) -> list[str]:
        """The columns a table to predict from must have: the features, or the design's inputs.

        Returns
        -------
        list of str
        """
        design = self.design
        return list(self.feature_names) if design is None else design.inputs

    def read_names(self) -> list[str]:
        """The columns a table to evaluate the model on must have: the inputs and the targets' columns.

        Returns
        -------
        list of str
        """
        design = self.design
        if design is None:
            return list(self.target_names) + list(self.feature_names)
        targets = self.target_names if design.sugar else design.target_inputs
        return list(dict.fromkeys(list(targets) + design.inputs))

    def _take_covariance(self) -> None:
        """Move the centered covariance out of the statistics' dicts into ``cov``/``cov_center``."""
        found = [(s.pop("cov_centered", None), s.pop("cov_center", None)) for s in self.stats.values()]
        if self.cov is None and found and all(c is not None for c, _ in found):
            self.cov = np.stack([np.asarray(c, dtype=np.float64) for c, _ in found])
            self.cov_center = np.asarray(found[0][1], dtype=np.float64)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predict from raw features.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), or a table with named columns
            An array's columns are taken in the order of ``feature_names``. A pandas DataFrame,
            a pyarrow Table or a dict of columns is matched by name: extra columns are ignored,
            and a missing feature column is an error (a model fitted on unnamed arrays refuses
            named input whose names are not its x0, x1, …).

        Returns
        -------
        ndarray of shape (n_samples, n_targets)
            float64.

        Raises
        ------
        DataError
            A missing feature column, or an array of the wrong width.
        """
        return self.predict_matrix(self._by_name(X))

    def predict_matrix(self, X: np.ndarray) -> np.ndarray:
        """Predict from the feature matrix itself: the columns of ``feature_names``, in order
        (for a model with a design, the columns it makes, such as ``region[T.north]``).

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_targets)
        """
        X = np.asarray(X)
        if X.dtype not in (np.float32, np.float64):
            X = X.astype(np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise DataError(f"X must have {self.n_features} feature columns; got shape {X.shape}")
        out = np.empty((X.shape[0], len(self.target_names)))
        coef_t = self.coef.T.copy()
        # Blocks of about 2^18 multiply-adds (a float32 X is never copied whole to float64). With
        # few targets the product is memory-bound, and OpenBLAS runs a larger one on several threads
        # whose start and spin cost more than they save: 65,536 rows × 100 features, 2 targets,
        # 39 ms of CPU at once, 7 ms in blocks of 1,310 rows.
        rows = max(64, (1 << 18) // max(1, self.coef.size))
        for start in range(0, len(X), rows):
            block = X[start : start + rows]
            np.matmul(block.astype(np.float64, copy=False), coef_t, out=out[start : start + rows])
        out += self.intercept
        return out

    def predict_interval(
        self, X: Any, interval: str = "confidence", level: float = 0.95, *, weights: Any = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Predictions with confidence intervals for the mean, or prediction intervals for a new
        observation, as statsmodels' ``get_prediction(X).summary_frame()`` gives them.

        With x̃ = [1, x] and Cov the covariance of the estimates (as the statistics computed it:
        nonrobust, or the robust ``cov_type`` the model was fitted with), the confidence interval is
        ŷ ± t · √(x̃ᵀ Cov x̃) and the prediction interval ŷ ± t · √(σ²/w + x̃ᵀ Cov x̃), with t the
        (1 + level)/2 quantile of Student's t with the residual degrees of freedom, σ² the residual
        variance and w the new observation's weight (1 by default). The quadratic form is computed
        in the centered parametrization (x − the training mean), which keeps its digits on
        ill-conditioned designs. Aliased (collinear) columns, whose coefficient is 0, are left out
        of it. A gradient-descent fit's interval is centered on its own prediction, with the
        covariance from the exact factor (as ``gradreg inspect`` reports its standard errors). An
        exact fit (zero residuals) has intervals of width 0.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), or a table with named columns
            As for :meth:`predict`.
        interval : {"confidence", "prediction"}
            For the mean response (statsmodels' ``mean_ci``), or for a new observation (``obs_ci``).
        level : float
            In (0, 1).
        weights : float or array-like of shape (n_samples,), optional
            The new observations' weights for a prediction interval of a weighted fit (the noise
            variance is σ²/w, statsmodels' ``weights``); 1 by default.

        Returns
        -------
        yhat, lower, upper : ndarray of shape (n_samples, n_targets)

        Raises
        ------
        ConfigError
            An unknown ``interval``, a ``level`` outside (0, 1), a ridge model (``l2`` > 0: a
            penalized fit has no covariance), bad ``weights``, or a model without statistics
            (gradient descent's ``partial_fit``).
        ModelFileError
            The model has no covariance of its estimates (a file written before gradreg stored it).
        DataError
            As :meth:`predict`.
        """
        return self.interval_matrix(self._by_name(X), interval, level, weights=weights)

    def interval_matrix(
        self, X: np.ndarray, interval: str = "confidence", level: float = 0.95, *, weights: Any = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`predict_interval` from the feature matrix itself (see :meth:`predict_matrix`).

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
        interval : {"confidence", "prediction"}
        level : float
        weights : float or array-like of shape (n_samples,), optional

        Returns
        -------
        yhat, lower, upper : ndarray of shape (n_samples, n_targets)
        """
        if interval not in INTERVALS:
            raise ConfigError(f"{{interval}} must be one of {', '.join(INTERVALS)}; got {{interval=}}", interval=interval)
        if isinstance(level, bool) or not isinstance(level, (int, float, np.floating)) or not 0 < level < 1:
            raise ConfigError("{level} must be between 0 and 1; got {level=}", level=level)
        self._require_covariance()
        yhat = self.predict_matrix(X)
        half = self._half_width(np.asarray(X), interval, float(level), weights)
        return yhat, yhat - half, yhat + half

    def predict_std(self, X: Any, *, weights: Any = None) -> np.ndarray:
        """The standard deviation of a new observation's prediction error, √(σ²/w + x̃ᵀ Cov x̃):
        the noise included, as scikit-learn's ``BayesianRidge.predict(return_std=True)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), or a table with named columns
        weights : float or array-like of shape (n_samples,), optional
            As in :meth:`predict_interval`.

        Returns
        -------
        ndarray of shape (n_samples, n_targets)
        """
        return self.std_matrix(self._by_name(X), weights=weights)

    def std_matrix(self, X: np.ndarray, *, weights: Any = None) -> np.ndarray:
        """:meth:`predict_std` from the feature matrix itself (see :meth:`predict_matrix`).

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
        weights : float or array-like of shape (n_samples,), optional

        Returns
        -------
        ndarray of shape (n_samples, n_targets)
        """
        self._require_covariance()
        X = np.asarray(X)
        self._check_width(X)
        return np.sqrt(self._noise(len(X), weights) + self._mean_variance(X))

    def _require_covariance(self) -> None:
        from ._version import __version__

        l2 = self.config.get("l2", 0.0) or 0.0
        if l2 > 0:
            raise ConfigError(
                "intervals need the covariance of unpenalized estimates; this is a ridge model "
                "({l2=}), which has none: retrain it without the penalty for intervals",
                l2=l2,
            )
        if not self.stats:
            raise ConfigError(
                "this model has no statistics, which intervals need (gradient descent's partial_fit keeps "
                "none, nor does a fit with no residual degrees of freedom): fit it with fit() on the whole data"
            )
        df = [s.get("df_resid") for s in self.stats.values()]
        if any(d is not None and d <= 0 for d in df):
            raise ConfigError(
                f"intervals need residual degrees of freedom, and this model has none ({int(self.info.get('n_train', 0) or 0)} "
                f"rows for {self.n_features + int(bool(self.config.get('fit_intercept', True)))} coefficients): "
                "the noise cannot be estimated; fit it on more rows than coefficients"
            )
        if self.cov is None or self.cov_center is None:
            raise ModelFileError(
                "this model file has no covariance of its estimates, which intervals need (files written "
                f"before gradreg stored it lack it); retrain it with gradreg {__version__}"
            )

    def _check_width(self, X: np.ndarray) -> None:
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise DataError(f"X must have {self.n_features} feature columns; got shape {X.shape}")

    def _mean_variance(self, X: np.ndarray) -> np.ndarray:
        """x̃ᵀ Cov x̃ per row and target, as zᵀ C z with z = [1, x − center] (centered), in blocks."""
        self._check_width(X)
        q, k = self.cov.shape[0], self.cov.shape[1]
        intercept = k == self.n_features + 1
        out = np.empty((X.shape[0], q))
        rows = max(64, (1 << 18) // max(1, k * k))
        for start in range(0, len(X), rows):
            Z = np.asarray(X[start : start + rows], dtype=np.float64) - self.cov_center
            if intercept:
                Z = np.column_stack([np.ones(len(Z)), Z])
            for t in range(q):
                out[start : start + len(Z), t] = np.einsum("ij,ij->i", Z @ self.cov[t], Z)
        return np.maximum(out, 0.0)  # a rounding-level negative (an exact fit's 0) is 0

    def _noise(self, n: int, weights: Any) -> np.ndarray:
        """σ²/w per row and target, (n, n_targets)."""
        sigma2 = self._stat_scalars("sigma") ** 2
        if weights is None:
            return np.broadcast_to(sigma2, (n, len(sigma2)))
        try:
            w = np.broadcast_to(np.asarray(weights, dtype=np.float64), (n,))
        except (TypeError, ValueError):
            raise ConfigError(
                f"weights must be a number or one per row ({n}); got {np.shape(weights) or type(weights).__name__}"
            ) from None
        if not (np.isfinite(w).all() and (w > 0).all()):
            raise ConfigError(f"weights must be finite and > 0; got {float(w[~(np.isfinite(w) & (w > 0))][0])!r}")
        return sigma2[None, :] / w[:, None]

    def _stat_scalars(self, name: str) -> np.ndarray:
        """A scalar statistic per target, checked: a model file's JSON could hold anything."""
        out = []
        for t in self.target_names:
            v = self.stats[t].get(name, np.nan)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise ModelFileError(f"the model's statistic {name!r} of target {t!r} is not a number: {v!r}")
            out.append(float(v))
        return np.array(out)

    def _half_width(self, X: np.ndarray, interval: str, level: float, weights: Any = None) -> np.ndarray:
        """t · standard error per row and target (``_require_covariance`` first)."""
        from scipy import special as sp

        var = self._mean_variance(X)
        if interval == "prediction":
            var = var + self._noise(len(X), weights)
        elif weights is not None:
            raise ConfigError("weights apply to interval='prediction' (a new observation's noise)")
        df = self._stat_scalars("df_resid")
        with np.errstate(invalid="ignore"):
            crit = np.where(df > 0, sp.stdtrit(np.where(df > 0, df, 1.0), 0.5 + level / 2), np.nan)
        return crit * np.sqrt(var)

    def _by_name(self, X: Any) -> np.ndarray:
        """A table's feature columns in the model's order, by name; an array as it is."""
        names = getattr(X, "column_names", None)  # pyarrow.Table
        if names is None and hasattr(X, "columns") and not isinstance(X, np.ndarray):
            names = list(X.columns)  # pandas / polars DataFrame
        if names is None and isinstance(X, dict):
            names = list(X)
        design = self.design
        if design is not None:
            if names is None:
                raise DataError(
                    "X: this model makes its features from named columns ("
                    + design.describe()
                    + f"); give a DataFrame or table with the columns {', '.join(map(repr, design.inputs))}"
                )
            from .io import feature_matrix, read_table

            table = read_table(X, name="X")
            return feature_matrix(table, self.feature_names, design=design)[0]
        if names is None:
            return np.asarray(X)
        names = [str(n) for n in names]
        lacking = [f for f in self.feature_names if f not in names]
        if lacking:
            raise DataError(
                f"X lacks the model's feature column(s) {', '.join(map(repr, lacking))}; it has {', '.join(map(repr, names))}"
            )
        if hasattr(X, "iloc"):  # pandas: the estimator's check, on the columns the model reads
            require_numeric_columns(X[list(self.feature_names)], "X")

        def column(f: str) -> np.ndarray:
            c = X[f] if not hasattr(X, "column_names") else X.column(f)
            c = c.to_numpy() if hasattr(c, "to_numpy") else np.asarray(c)
            try:
                return np.asarray(c, dtype=np.float64)
            except (TypeError, ValueError):
                raise DataError(f"X, column {f!r}: expected numbers; got dtype {c.dtype}") from None

        cols = [column(f) for f in self.feature_names]
        return np.column_stack(cols) if cols else np.empty((len(X), 0))

    def __repr__(self) -> str:
        solver = self.config.get("solver", "?")
        return (
            f"<FittedModel {solver}: {', '.join(self.target_names)} ~ {', '.join(self.feature_names[:6])}"
            f"{', …' if self.n_features > 6 else ''} ({self.info.get('n_rows', '?')} rows)>"
        )

    def _repr_html_(self) -> str:
        from .display import model_html

        return model_html(self, title=repr(self))

    # -- persistence -------------------------------------------------------------------------
    def save(self, path: str) -> None:
        """Write the model to a ``.safetensors`` file, atomically (a temporary file, then a rename).

        Parameters
        ----------
        path : str or path-like
            Ending in ``.safetensors``.

        Raises
        ------
        ConfigError
            A folder, or another suffix (a ``.pkl`` or ``.joblib`` name would promise a pickle).
        """
        import os

        path = os.fspath(path)
        if os.path.isdir(path):
            raise ConfigError(f"{path}: is a folder; give a file name ending in .safetensors")
        if not str(path).lower().endswith(".safetensors"):
            suffix = os.path.splitext(str(path))[1]
            raise ConfigError(
                f"{path}: a model file's name must end in .safetensors; got {suffix or 'no suffix'!r} "
                "(gradreg writes safetensors, never a pickle)"
            )
        tensors = {k: getattr(self, k) for k in TENSORS}
        stats = [self.stats[t] for t in self.target_names] if self.stats else []
        for name in STAT_ARRAYS[1:]:
            if stats:
                tensors[f"stats.{name}"] = np.array([s[name] for s in stats], dtype=np.float64)
        if stats and self.cov is not None and self.cov_center is not None:  # what the intervals need
            tensors["stats.cov"], tensors["stats.cov_center"] = self.cov, self.cov_center
        meta = {
            "feature_names": self.feature_names,
            "target_names": self.target_names,
            "schema": self.schema,
            "config": self.config,
            "metrics": self.metrics,
            "optimum": dict(self.optimum),
            "stats": [
                {
                    k: _infinite_as_text(s[k])
                    for k in STAT_SCALARS + ("cov_type", "conf_level", "cov_detail", "df_inference", "f_note")
                    if k in s
                }
                for s in stats
            ],
            "history": self.history,
            "info": self.info,
            "warnings": self.warnings,
        }
        persist.save(path, tensors, meta)

    @classmethod
    def load(cls, path: str) -> FittedModel:
        """Read a model file; loading cannot run code (no pickle).

        Parameters
        ----------
        path : str

        Returns
        -------
        FittedModel

        Raises
        ------
        ModelFileError
            A missing, truncated or corrupted file, an unknown format version, or tensors whose
            shapes do not match the names in the metadata.
        """
        tensors, meta = persist.load(path)
        try:
            features = [str(f) for f in meta["feature_names"]]
            targets = [str(t) for t in meta["target_names"]]
        except (KeyError, TypeError):
            raise ModelFileError(f"{path}: model metadata lacks feature_names/target_names") from None
        p, q = len(features), len(targets)
        has_intercept = bool((meta.get("config") or {}).get("fit_intercept", True))
        k = p + int(has_intercept)
        expected = {"coef": (q, p), "intercept": (q,), "x_mean": (p,), "x_scale": (p,), "y_mean": (q,), "y_scale": (q,)}
        expected.update({f"stats.{n}": (q, k) for n in STAT_ARRAYS[1:]})
        expected.update({"stats.cov": (q, k, k), "stats.cov_center": (p,)})
        extra = sorted(set(tensors) - set(expected))
        if extra:
            raise ModelFileError(f"{path}: unexpected tensor {extra[0]!r} in model file")
        for name, shape in expected.items():
            if name in tensors and tensors[name].shape != shape:
                raise ModelFileError(
                    f"{path}: tensor {name!r} has shape {list(tensors[name].shape)}; the metadata implies {list(shape)}"
                )
        missing = [n for n in TENSORS if n not in tensors]
        if missing:
            raise ModelFileError(f"{path}: model file lacks tensor(s) {', '.join(missing)}")
        if ("stats.cov" in tensors) != ("stats.cov_center" in tensors) or ("stats.cov" in tensors and not meta.get("stats")):
            raise ModelFileError(f"{path}: the covariance of the estimates comes without its center or its statistics")
        stats = []
        raw_stats = meta.get("stats") or []
        if raw_stats:
            if len(raw_stats) != q or any(f"stats.{n}" not in tensors for n in STAT_ARRAYS[1:]):
                raise ModelFileError(f"{path}: statistics do not match the {q} target(s)")
            for t, s in enumerate(raw_stats):
                entry = {k: (np.nan if v is None else _text_as_infinite(v)) for k, v in s.items()}
                entry["coef"] = (
                    np.concatenate([[tensors["intercept"][t]], tensors["coef"][t]]) if has_intercept else tensors["coef"][t]
                )
                for n in STAT_ARRAYS[1:]:
                    entry[n] = tensors[f"stats.{n}"][t]
                stats.append(entry)
        return cls(
            feature_names=features,
            target_names=targets,
            coef=tensors["coef"],
            intercept=tensors["intercept"],
            x_mean=tensors["x_mean"],
            x_scale=tensors["x_scale"],
            y_mean=tensors["y_mean"],
            y_scale=tensors["y_scale"],
            config=meta.get("config") or {},
            metrics=meta.get("metrics") or {},
            optimum=Optimum.from_dict(meta.get("optimum")),
            stats=stats,
            history=meta.get("history") or [],
            info=meta.get("info") or {},
            warnings=meta.get("warnings") or [],
            schema=_read_schema(meta.get("schema"), features, targets, meta.get("info") or {}, path),
            cov=tensors.get("stats.cov"),
            cov_center=tensors.get("stats.cov_center"),
        )

    def to_json(self) -> dict[str, Any]:
        """The model as JSON-ready data: what ``gradreg inspect --json`` prints (NaN is None).

        Returns
        -------
        dict
        """
        out: dict[str, Any] = {
            "features": self.feature_names,
            "targets": self.target_names,
            "coef": self.coef.tolist(),
            "intercept": self.intercept.tolist(),
            "metrics": self.metrics,
            "optimum": dict(self.optimum),
            "config": self.config,
            "info": self.info,
            "warnings": self.warnings,
            "schema": self.schema,
        }
        if self.stats:  # the same shape as self.stats; ±inf (an exact fit's t, F) as "inf"/"-inf"
            out["stats"] = {t: {k: _infinite_as_text(v) for k, v in self.stats[t].items()} for t in self.target_names}
        return persist.jsonable(out)


def make_schema(
    feature_names: list[str],
    target_names: list[str],
    dtypes: dict[str, str] | None = None,
    named: bool = True,
    design: Any = None,
) -> dict[str, Any]:
    """The input schema a model file carries: names and order, dtypes as read, and whether the
    names are real column names.

    Parameters
    ----------
    feature_names, target_names : list of str
    dtypes : dict of str to str, optional
        Column name → type as read (``"double"``, ``"int64"``, ``"float32"``…); ``"float64"`` if absent.
    named : bool
        False when x0, x1, … stand in for an array's columns.
    design : gradreg.io.design.Design, optional
        How the features are made from the input columns (categorical levels, a formula): stored
        as plain JSON, with the input columns and their types.

    Returns
    -------
    dict
    """
    dtypes = dtypes or {}
    out = {
        "features": [{"name": f, "dtype": dtypes.get(f, "float64")} for f in feature_names],
        "targets": [{"name": t, "dtype": dtypes.get(t, "float64")} for t in target_names],
        "named": bool(named),
    }
    if design is not None:
        out["inputs"] = [{"name": n, "dtype": dtypes.get(n, "unknown")} for n in design.inputs]
        out["design"] = design.to_json()
    return out


def _read_schema(raw: Any, features: list[str], targets: list[str], info: dict, path: str) -> dict[str, Any]:
    """The schema of a model file, checked against its feature and target names (files written
    before the schema existed get one from those names)."""
    if raw is None:
        return make_schema(features, targets, named=info.get("named_features", True))
    try:
        names = [str(c["name"]) for c in raw["features"]], [str(c["name"]) for c in raw["targets"]]
    except (KeyError, TypeError):
        raise ModelFileError(f"{path}: model schema lacks feature/target names") from None
    if names != (features, targets):
        raise ModelFileError(f"{path}: the model's schema does not match its feature and target names")
    if raw.get("design") is not None:
        from .io.design import Design

        design = Design.from_json(raw["design"], path)  # checked here: a bad formula never reaches predict
        if design.feature_names != features:
            raise ModelFileError(f"{path}: the model's design does not match its feature names")
    dates = raw.get("dates")
    if dates is not None and (
        not isinstance(dates, dict) or not all(isinstance(k, str) and v in ("days", "parts") for k, v in dates.items())
    ):
        raise ModelFileError(f"{path}: the model's date columns must map names to days or parts; got {dates!r}")
    return raw


def _infinite_as_text(v: Any) -> Any:
    """±inf as "inf"/"-inf" (JSON has no infinity; an exact fit's F and t are infinite)."""
    if isinstance(v, (float, np.floating)) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if isinstance(v, np.ndarray) and v.dtype.kind == "f" and np.isinf(v).any():
        return [_infinite_as_text(x) for x in v.tolist()]
    return v


def _text_as_infinite(v: Any) -> Any:
    return {"inf": math.inf, "-inf": -math.inf}.get(v, v) if isinstance(v, str) else v


def stop_reason(config: dict[str, Any], info: dict[str, Any], history: list[dict]) -> str | None:
    """Why gradient descent stopped before its last epoch, in one line; None when it ran them all.

    Parameters
    ----------
    config : dict
        The model's :class:`~gradreg.config.TrainConfig` as a dict (``epochs``, ``early_stopping``).
    info : dict
        With ``stopped_early``, ``stopped_by`` ("tol" or "early_stopping"), ``epochs_run`` and
        ``best_epoch``.
    history : list of dict
        Per epoch; a ``val_loss`` in it means early stopping watched the validation loss.

    Returns
    -------
    str or None
    """
    if not info.get("stopped_early"):
        return None
    if info.get("stopped_by") == "noise floor":
        epoch, floor = info.get("epochs_run", len(history)), info.get("noise_floor_epoch")
        return (
            f"converged at epoch {epoch} of {config.get('epochs')}: the training loss stopped improving at epoch "
            f"{floor} (the minibatch noise floor), so the last {epoch - floor} epochs annealed the learning rate to 0"
        )
    if info.get("stopped_by") == "tol":
        return (
            f"converged at epoch {info.get('epochs_run', len(history))} of {config.get('epochs')}: the training loss "
            f"is within tol={config.get('tol'):g} of the exact optimum, so the remaining epochs were skipped"
        )
    # the loop watches the validation loss when there is one, else the training loss
    watched = "validation loss" if history and "val_loss" in history[-1] else "training loss (there is no validation split)"
    return (
        f"stopped early at epoch {info.get('epochs_run', len(history))} of {config.get('epochs')}: the {watched} "
        f"did not improve for {config.get('early_stopping')} epochs (best at epoch {info.get('best_epoch')}; its weights are kept)"
    )


GAP_TOLERANCE = 0.01  # a gradient-descent fit more than 1% above the exact optimum has not converged
# Below this fraction of the target's mean square the optimum counts as 0 (an exact fit): the
# relative gap is then meaningless, and the absolute one is judged instead. Float32 descent ends
# about 1e-14 of it above an exact fit; 1e-10 leaves room without hiding a real gap.
NEAR_ZERO = 1e-10


def gap_to_optimum(objective: float, optimum: float, y_square: float) -> dict[str, Any]:
    """How far a fit's objective is above the exact optimum, and whether that is within tolerance.

    Parameters
    ----------
    objective, optimum : float
        Mean over targets of the fit's and the optimum's objective (MSE, + ridge penalty).
    y_square : float
        Mean over targets of the target's (weighted) mean square: the scale against which an
        optimum of about 0 is judged.

    Returns
    -------
    dict
        ``gap`` (relative; NaN when the optimum is about 0), ``gap_abs``, ``optimum_near_zero``
        and ``within_tolerance`` (gap ≤ 1%, or an absolute gap ≤ 1e-10 of ``y_square`` when the
        optimum is about 0).
    """
    excess = objective - optimum
    floor = NEAR_ZERO * max(y_square, 0.0)
    near_zero = optimum <= floor
    gap = math.nan if near_zero else excess / optimum
    within = excess <= floor if near_zero else excess <= GAP_TOLERANCE * optimum + floor
    return {"gap": gap, "gap_abs": excess, "optimum_near_zero": bool(near_zero), "within_tolerance": bool(within)}
