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
    seed : int
        Seeds every random choice: the same seed gives the same model.
    device : {"auto", "cpu", "cuda"}
        "auto" is CUDA when available, else the CPU.
    dtype : {"float32", "float64"}
        Precision of gradient descent; the exact solver always uses float64.
    cov_type : {"nonrobust", "HC0", "HC1", "HC2", "HC3"}
        Covariance of the standard errors.
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
    seed: int = 0
    device: str = "auto"
    dtype: str = "float32"
    cov_type: str = "nonrobust"
    conf_level: float = 0.95

    def validate(self) -> TrainConfig:
        """Check every field.

        Returns
        -------
        TrainConfig
            ``self``, unchanged.

        Raises
        ------
        ConfigError
            Naming the option (as its CLI flag), the rule and the value.
        """

        def choice(name: str, options: tuple[str, ...]) -> None:
            value = getattr(self, name)
            if value not in options:
                raise ConfigError(f"--{name.replace('_', '-')} must be one of {', '.join(options)}; got {value!r}")

        choice("solver", SOLVERS)
        choice("optimizer", OPTIMIZERS)
        choice("lr_schedule", SCHEDULES)
        choice("device", DEVICES)
        choice("dtype", DTYPES)
        from .solvers.exact import COV_TYPES

        choice("cov_type", COV_TYPES)
        _positive_int("epochs", self.epochs)
        if self.batch_size is not None:
            _positive_int("batch_size", self.batch_size)
        if self.lr is not None and not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"--lr must be a positive number; got {self.lr!r}")
        if not (isinstance(self.l2, (int, float)) and math.isfinite(self.l2) and self.l2 >= 0):
            raise ConfigError(f"--l2 must be a number >= 0; got {self.l2!r}")
        if not (isinstance(self.val_fraction, (int, float)) and 0 <= self.val_fraction < 1):
            raise ConfigError(f"--val-fraction must be in [0, 1); got {self.val_fraction!r}")
        if self.early_stopping is not None:
            _positive_int("early_stopping", self.early_stopping)
        if not (isinstance(self.conf_level, (int, float)) and 0 < self.conf_level < 1):
            raise ConfigError(f"--conf-level must be between 0 and 1; got {self.conf_level!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ConfigError(f"--seed must be an integer >= 0; got {self.seed!r}")
        return self

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
        raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer; got {value!r}")


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
        raise ConfigError("--device cuda: no CUDA device is available (torch.cuda.is_available() is False)")
    return torch.device(name)
