"""Training configuration: one dataclass, one commented default per field; CLI flags map to it."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from .errors import ConfigError

SOLVERS = ("gd", "exact")
OPTIMIZERS = ("sgd", "momentum", "adam")
SCHEDULES = ("cosine", "constant")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("float32", "float64")


@dataclass
class TrainConfig:
    solver: str = "gd"  # the tutorial's minibatch gradient descent; "exact" for least squares by QR
    epochs: int = 50  # the tutorial's 50 passes
    batch_size: int | None = None  # None: auto, about n/64 rows (64 steps an epoch), at most 4096
    lr: float | None = None  # None: auto, from the largest curvature of the scaled problem
    optimizer: str = "sgd"  # plain SGD as in the tutorial; "momentum" (0.9) or "adam"
    lr_schedule: str = "cosine"  # decay to 0 so the last steps average out minibatch noise
    l2: float = 0.0  # ridge penalty on coefficients in the standardized scale (see README)
    fit_intercept: bool = True  # the tutorial's bias b
    standardize: bool = True  # False reproduces the tutorial: raw units, random init
    val_fraction: float = 0.0  # rows held out (seeded) for validation loss each epoch
    early_stopping: int | None = None  # stop after this many epochs without improvement
    seed: int = 0  # every run is reproducible from its seed
    device: str = "auto"  # cuda when available, else cpu
    dtype: str = "float32"  # gradient descent's tensors; the exact solver always uses float64
    cov_type: str = "nonrobust"  # standard errors: nonrobust or HC0..HC3 (heteroskedasticity-robust)
    conf_level: float = 0.95  # confidence intervals of the coefficients

    def validate(self) -> TrainConfig:
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
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer; got {value!r}")


def resolve_device(name: str):
    """'auto' → cuda when available else cpu; 'cuda' without a GPU is a clear error."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available (torch.cuda.is_available() is False)")
    return torch.device(name)
