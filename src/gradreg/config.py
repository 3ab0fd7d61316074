"""Training configuration: one dataclass, one commented default per field; CLI flags map to it."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from .errors import ConfigError

__all__ = ["TrainConfig", "resolve_device"]

SOLVERS = ("gd", "exact")
OPTIMIZERS = ("sgd", "momentum", "adam")
SCHEDULES = ("cosine", "constant")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("float32", "float64")
COV_TYPES = ("nonrobust", "HC0", "HC1", "HC2", "HC3", "cluster", "HAC")  # statsmodels' names for the covariance of the estimates
MAX_LEVELS = 1000  # a categorical column with more levels identifies rows rather than grouping them: refused
INTERVALS = ("confidence", "prediction")  # for the mean response, and for a new observation (statsmodels' mean_ci, obs_ci)
# What only gradient descent reads: the exact solver ignores these (see TrainConfig.unused).
GD_ONLY = ("epochs", "batch_size", "lr", "optimizer", "lr_schedule", "standardize", "early_stopping", "tol", "dtype")


@dataclass
class TrainConfig:
    """How to fit: every option of ``gradreg train`` (and of :class:`gradreg.LinearRegressor`).

    Parameters
    ----------
    solver : {"gd", "exact"}
        The tutorial's minibatch gradient descent, or least squares by QR.
    epochs : int
        Passes over the training rows (the tutorial's 50).
    batch_size : int or None
        Rows per step; None picks about n/64 (64 steps an epoch), at most 65536.
    lr : float or None
        Learning rate; None derives it from the largest curvature of the scaled problem.
    optimizer : {"sgd", "momentum", "adam"}
        Plain SGD as in the tutorial, SGD with momentum 0.9, or Adam.
    lr_schedule : {"cosine", "constant"}
        Cosine decay to 0 averages out the minibatch noise of the last steps.
    l2 : float
        Ridge penalty on the coefficients in the standardized scale (see README).
    fit_intercept : bool
        Fit the tutorial's bias b.
    standardize : bool
        False reproduces the tutorial: raw units and a random start.
    val_fraction : float
        Fraction of rows held out (seeded) for a validation loss each epoch, in [0, 1).
    early_stopping : int or None
        Stop after this many epochs without improvement and keep the best weights.
    tol : float or None
        Stop after an epoch whose weights' training objective is within this fraction of the
        exact optimum (which every fit computes first), as ``SGDRegressor`` stops at its ``tol``;
        0 or None runs every epoch. 1e-3 is ten times tighter than the 1% at which a fit is
        reported as not converged. The check costs one forward pass over the training rows, made
        only when the epoch's running loss is within ``tol``. With ``tol`` set, whitened descent
        at the automatic learning rate also stops at its minibatch noise floor: when the running
        loss's excess over the optimum stops halving, two more epochs anneal the rate to 0.
    seed : int
        Seeds every random choice: the same seed gives the same model.
    device : {"auto", "cpu", "cuda"}
        "auto" is CUDA when available, else the CPU.
    dtype : {"float32", "float64"}
        Precision of gradient descent; the exact solver always uses float64.
    cov_type : {"nonrobust", "HC0", "HC1", "HC2", "HC3", "cluster", "HAC"}
        Covariance of the standard errors: classical, heteroskedasticity-robust (HC*),
        cluster-robust by ``groups`` (Stata's ``vce(cluster)``), or Newey–West over ``maxlags``
        lags of the rows in the order read (``HAC``).
    groups : list of str or None
        The column(s) whose values name each row's cluster, for ``cov_type="cluster"``: one
        column, or two for two-way clustering. Not features.
    maxlags : int or None
        Lags of the Newey–West (Bartlett) covariance, for ``cov_type="HAC"`` (required there).
    conf_level : float
        Level of the coefficients' confidence intervals, in (0, 1).
    """

    solver: str = "gd"
    epochs: int = 50
    batch_size: int | None = None
    lr: float | None = None
    optimizer: str = "sgd"
    lr_schedule: str = "cosine"
    l2: float = 0.0
    fit_intercept: bool = True
    standardize: bool = True
    val_fraction: float = 0.0
    early_stopping: int | None = None
    tol: float | None = 1e-3
    seed: int = 0
    device: str = "auto"
    dtype: str = "float32"
    cov_type: str = "nonrobust"
    conf_level: float = 0.95
    groups: list[str] | None = None  # cluster columns (cov_type="cluster"); read beside X, never features
    maxlags: int | None = None  # Newey–West lags (cov_type="HAC"); no default: the choice is the user's

    def validate(self) -> TrainConfig:
        """Check every field.

        Returns
        -------
        TrainConfig
            ``self``, unchanged.

        Raises
        ------
        ConfigError
            Naming the option, the rule and the value; ``e.field`` is the field's name (the CLI
            shows its flag, see :meth:`gradreg.errors.GradregError.render`).
        """

        def choice(name: str, options: tuple[str, ...]) -> None:
            value = getattr(self, name)
            if value not in options:
                raise ConfigError(f"{{{name}}} must be one of {', '.join(options)}; got {{{name}=}}", **{name: value})

        choice("solver", SOLVERS)
        choice("optimizer", OPTIMIZERS)
        choice("lr_schedule", SCHEDULES)
        choice("device", DEVICES)
        choice("dtype", DTYPES)
        choice("cov_type", COV_TYPES)
        _positive_int("epochs", self.epochs)
        if self.batch_size is not None:
            _positive_int("batch_size", self.batch_size)
        if self.lr is not None and not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError("{lr} must be a positive number; got {lr=}", lr=self.lr)
        if not (isinstance(self.l2, (int, float)) and math.isfinite(self.l2) and self.l2 >= 0):
            raise ConfigError("{l2} must be a number >= 0; got {l2=}", l2=self.l2)
        if not (isinstance(self.val_fraction, (int, float)) and 0 <= self.val_fraction < 1):
            raise ConfigError("{val_fraction} must be in [0, 1); got {val_fraction=}", val_fraction=self.val_fraction)
        if self.early_stopping is not None:
            _positive_int("early_stopping", self.early_stopping)
        if self.tol is not None and not (isinstance(self.tol, (int, float)) and math.isfinite(self.tol) and self.tol >= 0):
            raise ConfigError("{tol} must be a number >= 0 (0 runs every epoch); got {tol=}", tol=self.tol)
        if not (isinstance(self.conf_level, (int, float)) and 0 < self.conf_level < 1):
            raise ConfigError("{conf_level} must be between 0 and 1; got {conf_level=}", conf_level=self.conf_level)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ConfigError("{seed} must be an integer >= 0; got {seed=}", seed=self.seed)
        self._validate_dependence()
        return self

    def _validate_dependence(self) -> None:
        """The settings of the cluster and HAC covariances (see :mod:`gradreg.solvers.dependence`)."""
        if self.groups is not None:
            if isinstance(self.groups, str):
                self.groups = [g.strip() for g in self.groups.split(",") if g.strip()]
            if not (isinstance(self.groups, (list, tuple)) and all(isinstance(g, str) and g for g in self.groups)):
                raise ConfigError("{groups} must name one or two columns; got {groups=}", groups=self.groups)
            self.groups = list(self.groups)
            if not 1 <= len(self.groups) <= 2 or len(set(self.groups)) != len(self.groups):
                raise ConfigError("{groups} must name one or two different columns; got {groups=}", groups=self.groups)
        if self.maxlags is not None and (isinstance(self.maxlags, bool) or not isinstance(self.maxlags, int) or self.maxlags < 0):
            raise ConfigError("{maxlags} must be an integer >= 0; got {maxlags=}", maxlags=self.maxlags)
        if self.cov_type == "cluster" and not self.groups:
            raise ConfigError(
                "{cov_type=} needs {groups}: the column(s) that name each row's cluster", cov_type=self.cov_type, groups=None
            )
        if self.groups and self.cov_type != "cluster":
            raise ConfigError("{groups} is for {cov_type} cluster; got {cov_type=}", groups=self.groups, cov_type=self.cov_type)
        if self.cov_type == "HAC" and self.maxlags is None:
            raise ConfigError("{cov_type=} needs {maxlags}: the number of lags (e.g. 4)", cov_type=self.cov_type, maxlags=None)
        if self.maxlags is not None and self.cov_type != "HAC":
            raise ConfigError("{maxlags} is for {cov_type} HAC; got {cov_type=}", maxlags=self.maxlags, cov_type=self.cov_type)
        if self.cov_type == "HAC" and self.val_fraction > 0:
            raise ConfigError(
                "{cov_type=} needs the rows in their order, which {val_fraction} breaks (a random split); "
                "got {val_fraction=}: hold out the last rows in a file of their own instead",
                cov_type=self.cov_type,
                val_fraction=self.val_fraction,
            )

    def unused(self) -> list[str]:
        """The fields set away from their defaults that the chosen solver does not read.

        Returns
        -------
        list of str
            Field names, in declaration order; empty for gradient descent, which reads them all.
        """
        if self.solver != "exact":
            return []
        defaults = TrainConfig()
        return [name for name in GD_ONLY if getattr(self, name) != getattr(defaults, name)]

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (what a model file stores).

        Returns
        -------
        dict
        """
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a dict such as :meth:`to_dict` wrote; unknown keys are ignored.

        Parameters
        ----------
        d : dict

        Returns
        -------
        TrainConfig
        """
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{{{name}}} must be a positive integer; got {{{name}=}}", **{name: value})


def resolve_device(name: str):
    """The torch device for a ``--device`` value.

    Parameters
    ----------
    name : {"auto", "cpu", "cuda"}
        "auto" is CUDA when available, else the CPU.

    Returns
    -------
    torch.device

    Raises
    ------
    ConfigError
        For "cuda" on a machine without a CUDA device.
    """
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("{device=}: no CUDA device is available (torch.cuda.is_available() is False)", device=name)
    return torch.device(name)
