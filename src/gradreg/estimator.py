"""A scikit-learn estimator over gradreg's solvers.

:class:`LinearRegressor` is a real scikit-learn estimator (``BaseEstimator`` + ``RegressorMixin``):
``get_params``/``set_params``, ``clone``, ``repr``, input validation, ``n_features_in_`` and
``feature_names_in_`` all come from scikit-learn itself, so it behaves like any other regressor in
``Pipeline``, ``cross_val_score`` and ``GridSearchCV``. What it adds is gradreg's fit: minibatch
gradient descent under autograd or exact least squares, with statistics and the gap to the optimum.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from .config import MAX_LEVELS, TrainConfig
from .errors import DataError, warn_user
from .fitted import FittedModel
from .io import Dataset, as_2d_float, require_numeric_columns
from .pipeline import train, update

__all__ = ["LinearRegressor", "load"]

# scikit-learn's estimator checks that gradient descent fails by design, with the reason.
# tests/test_sklearn.py passes these to parametrize_with_checks as expected failures; every other
# check must pass for both solvers.
EXPECTED_FAILED_CHECKS: dict[str, dict[str, str]] = {
    "gd": {
        "check_sample_weight_equivalence_on_dense_data": (
            "minibatch gradient descent visits rows in a seeded random order, so dropping the zero-weight rows "
            "(or repeating rows instead of weighting them) changes the batches and therefore the iterates; the "
            "fit agrees with the optimum to the tolerance of SGD, not to scikit-learn's 1e-7. The exact solver, "
            "which solves the same weighted objective, passes this check."
        ),
    },
    "exact": {},
}


class LinearRegressor(RegressorMixin, BaseEstimator):
    """Linear regression fitted by minibatch gradient descent or by exact least squares.

    ``__init__`` only stores its parameters, as scikit-learn requires; they are checked in
    :meth:`fit`. They mirror the ``gradreg train`` flags (see ``gradreg train --help``).

    Parameters
    ----------
    solver : {"gd", "exact"}, default="gd"
        ``"gd"``: minibatch gradient descent with autograd and torch.optim. ``"exact"``: a
        Householder-QR least-squares solve, accurate to the NIST StRD certified digits.
    epochs : int, default=50
        Passes over the training rows (gradient descent).
    batch_size : int or None, default=None
        Rows per step; ``None`` picks about ``n/64`` (at most 65536).
    lr : float or None, default=None
        Learning rate; ``None`` derives it from the data's curvature.
    optimizer : {"sgd", "momentum", "adam"}, default="sgd"
    lr_schedule : {"cosine", "constant"}, default="cosine"
    l2 : float, default=0.0
        Ridge penalty, applied to standardized coefficients (the intercept is never penalized).
    fit_intercept : bool, default=True
    standardize : bool, default=True
        Train on standardized features and targets (coefficients are reported in original units).
    val_fraction : float, default=0.0
        Fraction of rows held out for validation loss and early stopping.
    early_stopping : int or None, default=None
        Stop after this many epochs without a better validation loss, and keep the best epoch's
        weights. Without ``val_fraction`` it watches the training loss (as scikit-learn's
        ``SGDRegressor`` does with ``early_stopping=False``); see ``stop_reason_``.
    tol : float or None, default=1e-3
        Stop once an epoch's training objective is within this fraction of the exact optimum
        (computed first, on every fit), as ``SGDRegressor`` stops at its ``tol``; 0 or None runs
        every epoch. ``stop_reason_`` says when it stopped.
    seed : int, default=0
        Seeds the split, the initial weights and the batch order: same seed, same model.
    device : {"auto", "cpu", "cuda"}, default="auto"
    dtype : {"float32", "float64"}, default="float32"
        Precision of gradient descent; the exact solver always works in float64.
    cov_type : {"nonrobust", "HC0", "HC1", "HC2", "HC3", "cluster", "HAC"}, default="nonrobust"
        Covariance used for standard errors, as in statsmodels: "cluster" needs ``groups`` in
        :meth:`fit` (Stata's ``vce(cluster)``), "HAC" (Newey–West) needs ``maxlags``.
    maxlags : int or None, default=None
        Lags of the HAC covariance (rows in the order given).
    conf_level : float, default=0.95
        Confidence level of the coefficient intervals.
    formula : str, optional
        A Wilkinson formula, ``"y ~ x1 + np.log(x2) + C(region) + x1:x3"`` (formulaic's syntax;
        several targets ``"y1 + y2 ~ ..."``, no intercept ``"... - 1"``): :meth:`fit` then takes a
        DataFrame (``fit(df)``), and :meth:`predict` applies the same transforms, levels and
        state to new rows.
    categorical : str or list of str, optional
        Columns of a DataFrame to one-hot encode (a DataFrame's ``category`` and string columns
        are categorical anyway); the first level, sorted, is the reference, dropped when there is
        an intercept. Terms are named as statsmodels names them: ``region[T.north]``.
    reference : str or dict, optional
        The reference level: ``{"region": "south"}``, or a level when there is one categorical column.
    unknown : {"error", "ignore"}, default="error"
        At prediction, a level not seen in fit is an error, or gets all-zero dummies.
    max_levels : int, default=1000
        A categorical column with more levels is refused.

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,) or (n_targets, n_features)
        Coefficients in original units; 1-D when ``y`` was 1-D, as in scikit-learn.
    intercept_ : float or ndarray of shape (n_targets,)
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Only when ``X`` had string column names (a DataFrame).
    model_ : FittedModel
        Everything else: metrics, statistics, history, the exact optimum, versions.
    history_ : list of dict
        Per epoch: ``loss``, ``val_loss``, ``lr``, ``seconds`` (gradient descent only).
    n_iter_ : int
        Epochs run (0 for the exact solver).
    stopped_early_ : bool
        Whether ``early_stopping`` or ``tol`` ended gradient descent before its last epoch.
    best_epoch_ : int
        The epoch whose weights were kept: the best one with early stopping, else the last
        (0 for the exact solver).
    stop_reason_ : str or None
        Why training stopped early, in one line (which loss it watched, the best epoch); None
        when every epoch ran. :meth:`summary` shows it too.

    Examples
    --------
    >>> from gradreg import LinearRegressor
    >>> est = LinearRegressor(solver="exact").fit([[0.0], [1.0], [2.0]], [1.0, 3.0, 5.0])
    >>> est.coef_.round(6), round(est.intercept_, 6)
    (array([2.]), 1.0)
    """

    def __init__(
        self,
        *,
        solver: str = TrainConfig.solver,  # every default is TrainConfig's, written once there
        epochs: int = TrainConfig.epochs,
        batch_size: int | None = TrainConfig.batch_size,
        lr: float | None = TrainConfig.lr,
        optimizer: str = TrainConfig.optimizer,
        lr_schedule: str = TrainConfig.lr_schedule,
        l2: float = TrainConfig.l2,
        fit_intercept: bool = TrainConfig.fit_intercept,
        standardize: bool = TrainConfig.standardize,
        val_fraction: float = TrainConfig.val_fraction,
        early_stopping: int | None = TrainConfig.early_stopping,
        tol: float | None = TrainConfig.tol,
        seed: int = TrainConfig.seed,
        device: str = TrainConfig.device,
        dtype: str = TrainConfig.dtype,
        cov_type: str = TrainConfig.cov_type,
        conf_level: float = TrainConfig.conf_level,
        formula: str | None = None,
        categorical: str | list[str] | None = None,
        reference: str | dict[str, str] | None = None,
        unknown: str = "error",
        max_levels: int = MAX_LEVELS,
        maxlags: int | None = TrainConfig.maxlags,
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
        self.tol = tol
        self.seed = seed
        self.device = device
        self.dtype = dtype
        self.cov_type = cov_type
        self.conf_level = conf_level
        self.formula = formula
        self.categorical = categorical
        self.reference = reference
        self.unknown = unknown
        self.max_levels = max_levels
        self.maxlags = maxlags

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True  # one model, several targets: no MultiOutputRegressor needed
        tags.target_tags.single_output = True
        return tags

    def _config(self, groups: list[str] | None = None) -> TrainConfig:
        params = {k: v for k, v in self.get_params().items() if k not in DESIGN_PARAMS}
        cfg = TrainConfig(**params, groups=groups).validate()
        unused = cfg.unused()
        if unused:
            # A warning, not an error, as scikit-learn does for parameters the chosen solver ignores:
            # a grid over solver=["gd", "exact"] and lr must still run.

            given = ", ".join(f"{name}={getattr(cfg, name)!r}" for name in unused)
            verb, them = ("applies", "it") if len(unused) == 1 else ("apply", "them")
            warn_user(f"{given} {verb} to solver='gd'; solver='exact' does not use {them}", UserWarning)
        return cfg

    # -- fitting -----------------------------------------------------------------------------
    def fit(
        self,
        X: Any,
        y: Any = None,
        sample_weight: Any = None,
        *,
        target: str | list[str] | None = None,
        features: str | list[str] | None = None,
        weight: str | None = None,
        stream: bool | None = None,
        groups: Any = None,
        read: Any = None,
    ) -> LinearRegressor:
        """Fit the model, on arrays or on files.

        Files go through the CLI's path: CSV/TSV/Parquet files, folders and globs are read in
        memory when they fit (under 1 GiB as float64) and streamed chunk by chunk otherwise, and a
        process started by ``torchrun`` fits its shard of the rows with the other ranks (every
        rank gets the same model; see the README, "Many processes").

        Parameters
        ----------
        X : array-like, DataFrame, torch.Tensor of shape (n_samples, n_features), or str
            The rows, or a path: a CSV/TSV/Parquet file, a folder or glob of them (for example
            ``"data/*.parquet"``), a .npy/.npz file or a built-in table (``"crops"``).
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            With arrays. With a path, the target column name(s) may stand here instead of ``target``.
        sample_weight : array-like of shape (n_samples,), optional
            Non-negative weights: the weighted least-squares objective (WLS).
        target : str or list of str, optional
            With a path: the target column(s); one name gives 1-D predictions, a list 2-D.
        features : str or list of str, optional
            With a path: the feature columns (default: every other numeric column).
        weight : str, optional
            With a path: the column of sample weights.
        stream : bool, optional
            With a path: True streams whatever the size, False reads the rows whole, None decides
            by size.
        groups : array-like of shape (n_samples,) or (n_samples, 2), or str, optional
            For ``cov_type="cluster"``: each row's cluster (numbers or text; two columns for
            two-way clustering), or the group column name(s) (``"firm"`` or ``"firm,year"``) of
            the file or DataFrame, which are then not features (unless a formula or
            ``categorical`` names them: firm dummies clustered by firm).
        read : gradreg.io.ReadOptions or dict, optional
            With a path: how to read it, as ``ReadOptions.of`` takes it, e.g.
            ``{"delimiter": ";", "decimal": ",", "thousands": ".", "dates": ["day"], "dates_as": "parts"}``
            (the delimiter is detected when not given). Date columns are recorded in the model.

        Returns
        -------
        self : LinearRegressor

        Warns
        -----
        sklearn.exceptions.ConvergenceWarning
            Gradient descent ended more than 1% above the exact optimum's MSE (or, for data that
            a linear model fits exactly, measurably above it); the message names the remedy, and
            ``model_.info["converged"]`` is False.
        gradreg.solvers.exact.RankWarning
            Constant or collinear columns, or fewer rows than coefficients.
        """
        if isinstance(X, (str, os.PathLike)):
            return self._fit_path(os.fspath(X), target if target is not None else y, features, weight, stream, groups, read)
        if target is not None or features is not None or weight is not None or stream is not None or read is not None:
            raise TypeError("target, features, weight, stream and read go with a path; with arrays, pass y and sample_weight")
        request = self._design_request()
        group_names = None
        if isinstance(groups, str) or (isinstance(groups, (list, tuple)) and groups and all(isinstance(g, str) for g in groups)):
            # column names of the DataFrame X, as with a path: groups="firm" or "firm,year"
            group_names = [
                c.strip() for g in ([groups] if isinstance(groups, str) else groups) for c in g.split(",") if c.strip()
            ]
            lacking = [c for c in group_names if not hasattr(X, "columns") or c not in X.columns]
            if lacking:
                raise DataError(f"groups: X has no column {lacking[0]!r}; give the group values, or a column of X by name")
            groups = X[group_names]
            if request.formula is None:  # as with a path, not a feature unless named categorical
                X = X.drop(columns=[c for c in group_names if c not in request.categorical])
        group_values = _group_arrays(groups)
        cfg = self._config(group_names or (None if group_values is None else [f"groups[{i}]" for i in range(len(group_values))]))
        if request.wanted or _has_categories(X):
            return self._fit_table(X, y, sample_weight, cfg, request, group_values)
        if y is None:
            raise ValueError(
                "LinearRegressor requires y to be passed, but the target y is None "
                "(or give formula='y ~ ...' and a DataFrame that holds y)"
            )
        Xa, Ya, w, y_1d, names, target_names = self._arrays(X, y, sample_weight, reset=True, min_samples=2)
        if w is not None and not (w > 0).any():
            raise DataError("sample_weight: all weights are zero; at least one must be > 0")
        _check_groups(group_values, len(Xa))
        ds = Dataset(Xa, Ya, names, target_names, w, "<array>", dtypes=_dtypes(X, names), groups=group_values)
        self._set_fitted(train(ds, cfg), y_1d)
        self.__dict__.pop("_state", None)  # fit starts afresh; partial_fit continues from here
        return self

    def _design_request(self):
        from .io.design import DesignRequest, parse_reference

        categorical = [self.categorical] if isinstance(self.categorical, str) else list(self.categorical or [])
        categorical = [c.strip() for item in categorical for c in str(item).split(",") if c.strip()]
        return DesignRequest(
            formula=self.formula,
            categorical=categorical,
            reference=parse_reference(self.reference, categorical),
            max_levels=self.max_levels,
            unknown=self.unknown,
        )

    def _fit_table(
        self, X: Any, y: Any, sample_weight: Any, cfg: TrainConfig, request: Any, group_values: Any = None
    ) -> LinearRegressor:
        """:meth:`fit` on a DataFrame through a design: categorical columns, a formula."""
        from .io import read_table, select

        if not hasattr(X, "columns"):
            raise TypeError("formula= and categorical= read columns by name: give X as a DataFrame (or a dict of columns)")
        frame = X.copy()
        targets = None
        lhs = _formula_targets(request.formula)
        if y is not None and lhs:
            # scikit-learn passes y (cross_val_score, score); the formula names the targets itself:
            # X's own target columns are used, or y under the one plain name left of '~'
            missing = [t for t in lhs if t not in frame.columns]
            if missing and len(lhs) == 1:
                frame[lhs[0]] = np.asarray(_numpy(y)).reshape(len(frame), -1)[:, 0]
            elif missing:
                raise ValueError(
                    f"formula {request.formula!r}: X lacks the target column(s) {missing}; y cannot stand for several"
                )
            elif len(lhs) == 1:  # y beside X's own target column: they must be the same numbers
                given = np.asarray(_numpy(y), dtype=np.float64).reshape(len(frame), -1)[:, 0]
                own = np.asarray(frame[lhs[0]], dtype=np.float64)
                if given.shape != own.shape or not np.allclose(given, own, rtol=0, atol=0, equal_nan=True):
                    raise ValueError(
                        f"formula {request.formula!r} fits X's column {lhs[0]!r}, and y holds other values; "
                        f"pass y=None, or X without {lhs[0]!r} to fit y"
                    )
            y = None
        if y is not None:
            y = _numpy(y)
            y_arr = np.asarray(y)
            targets = _target_names(y) or (["y"] if y_arr.ndim == 1 else [f"y{t}" for t in range(y_arr.shape[1])])
            clash = [t for t in targets if t in frame.columns]
            if clash:
                raise ValueError(f"y's column {clash[0]!r} is also a column of X; rename one of them")
            cols = y_arr.reshape(len(y_arr), -1)
            for j, t in enumerate(targets):
                frame[t] = cols[:, j]
        ds = select(read_table(frame, name="X"), targets, None, design=request, fit_intercept=cfg.fit_intercept)
        if sample_weight is not None:
            w = _check_sample_weight(sample_weight, ds.X, dtype=np.float64, ensure_non_negative=True)
            if not (w > 0).any():
                raise DataError("sample_weight: all weights are zero; at least one must be > 0")
            ds.sample_weight = w
        if group_values is not None:
            _check_groups(group_values, len(ds.X))
            ds.groups = group_values
        model = train(ds, cfg)
        inputs = ds.design.inputs if ds.design is not None else ds.feature_names
        self.feature_names_in_ = np.asarray(inputs, dtype=object)
        self.n_features_in_ = len(inputs)
        y_1d = (y is not None and np.asarray(y).ndim == 1) or (y is None and len(ds.target_names) == 1)
        self._set_fitted(model, y_1d)
        self.__dict__.pop("_state", None)
        return self

    def _fit_path(
        self,
        path: str,
        target: Any,
        features: Any,
        weight: str | None,
        stream: bool | None,
        groups: Any = None,
        read: Any = None,
    ) -> LinearRegressor:
        """:meth:`fit` on files: the library's source (in memory or streamed), on every rank of a
        torchrun job when this process is one."""
        from . import distributed
        from .io import open_source

        request = self._design_request()
        if request.formula is None and (
            target is None or (not isinstance(target, str) and not all(isinstance(t, str) for t in target))
        ):
            raise TypeError(f"fit({path!r}): name the target column(s): target='y' or target=['y1', 'y2']; got {target!r}")
        if groups is not None and not (isinstance(groups, str) or all(isinstance(g, str) for g in groups)):
            raise TypeError(f"fit({path!r}): with a path, groups names the group column(s): groups='firm'; got {groups!r}")
        cfg = self._config(None if groups is None else ([groups] if isinstance(groups, str) else list(groups)))
        comm = distributed.init(device=cfg.device)  # SINGLE unless torchrun started this process
        from .io import ReadOptions

        options = read if isinstance(read, ReadOptions) or read is None else ReadOptions.of(**read)
        source = open_source(
            path,
            target,
            features,
            weight=weight,
            stream=stream,
            comm=comm,
            design=request,
            fit_intercept=cfg.fit_intercept,
            groups=cfg.groups,
            options=options,
        )
        model = train(source, cfg, comm)
        design = getattr(source, "design", None)
        inputs = design.inputs if design is not None else source.feature_names
        self.feature_names_in_ = np.asarray(inputs, dtype=object)
        self.n_features_in_ = len(inputs)
        one = isinstance(target, str) or (target is None and len(source.target_names) == 1)
        self._set_fitted(model, one and len(source.target_names) == 1)
        self.__dict__.pop("_state", None)
        return self

    def _arrays(self, X: Any, y: Any, sample_weight: Any, *, reset: bool, min_samples: int) -> tuple:
        """scikit-learn's validation, then gradreg's: (X, Y 2-D, w, y was 1-D, feature and target names)."""
        target_names = _target_names(y)
        require_numeric_columns(X, "X")
        require_numeric_columns(y, "y")
        X, y = validate_data(
            self,
            _numpy(X),
            _numpy(y),
            reset=reset,
            multi_output=True,
            y_numeric=True,
            dtype=[np.float64, np.float32],  # float32 stays float32: no copy of a large X
            ensure_all_finite=False,  # checked by as_2d_float, with the row and column named
            ensure_min_samples=min_samples,
        )
        Xa, Ya = as_2d_float(X, "X", getattr(self, "feature_names_in_", None)), as_2d_float(y, "y", target_names)
        w = None if sample_weight is None else _check_sample_weight(sample_weight, Xa, dtype=np.float64, ensure_non_negative=True)
        names = [str(f) for f in getattr(self, "feature_names_in_", [f"x{j}" for j in range(Xa.shape[1])])]
        if target_names is None:
            target_names = ["y"] if y.ndim == 1 else [f"y{t}" for t in range(Ya.shape[1])]
        return Xa, Ya, w, y.ndim == 1, names, target_names

    def partial_fit(self, X: Any, y: Any, sample_weight: Any = None) -> LinearRegressor:
        """Fit incrementally on one batch of rows; call again with the next batch.

        With ``solver="exact"`` every batch's QR factor is merged into the running one, so after
        any number of calls the coefficients and the (nonrobust) statistics are those of one fit
        on all rows seen. With ``solver="gd"`` each call is one shuffled pass over its batch, at a
        learning rate that decays as 1/√t with the rows seen (as ``SGDRegressor``'s does); the
        first batch fixes the standardization, batch size and base learning rate, and the
        optimizer's state carries over.
        A call after :meth:`fit` continues from that fit.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
        sample_weight : array-like of shape (n_samples,), optional

        Returns
        -------
        self : LinearRegressor
        """
        if self.solver == "exact" and self.cov_type in ("cluster", "HAC"):
            raise ValueError(
                f"partial_fit: cov_type={self.cov_type!r} needs a pass over every row; use fit, or cov_type='nonrobust'"
            )
        cfg = self._config()
        if self._design_request().wanted or _has_categories(X) or (hasattr(self, "model_") and self.model_.design is not None):
            raise ValueError("partial_fit takes numeric columns; a formula or categorical columns need fit (or streamed files)")
        first = not hasattr(self, "model_")
        if not first and self.model_.config.get("solver") != cfg.solver:
            raise ValueError(
                f"partial_fit: the model was fitted with solver={self.model_.config.get('solver')!r}; got {cfg.solver!r}"
            )
        if cfg.solver == "exact" and cfg.cov_type != "nonrobust":
            raise ValueError(
                f"partial_fit: cov_type={cfg.cov_type!r} needs a pass over every row; use fit, or cov_type='nonrobust'"
            )
        Xa, Ya, w, y_1d, names, targets = self._arrays(X, y, sample_weight, reset=first, min_samples=1)
        if not first:
            if y_1d != self._y_1d:
                raise ValueError("partial_fit: y must keep the shape it had in the first call (1-D or 2-D)")
            if Ya.shape[1] != len(self.model_.target_names):
                raise ValueError(f"partial_fit: y has {Ya.shape[1]} target(s); the model has {len(self.model_.target_names)}")
            targets = self.model_.target_names
        model, self._state = update(None if first else self.model_, getattr(self, "_state", None), Xa, Ya, w, names, targets, cfg)
        self._set_fitted(model, y_1d)
        return self

    def _set_fitted(self, model: FittedModel, y_1d: bool) -> None:
        self.model_ = model
        model.info["y_1d"] = y_1d
        named = hasattr(self, "feature_names_in_")  # False: x0, x1, ... stand in
        model.info["named_features"] = named
        model.schema["named"] = named
        self._y_1d = y_1d
        self.coef_ = model.coef[0].copy() if y_1d else model.coef.copy()
        self.intercept_ = float(model.intercept[0]) if y_1d else model.intercept.copy()
        self.history_ = model.history
        self.n_iter_ = len(model.history)
        self.stopped_early_ = bool(model.info.get("stopped_early", False))
        self.best_epoch_ = int(model.info.get("best_epoch", 0))
        self.stop_reason_ = model.info.get("stop_reason")

    def predict(self, X: Any, return_std: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Predict.

        Parameters
        ----------
        X : array-like, DataFrame or torch.Tensor of shape (n_samples, n_features)
            Columns in the order (and, for a DataFrame, with the names) seen in :meth:`fit`.
        return_std : bool
            Also return the standard deviation of a new observation's prediction error,
            √(σ² + x̃ᵀ Cov x̃): the noise σ² included, as scikit-learn's
            ``BayesianRidge.predict(return_std=True)``; Cov is the covariance of the estimates
            as the statistics computed it (``cov_type``). Not for a ridge fit (``l2`` > 0).
            For intervals, see :meth:`predict_interval`.

        Returns
        -------
        y : ndarray of shape (n_samples,) when ``y`` was 1-D in fit, else (n_samples, n_targets)
        std : ndarray of the same shape
            Only with ``return_std=True``.
        """
        X = self._features(X)
        out = self.model_.predict_matrix(X)
        if not return_std:
            return out[:, 0] if self._y_1d else out
        std = self.model_.std_matrix(X)
        return (out[:, 0], std[:, 0]) if self._y_1d else (out, std)

    def predict_interval(
        self, X: Any, interval: str = "confidence", level: float = 0.95
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Predictions with a confidence interval for the mean response or a prediction interval
        for a new observation: statsmodels' ``get_prediction(X).summary_frame()`` ``mean_ci`` and
        ``obs_ci`` (see :meth:`gradreg.fitted.FittedModel.predict_interval`).

        Parameters
        ----------
        X : array-like, DataFrame or torch.Tensor of shape (n_samples, n_features)
        interval : {"confidence", "prediction"}
        level : float
            In (0, 1).

        Returns
        -------
        y, lower, upper : ndarray of shape (n_samples,) when ``y`` was 1-D in fit, else (n_samples, n_targets)

        Raises
        ------
        ConfigError
            An unknown ``interval``, a ``level`` outside (0, 1), or a ridge fit (``l2`` > 0).
        """
        out = self.model_.interval_matrix(self._features(X), interval, level)
        return tuple(a[:, 0] for a in out) if self._y_1d else out

    def _features(self, X: Any) -> np.ndarray:
        """X checked as scikit-learn checks it, as the model's 2-D float feature matrix."""
        check_is_fitted(self)
        design = self.model_.design
        if design is not None:  # the columns the design reads, by name: a DataFrame or dict
            if self.unknown != design.unknown:
                self.model_.schema["design"] = design.with_unknown(self.unknown).to_json()
            return self.model_._by_name(X)
        require_numeric_columns(X, "X")
        X = validate_data(self, _numpy(X), reset=False, dtype=[np.float64, np.float32], ensure_all_finite=False)
        return as_2d_float(X, "X", getattr(self, "feature_names_in_", None))

    def summary(self, target: int | str | None = None):
        """A statsmodels-style summary of the fit: prints as text, shows as HTML in a notebook.

        Parameters
        ----------
        target : int or str, optional
            One target (by index or name); default all of them.

        Returns
        -------
        gradreg.display.Summary
            ``print()`` it, or call ``as_text()`` / ``as_html()``.
        """
        from .display import Summary

        check_is_fitted(self)
        return Summary(self.model_, target)

    def save(self, path: str) -> None:
        """Write the fitted model to a ``.safetensors`` file (atomically; never pickled).

        Parameters
        ----------
        path : str
        """
        check_is_fitted(self)
        self.model_.save(path)

    # -- notebook display --------------------------------------------------------------------
    def _repr_html_(self) -> str:
        """The coefficient table once fitted; scikit-learn's estimator diagram before."""
        if not hasattr(self, "model_"):
            return super()._repr_html_inner()
        from .display import model_html

        return model_html(self.model_, title=repr(self))

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, str]:
        # Jupyter asks for the mime bundle first; scikit-learn's would show only the diagram.
        return {"text/plain": repr(self), "text/html": self._repr_html_()}


DESIGN_PARAMS = ("formula", "categorical", "reference", "unknown", "max_levels")  # not TrainConfig's: how X is read


def _numpy(a: Any) -> Any:
    """A torch tensor (any device) as a numpy array; everything else unchanged."""
    if hasattr(a, "detach") and hasattr(a, "cpu") and hasattr(a, "numpy"):
        return a.detach().cpu().numpy()
    return a


def _dtypes(X: Any, names: list[str]) -> dict[str, str]:
    """Each feature's dtype as given (a DataFrame's per column, an array's for all)."""
    dtypes = getattr(X, "dtypes", None)
    if dtypes is not None and hasattr(dtypes, "items") and hasattr(X, "columns"):
        return {str(k): str(v) for k, v in dtypes.items()}
    dtype = getattr(X, "dtype", None)
    return {n: str(dtype).replace("torch.", "") for n in names} if dtype is not None else {}


def _formula_targets(formula: str | None) -> list[str]:
    """The columns left of a formula's '~' (none for no formula, or no left-hand side)."""
    if formula is None:
        return []
    from .io.design import _parse

    return list(_parse(formula).target_inputs)  # none without a left-hand side


def _has_categories(X: Any) -> bool:
    """Whether a DataFrame has columns that are categories (pandas ``category``, text): those
    make a design (one-hot dummies) instead of failing as non-numbers."""
    dtypes = getattr(X, "dtypes", None)
    if dtypes is None or not hasattr(dtypes, "items") or not hasattr(X, "columns"):
        return False
    return any(str(d) == "category" or str(d) in ("str", "string", "object") for _, d in dtypes.items())


def _target_names(y: Any) -> list[str] | None:
    cols = getattr(y, "columns", None)
    if cols is not None:
        return [str(c) for c in cols]
    name = getattr(y, "name", None)
    return [str(name)] if isinstance(name, str) else None


def load(path: str) -> LinearRegressor:
    """Load a model file written by gradreg as a fitted :class:`LinearRegressor`.

    The file is safetensors plus JSON: loading it cannot run code (no pickle).

    Parameters
    ----------
    path : str

    Returns
    -------
    LinearRegressor
        Fitted, with ``feature_names_in_`` set from the file's column names (unless the model
        was fitted on arrays without names).
    """
    model = FittedModel.load(path)
    params = {k: v for k, v in model.config.items() if k in LinearRegressor._get_param_names()}
    design = model.design
    if design is not None:
        params.update(
            formula=None if design.sugar else design.formula,
            categorical=list(design.levels) if design.sugar else None,
            unknown=design.unknown,
        )
    est = LinearRegressor(**params)
    est.n_features_in_ = model.n_features if design is None else len(design.inputs)
    if design is not None:
        est.feature_names_in_ = np.asarray(design.inputs, dtype=object)
    elif model.schema.get("named", True):  # from the file's schema: CLI models always have column names
        # set before _set_fitted, which records it: predict then matches DataFrame columns by
        # name and refuses others, exactly as the estimator that was saved did
        est.feature_names_in_ = np.asarray(model.feature_names, dtype=object)
    est._set_fitted(model, len(model.target_names) == 1 and model.info.get("y_1d", False))
    return est


def _check_groups(group_values: list[np.ndarray] | None, n_rows: int) -> None:
    """One group value per row of X, none missing: a DataError naming the first bad one."""
    for i, g in enumerate(group_values or []):
        if len(g) != n_rows:
            raise DataError(f"groups: {len(g)} value(s) for {n_rows} row(s) of X")
        bad = np.flatnonzero([v is None or (isinstance(v, float) and v != v) for v in g.tolist()])
        if bad.size:
            raise DataError(f"groups, row {bad[0] + 1}, column {i}: missing group value; got {g[bad[0]]!r}")


def _group_arrays(groups: Any) -> list[np.ndarray] | None:
    """``fit``'s groups as one array per group column (numbers or text), or None."""
    if groups is None:
        return None
    if hasattr(groups, "detach"):
        groups = groups.detach().cpu().numpy()
    if hasattr(groups, "columns"):  # a DataFrame: one array per column
        return [np.asarray(groups[c]) for c in groups.columns]
    arr = np.asarray(groups)
    if arr.ndim == 1:
        return [arr]
    if arr.ndim == 2 and arr.shape[1] in (1, 2):
        return [arr[:, j] for j in range(arr.shape[1])]
    raise DataError(f"groups: expected one value per row (two columns for two-way clustering); got shape {arr.shape}")
