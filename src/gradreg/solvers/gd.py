"""Minibatch gradient descent under autograd: the tutorial's loop, made fast and safe.

One set-up (:func:`setup`) and one epoch loop (:func:`fit_gd` → :func:`run_epoch` →
:func:`train_step`) serve every path; only where an epoch's batches come from differs:
:class:`Resident` rows held in memory (arrays, ``partial_fit``) or :class:`Streamed` chunks read
again each epoch, on one rank or many. Each epoch draws a fresh permutation without replacement
and slices it into batches (the last one may be partial) that index the tensors directly: a
per-sample DataLoader costs Python work for every row.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from ..config import TrainConfig, resolve_device
from ..distributed import SINGLE, Comm
from ..errors import ConfigError, DivergenceError
from ..model import LinearModel

__all__ = [
    "GDResult",
    "Descent",
    "setup",
    "Resident",
    "Streamed",
    "fit_gd",
    "run_epoch",
    "IncrementalGD",
    "auto_lr",
    "lr_from_curvature",
    "auto_batch_size",
    "half_threads",
]

DIVERGENCE_FACTOR = 1000.0  # an epoch loss this many times the best so far means divergence
ANNEAL = 2  # epochs over which descent at its noise floor anneals the rate to 0 before it stops


@dataclass
class GDResult:
    """What :func:`fit_gd` returns.

    Parameters
    ----------
    model : LinearModel
        The trained model (the best epoch's weights with early stopping).
    history : list of dict
        Per epoch: ``epoch``, ``loss``, ``val_loss``, ``lr``, ``seconds``, ``rows_per_s``.
    best_epoch : int
    stopped_early : bool
    stopped_by : {"tol", "noise floor", "early_stopping"} or None
        Why it stopped before its last epoch.
    floor_epoch : int or None
        With "noise floor": the epoch at which the loss stopped improving (the anneal followed).
    lr : float
        The base learning rate used (chosen when ``cfg.lr`` is None).
    batch_size : int
    resumed_from : int or None
        The checkpoint's epoch, when training resumed from one.
    """

    model: LinearModel
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False
    stopped_by: str | None = None
    floor_epoch: int | None = None
    lr: float = 0.0
    batch_size: int = 0
    resumed_from: int | None = None


_BLOCK = 65_536  # rows per block when measuring large arrays
_STEP_ROWS = 8_192  # rows per product when standardizing: the centered block (3 MB at 100 columns) stays in cache
# Largest rounding error of a float32 whitening product, estimated relative to a whitened value
# (about 1), up to which it is taken in float32: features off by 1e-5 move even an exact fit's MSE
# by less than the slack its convergence test allows (NEAR_ZERO). It tracks the measured largest
# error (rms: 1/20 of it); a well-conditioned design (S1) estimates 1e-6, a condition number above
# about 20 more: its rotation is applied in float64, and only the result rounded to float32.
_FLOAT32_PRODUCT_ERROR = 1e-5


class _Affine:
    """z = ((a − mean) / scale) P in the working dtype, one product per block: (a − shift) M + c.

    M = diag(1/scale) P folds the scaling into the rotation (a vector without one: elementwise);
    shift is the mean rounded to a's dtype, so float32 data are centered in float32 (a correctly
    rounded subtraction, no float64 copy), and c = (shift − mean) M corrects that rounding. On the
    CPU the product is numpy's (OpenBLAS: about twice torch's float32 matmul on this machine).
    """

    def __init__(self, mean, scale, rotation: np.ndarray | None, dtype: torch.dtype, device) -> None:
        self.mean = np.asarray(mean, dtype=np.float64)
        inv = 1.0 / np.asarray(scale, dtype=np.float64)
        self.M = inv if rotation is None else inv[:, None] * rotation
        self.dtype, self.device = dtype, torch.device(device)
        self.work = np.dtype(np.float32 if dtype == torch.float32 else np.float64)
        # A float32 sum of k terms errs by about √k ulps of its terms; a whitened value's terms are
        # as large as P's columns.
        big = float(np.linalg.norm(rotation, axis=0).max()) if rotation is not None and rotation.size else 1.0
        self.fast = self.work == np.float32 and (
            rotation is None or np.finfo(np.float32).eps * math.sqrt(len(self.mean)) * big <= _FLOAT32_PRODUCT_ERROR
        )
        self.consts: dict = {}

    def _consts(self, dtype: np.dtype) -> tuple:
        """(the centering's dtype, shift, M, c) for data of ``dtype``, in the product's dtype."""
        if dtype not in self.consts:
            sub = np.dtype(np.float32 if dtype == np.float32 and self.fast else np.float64)
            shift = self.mean.astype(sub)
            d = shift.astype(np.float64) - self.mean
            c = d * self.M if self.M.ndim == 1 else d @ self.M
            # float64 data keep float64 until scaled: 1e-140 centered in float64 and cast to float32
            # before its 1/scale would underflow to 0 (and descent would see no data at all)
            prod = self.work if self.fast and dtype == np.float32 else np.dtype(np.float64)
            self.consts[dtype] = (sub, shift, self.M.astype(prod), c.astype(prod))
        return self.consts[dtype]

    def __call__(self, A: np.ndarray, out: torch.Tensor | None = None) -> torch.Tensor:
        """The standardized rows of A (n, k), into ``out`` (n, k) when given.

        Parameters
        ----------
        A : ndarray of shape (n, k)
        out : Tensor of shape (n, k), optional
            In the working dtype, on the device.

        Returns
        -------
        Tensor of shape (n, k)
        """
        A = np.asarray(A)
        if A.dtype not in (np.float32, np.float64):
            A = A.astype(np.float64)
        if out is None:
            out = torch.empty(A.shape, dtype=self.dtype, device=self.device)
        sub, shift, M, c = self._consts(A.dtype)
        if self.device.type != "cpu":
            return self._on_device(A, out, sub, shift, M, c)
        dst = out.numpy()
        step = _STEP_ROWS
        tmp = np.empty((min(step, len(A)), A.shape[1]), dtype=sub)
        prod = None if M.dtype == self.work else np.empty((min(step, len(A)), A.shape[1]), dtype=M.dtype)
        for s in range(0, len(A), step):
            m = min(step, len(A) - s)
            t = tmp[:m]
            np.subtract(A[s : s + m], shift, out=t)
            res = dst[s : s + m] if prod is None else prod[:m]
            if M.ndim == 1:
                np.multiply(t, M, out=res)
            else:
                np.matmul(t if t.dtype == M.dtype else t.astype(M.dtype), M, out=res)
            res += c
            if prod is not None:
                dst[s : s + m] = res
        return out

    def _on_device(self, A, out, sub, shift, M, c) -> torch.Tensor:
        dd = {"device": self.device, "dtype": torch.float32 if M.dtype == np.float32 else torch.float64}
        shift_t = torch.as_tensor(shift, device=self.device)
        M_t, c_t = torch.as_tensor(M, **dd), torch.as_tensor(c, **dd)
        for s in range(0, len(A), _BLOCK):
            t = torch.as_tensor(A[s : s + _BLOCK]).to(self.device).to(shift_t.dtype).sub_(shift_t).to(dd["dtype"])
            res = t.mul_(M_t).add_(c_t) if M_t.ndim == 1 else torch.addmm(c_t, t, M_t)
            out[s : s + _BLOCK] = res
        return out


@contextlib.contextmanager
def half_threads() -> Iterator[None]:
    """torch's and numpy's BLAS kernels on half the threads (one of 2), for a loop that a reading
    thread feeds: the reader (pyarrow's decoding, the checks) keeps the other cores busy, and an
    OpenMP kernel spread over every core waits at each barrier for the one it holds. A streamed
    epoch of 1M S1 rows took 9-12 s on 2 threads, 3-4 s on one (2 cores, shared).
    """
    from threadpoolctl import threadpool_limits  # scikit-learn's dependency

    saved = torch.get_num_threads()
    n = max(1, saved // 2)
    torch.set_num_threads(n)
    try:
        with threadpool_limits(n, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(saved)


# Large tables take large batches: the minibatch noise floor falls as 1/B, so on B1 (1M rows)
# 15,625-row batches come within 1% of the optimum in 2 epochs where 4,096-row ones took 23, and
# each epoch is faster (fewer Python steps). Small tables still get about 64 steps an epoch.
MAX_AUTO_BATCH = 65_536


def _new_model(p: int, q: int, cfg: TrainConfig, moments: tuple, dtype, device, gen: torch.Generator):
    """A LinearModel holding the standardization of ``moments`` (none with ``--no-standardize``,
    then the tutorial's random start drawn from ``gen``); returns it and (xm, xs, ym, ys)."""
    model = LinearModel(p, q, fit_intercept=cfg.fit_intercept, dtype=dtype, device=device)
    if cfg.standardize:
        xm, xs, ym, ys = moments
    else:
        xm, xs, ym, ys = np.zeros(p), np.ones(p), np.zeros(q), np.ones(q)
    with torch.no_grad():
        for buf, val in ((model.x_mean, xm), (model.x_scale, xs), (model.y_mean, ym), (model.y_scale, ys)):
            buf.copy_(torch.as_tensor(val))
        if not cfg.standardize:  # the tutorial's random start: w = randn(q, p), b = randn(q)
            model.weight.copy_(torch.randn(q, p, generator=gen, dtype=torch.float64))
            if cfg.fit_intercept:
                model.bias.copy_(torch.randn(q, generator=gen, dtype=torch.float64))
    return model, (xm, xs, ym, ys)


def auto_batch_size(n: int) -> int:
    """The default batch size: about 64 steps an epoch, at most 65536 rows a batch.

    Parameters
    ----------
    n : int
        Training rows.

    Returns
    -------
    int
    """
    return int(min(MAX_AUTO_BATCH, max(1, math.ceil(n / 64))))


def weighted_moments(A: np.ndarray, w: np.ndarray | None, center: bool) -> tuple[np.ndarray, np.ndarray]:
    """Column (mean, scale) of A (n, k): std about the weighted mean, or RMS without centering.

    Computed in float64 over blocks of rows, so a large float32 A is never copied whole.
    """
    n, k = A.shape
    sw = float(n) if w is None else float(w.sum())
    mean = np.zeros(k)
    if center:
        for s in range(0, n, _BLOCK):
            blk = A[s : s + _BLOCK].astype(np.float64, copy=False)
            mean += blk.sum(axis=0) if w is None else w[s : s + _BLOCK] @ blk
        mean /= sw
    ss = np.zeros(k)
    for s in range(0, n, _BLOCK):
        d = A[s : s + _BLOCK] - mean
        ss += (d * d).sum(axis=0) if w is None else w[s : s + _BLOCK] @ (d * d)
    scale = np.sqrt(ss / sw)
    return mean, np.where(scale > 0, scale, 1.0)  # a constant column stays as it is


def auto_lr(
    Xs: torch.Tensor,
    wn: torch.Tensor | None,
    batch_size: int,
    n_targets: int,
    l2: float,
    pen: torch.Tensor,
    fit_intercept: bool,
    optimizer: str,
    gram_max_eig: float | None = None,
    comm: Comm = SINGLE,
    n_total: int | None = None,
) -> float:
    """A safe step size from the curvature of the (scaled) problem.

    With U = [1, Xs] (no 1 without intercept), the per-target loss has smoothness
    L = 2 λmax(UᵀWU / n) and per-row smoothness L_i = 2 w_i ‖u_i‖². A batch of B rows has
    expected smoothness L_B = n(B−1)/(B(n−1)) L + (n−B)/(B(n−1)) max L_i (Gower et al., 2019),
    and 1/L_B is stable for it. The loss averages over targets, hence the factor q.

    Parameters
    ----------
    Xs : Tensor of shape (n, n_features)
        Standardized features.
    wn : Tensor of shape (n,), optional
        Weights normalized to mean 1.
    batch_size : int
    n_targets : int
    l2 : float
    pen : Tensor of shape (n_features,)
        Per-coefficient penalty scale in the training scale.
    fit_intercept : bool
    optimizer : {"sgd", "momentum", "adam"}
    gram_max_eig : float, optional
        λmax(UᵀWU / n) when already known (from the exact solver's factor); else computed here.
    comm : gradreg.distributed.Comm
        Xs is this rank's share of ``n_total`` rows: sums and maxima are over all ranks.
    n_total : int, optional
        Rows on all ranks (``len(Xs)``).

    Returns
    -------
    float
    """
    if optimizer == "adam":
        return 1e-2  # Adam's steps are scale-free; parameters are O(1) in standardized units
    n, p = Xs.shape
    G = torch.zeros(p, p, dtype=torch.float64, device=Xs.device)
    c = torch.zeros(p, dtype=torch.float64, device=Xs.device)
    lmax = 0.0
    for s in range(0, n, _BLOCK):  # float64 blocks: no full-size copy of Xs
        X64 = Xs[s : s + _BLOCK].double()
        w = torch.ones(len(X64), dtype=torch.float64, device=Xs.device) if wn is None else wn[s : s + _BLOCK].double()
        if gram_max_eig is None:
            G += (X64 * w[:, None]).T @ X64
            c += w @ X64
        row = (X64 * X64).sum(dim=1) + (1.0 if fit_intercept else 0.0)
        lmax = max(lmax, float((w * row).max()))
    w_sum = float(n if wn is None else wn.double().sum())
    lmax = float(comm.max([lmax])[0])
    if gram_max_eig is None:
        G = torch.as_tensor(comm.sum(G.cpu().numpy()), device=Xs.device)
        c = torch.as_tensor(comm.sum(c.cpu().numpy()), device=Xs.device)
        w_sum = float(comm.sum([w_sum])[0])
    n = n if n_total is None else n_total
    if gram_max_eig is not None:
        lam = float(gram_max_eig)
    else:
        G /= n
        if fit_intercept:
            c = (c / n)[:, None]
            w_mean = w_sum / n
            G = torch.cat(
                [torch.cat([torch.full((1, 1), w_mean, dtype=G.dtype, device=G.device), c.T], 1), torch.cat([c, G], 1)], 0
            )
        if G.shape[0] <= 2048:
            lam = float(torch.linalg.eigvalsh(G)[-1])
        else:  # power iteration; its estimate is a lower bound, hence the margin
            v = torch.ones(G.shape[0], dtype=torch.float64, device=G.device)
            for _ in range(50):
                v = G @ v
                v = v / v.norm()
            lam = 1.1 * float(v @ G @ v)
    lam += l2 * float((pen.double() ** 2).max()) if l2 > 0 else 0.0
    return lr_from_curvature(lam, lmax, n, batch_size, n_targets, optimizer)


def lr_from_curvature(lam: float, lmax: float, n: int, batch_size: int, n_targets: int, optimizer: str) -> float:
    """The step size 1/L_B of :func:`auto_lr` from λmax of the Gram and the largest row norm.

    Parameters
    ----------
    lam : float
        λmax(UᵀWU / n), the ridge term included.
    lmax : float
        max wᵢ‖uᵢ‖² (or an upper bound of it).
    n : int
    batch_size : int
    n_targets : int
    optimizer : {"sgd", "momentum"}

    Returns
    -------
    float
    """
    L, Lmax = 2 * lam, 2 * max(lmax, lam)
    B = batch_size
    LB = L if B >= n else (n * (B - 1) / (B * (n - 1))) * L + ((n - B) / (B * (n - 1))) * Lmax
    lr = n_targets / LB
    return lr * (1 - 0.9) if optimizer == "momentum" else lr


class Optimizer:
    """torch.optim's SGD, momentum SGD and Adam through their public functional forms.

    The same update code as ``torch.optim.SGD``/``Adam`` (tests check bit-identity), without the
    Optimizer class, whose first use imports torch._dynamo: about 2 s here, more than the
    whole demo's training.
    """

    def __init__(self, name: str, params: list[torch.Tensor], lr: float):
        self.name, self.params, self.base_lr = name, params, lr
        self.momentum = 0.9 if name == "momentum" else 0.0
        self.buffers: list[torch.Tensor | None] = [None] * len(params)
        if name == "adam":
            self.exp_avgs = [torch.zeros_like(p) for p in params]
            self.exp_avg_sqs = [torch.zeros_like(p) for p in params]
            self.steps = [torch.tensor(0.0) for _ in params]

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The optimizer's state, for a checkpoint.

        Returns
        -------
        dict of str to Tensor
        """
        out: dict[str, torch.Tensor] = {}
        for i, buf in enumerate(self.buffers):
            if buf is not None:
                out[f"momentum.{i}"] = buf
        if self.name == "adam":
            for i in range(len(self.params)):
                out[f"exp_avg.{i}"], out[f"exp_avg_sq.{i}"], out[f"step.{i}"] = (
                    self.exp_avgs[i],
                    self.exp_avg_sqs[i],
                    self.steps[i],
                )
        return out

    def load_state_tensors(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_tensors` returned.

        Parameters
        ----------
        state : dict of str to Tensor
        """
        for i in range(len(self.params)):
            if f"momentum.{i}" in state:
                self.buffers[i] = state[f"momentum.{i}"].clone()
            if self.name == "adam":
                self.exp_avgs[i].copy_(state[f"exp_avg.{i}"])
                self.exp_avg_sqs[i].copy_(state[f"exp_avg_sq.{i}"])
                self.steps[i].copy_(state[f"step.{i}"].reshape(self.steps[i].shape))

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, lr: float) -> None:
        grads = [p.grad for p in self.params]
        if self.name == "adam":
            from torch.optim.adam import adam

            adam(
                self.params,
                grads,
                self.exp_avgs,
                self.exp_avg_sqs,
                [],
                self.steps,
                foreach=False,
                amsgrad=False,
                beta1=0.9,
                beta2=0.999,
                lr=lr,
                weight_decay=0.0,
                eps=1e-8,
                maximize=False,
            )
        else:
            from torch.optim.sgd import sgd

            sgd(
                self.params,
                grads,
                self.buffers,
                foreach=False,
                weight_decay=0.0,
                momentum=self.momentum,
                lr=lr,
                dampening=0.0,
                nesterov=False,
                maximize=False,
            )


def cosine_lr(base: float, step: int, total: int) -> float:
    """CosineAnnealingLR's closed form with eta_min = 0: the lr for 0-based ``step`` of ``total``."""
    return base * (1 + math.cos(math.pi * step / total)) / 2


@dataclass
class Descent:
    """One gradient-descent run, set up the same way for every path (in memory, streamed, several
    ranks, ``partial_fit``): the model with its standardization (and whitening), the batch size,
    the penalty scales; :meth:`start` then fixes the learning rate, optimizer and schedule.

    Made by :func:`setup`.

    Parameters
    ----------
    cfg : TrainConfig
    model : LinearModel
    gen : torch.Generator
        The run's generator (its state is checkpointed).
    forward : callable
        The model's standardized forward; DDP-wrapped on several ranks.
    moments : tuple of ndarray
        (x_mean, x_scale, y_mean, y_scale) the model standardizes with.
    rotation : ndarray or None
        P that whitens the standardized features.
    pen : Tensor
        Ridge scale per model weight.
    y_var : Tensor
        Per-target variance: model-unit losses to original units.
    batch_size : int
    steps_per_epoch : int
    dtype : torch.dtype
    device : torch.device
    world : int
        Ranks taking part.
    lr : float
        The base learning rate (set by :meth:`start`).
    opt : Optimizer or None
        Set by :meth:`start`.
    schedule : callable
        Step to learning rate (set by :meth:`start`).
    _affine : tuple, optional
        Cached standardizing products of ``moments`` (set by :meth:`prepare`).
    """

    cfg: TrainConfig
    model: LinearModel
    gen: torch.Generator
    forward: Callable[[torch.Tensor], torch.Tensor]  # standardized forward; DDP-wrapped on several ranks
    moments: tuple  # (x_mean, x_scale, y_mean, y_scale) the model standardizes with
    rotation: np.ndarray | None  # P that whitens the standardized features, or None
    pen: torch.Tensor  # ridge scale per model weight
    y_var: torch.Tensor  # per-target variance: model-unit losses to original units
    batch_size: int
    steps_per_epoch: int
    dtype: torch.dtype
    device: torch.device
    world: int = 1
    lr: float = 0.0
    opt: Optimizer | None = None
    schedule: Callable[[int], float] | None = None
    _affine: tuple | None = field(default=None, repr=False)  # (the moments it is of, X's _Affine, Y's)

    def prepare(self, X: np.ndarray, Y: np.ndarray, w: np.ndarray | None, w_mean: float = 1.0, out: tuple | None = None) -> tuple:
        """Rows in the training scale: standardized (whitened) X and Y in the working dtype, and
        the weights divided by ``w_mean``; into the tensors ``out`` (X, Y, w) when given.

        Parameters
        ----------
        X : ndarray of shape (n, n_features)
        Y : ndarray of shape (n, n_targets)
        w : ndarray of shape (n,) or None
        w_mean : float
        out : tuple of Tensor, optional
            Buffers to write the rows into.

        Returns
        -------
        tuple of (Tensor, Tensor, Tensor or None)
        """
        if self._affine is None or self._affine[0] is not self.moments:  # IncrementalGD.resume sets other moments
            xm, xs, ym, ys = self.moments
            x = _Affine(xm, xs, self.rotation, self.dtype, self.device)
            self._affine = (self.moments, x, _Affine(ym, ys, None, self.dtype, self.device))
        _, x, y = self._affine
        Xo, Yo, wo = out if out is not None else (None, None, None)
        Xs, Ys = x(X, Xo), y(Y, Yo)
        if w is None:
            return Xs, Ys, None
        wn = torch.as_tensor(w / w_mean, dtype=self.dtype, device=self.device)
        return Xs, Ys, wn if wo is None else wo.copy_(wn)

    def start(self, lr: Callable[[], float], constant: bool = False) -> None:
        """Fix the base learning rate (``cfg.lr`` when set, else ``lr()``), the optimizer and the
        schedule.

        Parameters
        ----------
        lr : callable
            Returns the automatic base learning rate (called only when ``cfg.lr`` is None).
        constant : bool
            Keep the rate fixed instead of ``cfg.lr_schedule``.
        """
        cfg = self.cfg
        self.lr = base = cfg.lr if cfg.lr is not None else lr()
        params = [self.model.weight] + ([self.model.bias] if cfg.fit_intercept else [])
        self.opt = Optimizer(cfg.optimizer, params, base)
        total = cfg.epochs * self.steps_per_epoch
        cosine = cfg.lr_schedule == "cosine" and not constant
        self.schedule = (lambda step: cosine_lr(base, step, total)) if cosine else (lambda step: base)

    def step(self, k: int, xb: torch.Tensor, yb: torch.Tensor, wb: torch.Tensor | None, rows: int) -> torch.Tensor:
        """Step ``k`` of the run on this rank's rows of a batch of ``rows`` rows (all ranks).

        Parameters
        ----------
        k : int
            The step's index in the run (sets its learning rate).
        xb, yb : Tensor
            This rank's rows of the batch, in the training scale.
        wb : Tensor or None
        rows : int
            The batch's rows on all ranks.

        Returns
        -------
        Tensor
            The per-target (weighted) SSE of this rank's rows, before the step.
        """
        # DDP averages gradients over ranks: scale so that the average is the global batch's mean.
        denom = None if self.world == 1 else rows * yb.shape[1] / self.world
        return train_step(self.model, self.opt, self.schedule(k), xb, yb, wb, self.cfg.l2, self.pen, self.forward, denom)


def setup(
    p: int,
    q: int,
    n: int,
    cfg: TrainConfig,
    moments: tuple[np.ndarray, ...],
    *,
    precondition: np.ndarray | None = None,
    comm: Comm = SINGLE,
) -> Descent:
    """Set up gradient descent on ``n`` training rows (all ranks) of ``p`` features, ``q`` targets.

    Parameters
    ----------
    p, q, n : int
    cfg : TrainConfig
    moments : tuple of ndarray
        ``(x_mean, x_std, y_mean, y_std)`` as :func:`weighted_moments` computes them (the exact
        solver's factor holds them); ``x_std`` also scales the ridge penalty.
    precondition : ndarray of shape (p, p), optional
        P that whitens the standardized features: (Zᵀ W Z) / Σw = Pᵀ⁻¹ P⁻¹ on the identified
        directions (see ``pipeline.gd_hints``). Used when standardizing without a ridge penalty:
        descent then converges at the same rate on any design, however ill-conditioned.
    comm : gradreg.distributed.Comm
        Several ranks: the model's forward runs inside DistributedDataParallel.

    Returns
    -------
    Descent
        Call :meth:`Descent.start` with the learning rate before training.
    """
    device = resolve_device(cfg.device)
    dtype = torch.float32 if cfg.dtype == "float32" else torch.float64
    gen = torch.Generator().manual_seed(cfg.seed)
    model, used = _new_model(p, q, cfg, moments, dtype, device, gen)
    P = precondition if (cfg.standardize and cfg.l2 == 0 and precondition is not None) else None
    if P is not None:
        model.precondition(P)
    B = min(cfg.batch_size or auto_batch_size(n), n)
    return Descent(
        cfg=cfg,
        model=model,
        gen=gen,
        forward=_ddp(model) if comm.world > 1 else model.forward_standardized,
        moments=used,
        rotation=P,
        pen=torch.as_tensor(moments[1] / used[1], dtype=dtype, device=device),
        y_var=torch.as_tensor(used[3] ** 2, dtype=torch.float64, device=device),
        batch_size=B,
        steps_per_epoch=math.ceil(n / B),  # the last batch may be partial
        dtype=dtype,
        device=device,
        world=comm.world,
    )


class Resident:
    """Batches from rows held in memory as training-scale tensors (arrays, ``partial_fit``).

    Every epoch draws a fresh permutation of all ``n`` rows (the same draws on every rank) and
    cuts it into batches; each rank trains on its own rows of every batch, so a step of several
    ranks is the single-process step.

    Parameters
    ----------
    Xs, Ys : Tensor
        This rank's rows, from :meth:`Descent.prepare`.
    wn : Tensor or None
        Their weights, divided by the mean weight of all rows.
    n : int, optional
        Rows on all ranks (``len(Xs)``).
    offset : int
        Rows on lower ranks.
    """

    def __init__(self, Xs: torch.Tensor, Ys: torch.Tensor, wn: torch.Tensor | None, n: int | None = None, offset: int = 0):
        self.Xs, self.Ys, self.wn = Xs, Ys, wn
        self.n = len(Xs) if n is None else n
        self.offset = offset

    def epoch(self, d: Descent, epoch: int) -> Iterator[tuple]:
        """This epoch's batches.

        Parameters
        ----------
        d : Descent
        epoch : int

        Yields
        ------
        tuple
            (X rows, Y rows, weights or None, rows of the batch on all ranks).
        """
        Xs, Ys, wn, n, B = self.Xs, self.Ys, self.wn, self.n, d.batch_size
        perm = torch.randperm(n, generator=d.gen)  # the run's generator: its state is checkpointed
        mine = torch.nonzero((perm >= self.offset) & (perm < self.offset + len(Xs))).squeeze(1)
        local = (perm[mine] - self.offset).to(Xs.device)
        edges = torch.searchsorted(mine, torch.arange(0, n + B, B).clamp(max=n)).tolist()
        # Gather each batch into the same buffers: index_select with out= is several times faster
        # than fancy indexing, which allocates a fresh tensor per batch.
        most = max(b - a for a, b in zip(edges, edges[1:]))
        xbuf = torch.empty((most, Xs.shape[1]), dtype=Xs.dtype, device=Xs.device)
        ybuf = torch.empty((most, Ys.shape[1]), dtype=Ys.dtype, device=Ys.device)
        for k, start in enumerate(range(0, n, B)):
            idx = local[edges[k] : edges[k + 1]]
            xb = torch.index_select(Xs, 0, idx, out=xbuf[: len(idx)])
            yb = torch.index_select(Ys, 0, idx, out=ybuf[: len(idx)])
            yield xb, yb, None if wn is None else wn[idx], min(B, n - start)

    def rows(self, d: Descent) -> Iterator[tuple]:
        """All these rows once, as :func:`val_loss` reads them.

        Parameters
        ----------
        d : Descent

        Yields
        ------
        tuple
            (Xs, Ys, weights or None).
        """
        yield self.Xs, self.Ys, self.wn

    def curvature_lr(self, d: Descent, gram_max_eig: float | None, comm: Comm = SINGLE) -> float:
        """:func:`auto_lr` on these rows.

        Parameters
        ----------
        d : Descent
        gram_max_eig : float or None
            λmax of the standardized Gram, when the factor gave it.
        comm : gradreg.distributed.Comm

        Returns
        -------
        float
        """
        cfg = d.cfg
        lam = gram_max_eig if cfg.standardize else None  # the hint is for the standardized design
        if d.rotation is not None:
            lam = 1.0  # the whitened design's Gram (an intercept column of weight 1 beside it)
        q = self.Ys.shape[1]
        return auto_lr(self.Xs, self.wn, d.batch_size, q, cfg.l2, d.pen, cfg.fit_intercept, cfg.optimizer, lam, comm, self.n)


class Streamed:
    """Batches from chunks read again every epoch (data larger than memory).

    Each epoch reads the chunks in the order ``chunks(epoch)`` gives (a fresh random order of
    files/row groups), prepares them, and shuffles rows inside a buffer of ``shuffle_buffer``
    rows before cutting batches; leftover rows carry over, so an epoch takes ceil(n / B) steps,
    as in memory. Several ranks: each takes its share of every step, in proportion to its rows.

    Parameters
    ----------
    chunks : callable
        ``chunks(epoch)`` returns an iterator of raw ``(X, Y, w)`` training chunks.
    counts : list of int
        Training rows of every rank, in rank order.
    w_mean : float
        Mean training weight (all ranks).
    shuffle_buffer : int
    rank : int
    """

    def __init__(
        self, chunks: Callable[[int], Iterator[tuple]], counts: list[int], w_mean: float, shuffle_buffer: int, rank: int = 0
    ):
        self.chunks, self.counts, self.w_mean = chunks, counts, w_mean
        self.shuffle_buffer, self.rank = shuffle_buffer, rank
        self.n = sum(counts)
        self.buffers: tuple | None = None  # the shuffle buffer (X, Y, w), made by the first epoch

    def epoch(self, d: Descent, epoch: int) -> Iterator[tuple]:
        """This epoch's batches.

        Parameters
        ----------
        d : Descent
        epoch : int
            Sets the order of the chunks and the shuffle.

        Yields
        ------
        tuple
            (X rows, Y rows, weights or None, rows of the batch on all ranks).
        """
        steps, p, q = d.steps_per_epoch, d.model.weight.shape[1], d.model.weight.shape[0]
        shares = [[c // steps + (1 if k < c % steps else 0) for k in range(steps)] for c in self.counts]
        sizes, totals = shares[self.rank], [sum(col) for col in zip(*shares)]
        # Each rank's own stream of draws per epoch, from the seed, so a resumed epoch shuffles
        # as the first try did.
        shuffle = torch.Generator().manual_seed(d.cfg.seed * 1_000_003 + self.rank * 7919 + epoch)
        # Chunks are standardized straight into the shuffle buffer, and batches gathered from it
        # into reused tensors: no concatenation, no fresh tensor per batch.
        most = max(sizes, default=0)
        batch = [torch.empty(most, width, dtype=d.dtype, device=d.device) for width in (p, q)]
        wbatch = torch.empty(most, dtype=d.dtype, device=d.device)
        rows = k = 0
        weighted = None

        def drain(final: bool) -> Iterator[tuple]:
            nonlocal rows, k
            X, Y, w = (b[:rows] if b is not None else None for b in self._buffers(d, rows, weighted))
            perm = torch.randperm(rows, generator=shuffle).to(d.device)
            start = 0
            while k < steps and (final or start + sizes[k] <= rows):
                idx = perm[start : start + sizes[k]]
                start += sizes[k]
                xb = torch.index_select(X, 0, idx, out=batch[0][: len(idx)])
                yb = torch.index_select(Y, 0, idx, out=batch[1][: len(idx)])
                wb = None if w is None else torch.index_select(w, 0, idx, out=wbatch[: len(idx)])
                yield xb, yb, wb, totals[k]
                k += 1
            rest = perm[start:]
            for buf in (X, Y, w):  # the rows not drawn move to the front, in their drawn order
                if buf is not None and len(rest):
                    buf[: len(rest)] = buf[rest]
            rows = len(rest)

        for X, Y, w in self.chunks(epoch):
            if len(X) == 0:
                continue
            weighted = w is not None
            bufs = self._buffers(d, rows + len(X), weighted)
            d.prepare(X, Y, w, self.w_mean, out=tuple(None if b is None else b[rows : rows + len(X)] for b in bufs))
            rows += len(X)
            if rows >= max(self.shuffle_buffer, d.batch_size):
                yield from drain(final=False)
        if rows or k < steps:
            yield from drain(final=True)

    def rows(self, d: Descent) -> Iterator[tuple]:
        """All these rows once (read again), as :func:`val_loss` reads them.

        Parameters
        ----------
        d : Descent

        Yields
        ------
        tuple
            (Xs, Ys, weights or None).
        """
        for X, Y, w in self.chunks(0):
            yield (*d.prepare(X, Y, None)[:2], w)

    def _buffers(self, d: Descent, rows: int, weighted: bool | None) -> tuple:
        """The shuffle buffer's X, Y and weight tensors, holding at least ``rows`` rows (kept from
        epoch to epoch; grown, keeping their rows, when a chunk does not fit)."""
        p, q = d.model.weight.shape[1], d.model.weight.shape[0]
        old = self.buffers
        if old is None or len(old[0]) < rows or (weighted and old[2] is None):
            # room for a full buffer and the chunk that fills it; doubled when chunks grow
            cap = (
                max(rows, 2 * len(old[0])) if old is not None else rows + (max(self.shuffle_buffer, d.batch_size) if rows else 0)
            )
            new = (
                torch.empty(cap, p, dtype=d.dtype, device=d.device),
                torch.empty(cap, q, dtype=d.dtype, device=d.device),
                torch.empty(cap, dtype=d.dtype, device=d.device) if weighted else None,
            )
            for a, b in zip(new, old or ()):
                if a is not None and b is not None:
                    a[: len(b)] = b
            self.buffers = new
        return self.buffers

    def curvature_lr(self, d: Descent, gram_max_eig: float, row_norm_max: float) -> float:
        """The step size of :func:`lr_from_curvature` from the factor's λmax and a bound on the
        rows' norms (no pass over the data).

        Parameters
        ----------
        d : Descent
        gram_max_eig : float
        row_norm_max : float
            An upper bound of max wᵢ‖uᵢ‖² over the rows.

        Returns
        -------
        float
        """
        cfg = d.cfg
        if cfg.optimizer == "adam":
            return 1e-2
        if not cfg.standardize:
            if cfg.lr is None:
                raise ConfigError("{standardize=} on streamed data needs an explicit {lr}", standardize=False, lr=None)
            return cfg.lr
        lam = gram_max_eig + (cfg.l2 * float((d.pen.double() ** 2).max()) if cfg.l2 > 0 else 0.0)
        return lr_from_curvature(lam, row_norm_max, self.n, d.batch_size, d.model.weight.shape[0], cfg.optimizer)


def run_epoch(d: Descent, batches: Iterable[tuple], first_step: int, comm: Comm = SINGLE) -> torch.Tensor:
    """One pass: a step per batch.

    Parameters
    ----------
    d : Descent
    batches : iterable of tuple
        From :meth:`Resident.epoch` or :meth:`Streamed.epoch`.
    first_step : int
        The run's index of the first step (sets the schedule).
    comm : gradreg.distributed.Comm

    Returns
    -------
    Tensor
        The per-target (weighted) SSE in model units, of all ranks' rows.
    """
    sse = torch.zeros(d.model.weight.shape[0], dtype=torch.float64, device=d.device)
    for k, (xb, yb, wb, rows) in enumerate(batches):
        sse += d.step(first_step + k, xb, yb, wb, rows)
    return torch.as_tensor(comm.sum(sse.cpu().numpy()), device=d.device)


@torch.no_grad()
def val_loss(d: Descent, chunks: Iterable[tuple], comm: Comm = SINGLE) -> float:
    """Mean over targets of the (weighted) MSE in original units of training-scale chunks
    ``(Xs, Ys, w)`` (w raw, or None), over all ranks."""
    q = d.model.weight.shape[0]
    total = torch.zeros(q, dtype=torch.float64, device=d.device)
    sw = 0.0
    for Xs, Ys, w in chunks:
        if len(Xs) == 0:
            continue
        err = (d.model.forward_standardized(Xs) - Ys).double()
        wt = torch.ones(len(Xs), dtype=torch.float64, device=d.device) if w is None else torch.as_tensor(w, device=d.device)
        total += (wt[:, None] * err * err).sum(dim=0)
        sw += float(wt.sum())
    both = comm.sum(np.concatenate([total.cpu().numpy(), [sw]]))
    total, sw = torch.as_tensor(both[:-1], device=d.device), float(both[-1])
    return float((total / sw * d.y_var).mean()) if sw > 0 else math.nan


def fit_gd(
    d: Descent,
    batches: Resident | Streamed,
    *,
    val: Callable[[], Iterable[tuple]] | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    checkpoint=None,
    optimum: tuple[float, float] | None = None,
    comm: Comm = SINGLE,
) -> GDResult:
    """Train by minibatch gradient descent: the epoch loop of every path, with history,
    divergence, early stopping, and checkpoints (saved after an epoch, restored before the next).

    Losses in the history are in original target units: the mean over targets of each target's
    (weighted) MSE, plus the ridge penalty when ``cfg.l2 > 0``. Several ranks take the same
    decisions (losses are summed over ranks); rank 0 alone writes checkpoints, and sends the one it
    resumes from to the others.

    Parameters
    ----------
    d : Descent
        From :func:`setup`, started.
    batches : Resident or Streamed
        Where each epoch's batches come from.
    val : callable, optional
        Returns training-scale validation chunks ``(Xs, Ys, w)``; their loss is recorded each
        epoch and drives early stopping.
    on_epoch : callable, optional
        Called with each epoch's history record.
    checkpoint : gradreg.checkpoint.Checkpoint, optional
        Save the training state every few epochs; resume from it when asked.
    optimum : (float, float), optional
        The exact optimum of the training objective and the absolute slack below which an optimum
        counts as 0 (an exact fit): with ``cfg.tol``, training stops after the first epoch whose
        weights' training loss is within ``tol`` of it (within the slack for an exact fit). That
        loss takes a forward pass over the training rows, made only when the epoch's running loss
        is within ``tol``.
    comm : gradreg.distributed.Comm

    Returns
    -------
    GDResult

    Raises
    ------
    DivergenceError
        When the loss becomes NaN/inf or grows 1000-fold.
    """
    cfg, model, opt, gen, n = d.cfg, d.model, d.opt, d.gen, batches.n
    result = GDResult(model, lr=d.lr, batch_size=d.batch_size)
    best = math.inf
    best_state = None
    since_best = 0
    start = 1
    saved = checkpoint.restore(comm) if checkpoint is not None else None
    if saved is not None:
        tensors, state = saved
        tensor = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}
        model.load_state_dict({k[6:]: v for k, v in tensor.items() if k.startswith("model.")})
        opt.load_state_tensors({k[4:]: v for k, v in tensor.items() if k.startswith("opt.")})
        gen.set_state(tensor["generator"].to(torch.uint8))
        if any(k.startswith("best.") for k in tensor):
            best_state = {k[5:]: v.to(model.weight.device) for k, v in tensor.items() if k.startswith("best.")}
        result.history[:] = state["history"]
        best = math.inf if state["best"] is None else state["best"]
        since_best, result.best_epoch, start = state["since_best"], state["best_epoch"], state["epoch"] + 1
        result.resumed_from = state["epoch"]
        if state.get("stopped_early"):
            start = cfg.epochs + 1
            result.stopped_early, result.stopped_by = True, state.get("stopped_by", "early_stopping")
    schedule = d.schedule
    for epoch in range(start, cfg.epochs + 1):
        t0 = time.perf_counter()
        floor = _noise_floor(result.history, optimum, d, cfg)
        if floor is not None and epoch == floor + 1:  # the last epochs: anneal the rate to 0 over them
            first, lr0, span = floor * d.steps_per_epoch, schedule(floor * d.steps_per_epoch), ANNEAL * d.steps_per_epoch
            d.schedule = lambda k, a=first, r=lr0, s=span: schedule(k) if k < a else cosine_lr(r, min(k - a, s), s)
        sse = run_epoch(d, batches.epoch(d, epoch), (epoch - 1) * d.steps_per_epoch, comm)
        train_loss = float((sse / n * d.y_var).mean()) + _penalty(model, cfg.l2, d.pen, d.y_var)
        elapsed = time.perf_counter() - t0
        record = {
            "epoch": epoch,
            "loss": train_loss,
            "lr": d.schedule(epoch * d.steps_per_epoch - 1),
            "seconds": elapsed,
            "rows_per_s": n / elapsed if elapsed > 0 else math.inf,
        }
        if val is not None:
            record["val_loss"] = val_loss(d, val(), comm)
        result.history.append(record)
        if not math.isfinite(train_loss) or train_loss > DIVERGENCE_FACTOR * min(best_train(result.history[:-1]), 1e300):
            raise DivergenceError(
                f"training diverged at epoch {epoch}: loss {train_loss:.4g}; use a smaller {{lr}} (now {d.lr:.3g})"
                + ("" if cfg.standardize else " or drop {standardize=}"),
                lr=d.lr,
                standardize=cfg.standardize,
            )
        if on_epoch is not None:
            on_epoch(record)
        watched = record.get("val_loss", train_loss)
        if watched < best:
            best, since_best, result.best_epoch = watched, 0, epoch
            if cfg.early_stopping:
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            since_best += 1
            if cfg.early_stopping and since_best >= cfg.early_stopping:
                result.stopped_early, result.stopped_by = True, "early_stopping"
        if floor is not None and epoch == floor + ANNEAL and epoch < cfg.epochs and not result.stopped_early:
            # the annealed weights must be within tol, as for any other stop
            bound = _tol_bound(optimum, cfg.tol)
            if val_loss(d, batches.rows(d), comm) + _penalty(model, cfg.l2, d.pen, d.y_var) <= bound:
                result.stopped_early, result.stopped_by, result.floor_epoch = True, "noise floor", floor
            else:  # not there yet: go on at the schedule's rate (the plateau decides once)
                d.schedule = schedule
        if optimum is not None and cfg.tol and epoch < cfg.epochs and not result.stopped_early:
            bound = _tol_bound(optimum, cfg.tol)
            # The epoch's running loss (each batch's before its step) only says when to look: on
            # small batches it can dip below the optimum itself. The weights' own loss decides.
            if train_loss <= bound and val_loss(d, batches.rows(d), comm) + _penalty(model, cfg.l2, d.pen, d.y_var) <= bound:
                result.stopped_early, result.stopped_by = True, "tol"
        if checkpoint is not None and comm.lead and checkpoint.due(epoch, last=epoch == cfg.epochs or result.stopped_early):
            tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
            tensors.update({f"opt.{k}": v for k, v in opt.state_tensors().items()})
            tensors["generator"] = gen.get_state()
            tensors.update({f"best.{k}": v for k, v in (best_state or {}).items()})
            state = {"epoch": epoch, "history": result.history, "best": best, "since_best": since_best}
            stop = {"best_epoch": result.best_epoch, "stopped_early": result.stopped_early, "stopped_by": result.stopped_by}
            checkpoint.save(tensors, {**state, **stop})
        if result.stopped_early:
            break
    if best_state is not None:
        model.load_state_dict(best_state)  # keep the best weights, not the last
    elif not cfg.early_stopping:
        result.best_epoch = len(result.history)
    return result


def _tol_bound(optimum: tuple[float, float], tol: float) -> float:
    """The training loss within ``tol`` of the optimum: relative, or (an optimum of about 0, an
    exact fit) within the absolute slack."""
    best, slack = optimum
    return best * (1 + tol) if best > slack else best + slack


def _noise_floor(history: list[dict], optimum: tuple[float, float] | None, d: Descent, cfg: TrainConfig) -> int | None:
    """The epoch at which whitened descent reached its minibatch noise floor, or None.

    Whitened, the design's Gram is the identity, so the error in the weights' direction shrinks
    within the first epoch, and what is left above the optimum is the noise of the steps, set by
    the learning rate: the running loss's excess stops halving from one epoch to the next (on B1,
    2% above the optimum from epoch 2 to 30 of 50 while the cosine rate stayed high). Descent then
    anneals the rate to 0 over ``ANNEAL`` more epochs and stops if the annealed weights are within
    ``tol`` (a 2-epoch cosine run ends 0.03% above the optimum there; one annealing epoch left
    0.17% on a test table, two 0.04%); else it goes on at the schedule's rate. Only with ``tol``, the exact optimum known, and whitening (no ``--l2``, no
    ``--no-standardize``), where the plateau cannot be slow progress. A function of the history,
    so a resumed run makes the same decision.
    """
    if not (cfg.tol and optimum is not None and d.rotation is not None and cfg.lr is None):
        return None
    best = optimum[0]
    for prev, cur in zip(history, history[1:]):
        if cur["loss"] - best > 0.5 * (prev["loss"] - best):
            return cur["epoch"]
    return None


def _ddp(model: LinearModel):
    """The model's standardized forward inside DistributedDataParallel, whose backward all-reduces
    the gradients. The buffers (the standardization) are equal on every rank: none is sent per step."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    device_ids = [model.weight.device] if model.weight.device.type == "cuda" else None
    params = inspect.signature(DistributedDataParallel).parameters
    no_sync = "forward_sync_buffers" if "forward_sync_buffers" in params else "broadcast_buffers"  # renamed in torch 2.13
    return DistributedDataParallel(_Standardized(model), device_ids=device_ids, **{no_sync: False})


class _Standardized(torch.nn.Module):
    """The model's forward on standardized inputs, as a module DistributedDataParallel can wrap."""

    def __init__(self, model: LinearModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, xs: torch.Tensor) -> torch.Tensor:
        return self.model.forward_standardized(xs)


def best_train(history: list[dict]) -> float:
    return min((h["loss"] for h in history), default=math.inf)


def train_step(model, opt, lr, xb, yb, wb, l2, pen, forward, denom: float | None = None) -> torch.Tensor:
    """Forward, MSE (+ ridge), backward, step. Returns the batch's per-target SSE (detached).

    ``forward`` is the model's standardized forward (DDP-wrapped on several ranks), and ``denom``
    the divisor of this rank's squared errors that makes the all-reduced gradient the global
    batch's (None: the batch's mean).
    """
    opt.zero_grad()
    err = forward(xb) - yb
    sq = err * err if wb is None else err * err * wb[:, None]
    loss = sq.mean() if denom is None else sq.sum() / denom
    if l2 > 0:
        loss = loss + l2 * ((model.weight * pen) ** 2).sum() / model.weight.shape[0]
    loss.backward()
    opt.step(lr)
    return sq.detach().sum(dim=0).double()


def _penalty(model, l2, pen, y_var) -> float:
    if l2 <= 0:
        return 0.0
    with torch.no_grad():
        per_target = ((model.weight * pen) ** 2).sum(dim=1).double() * y_var
    return float(l2 * per_target.mean())


class IncrementalGD:
    """Gradient descent fed one batch of rows at a time (``LinearRegressor.partial_fit``): the
    set-up and epoch loop of every other path, one epoch per call.

    The first batch fixes the standardization, the batch size and (unless given) the base
    learning rate; every call then makes one shuffled pass over its rows at the base rate divided
    by √t, t the rows seen so far in units of the first batch (+1), as scikit-learn's
    ``SGDRegressor`` decays its rate. The optimizer's state carries over.

    Parameters
    ----------
    X : ndarray of shape (n, n_features)
        The first batch.
    Y : ndarray of shape (n, n_targets)
    sample_weight : ndarray of shape (n,) or None
    cfg : TrainConfig
    """

    def __init__(self, X: np.ndarray, Y: np.ndarray, sample_weight: np.ndarray | None, cfg: TrainConfig) -> None:
        moments = weighted_moments(X, sample_weight, cfg.fit_intercept) + weighted_moments(Y, sample_weight, cfg.fit_intercept)
        self.d = setup(X.shape[1], Y.shape[1], len(X), cfg, moments)
        first = Resident(*self._prepared(X, Y, sample_weight))
        self.d.start(lambda: first.curvature_lr(self.d, None), constant=True)
        self.history: list[dict] = []
        self.first_rows, self.rows_seen = len(X), 0

    @property
    def model(self) -> LinearModel:
        return self.d.model

    @property
    def lr(self) -> float:
        return self.d.lr

    @property
    def batch_size(self) -> int:
        return self.d.batch_size

    @property
    def moments(self) -> tuple:
        """(x_mean, x_scale, y_mean, y_scale) of the model."""
        return self.d.moments

    @classmethod
    def resume(cls, fitted, X: np.ndarray, Y: np.ndarray, sample_weight: np.ndarray | None, cfg: TrainConfig) -> IncrementalGD:
        """Continue from a model fitted by ``fit``: its standardization and coefficients.

        Parameters
        ----------
        fitted : FittedModel
        X : ndarray of shape (n, n_features)
        Y : ndarray of shape (n, n_targets)
        sample_weight : ndarray of shape (n,) or None
        cfg : TrainConfig

        Returns
        -------
        IncrementalGD
        """
        inc = cls(X, Y, sample_weight, cfg)
        d = inc.d
        d.moments = (fitted.x_mean, fitted.x_scale, fitted.y_mean, fitted.y_scale)
        W = fitted.coef * fitted.x_scale[None, :] / fitted.y_scale[:, None]
        b = (fitted.intercept + fitted.coef @ fitted.x_mean - fitted.y_mean) / fitted.y_scale
        m = d.model
        with torch.no_grad():
            for buf, val in zip((m.x_mean, m.x_scale, m.y_mean, m.y_scale, m.weight), (*d.moments, W)):
                buf.copy_(torch.as_tensor(val))
            if cfg.fit_intercept:
                m.bias.copy_(torch.as_tensor(b))
        lr = fitted.info.get("lr") or d.lr
        d.start(lambda: lr, constant=True)
        inc.history = list(fitted.history)
        return inc

    def _prepared(self, X, Y, w):
        return self.d.prepare(X, Y, w, w.mean() if w is not None else 1.0)

    def step(self, X: np.ndarray, Y: np.ndarray, sample_weight: np.ndarray | None = None) -> dict:
        """One shuffled pass over a batch of rows.

        Parameters
        ----------
        X : ndarray of shape (n, n_features)
        Y : ndarray of shape (n, n_targets)
        sample_weight : ndarray of shape (n,), optional

        Returns
        -------
        dict
            The history record: ``epoch`` (calls so far), ``loss`` (mean MSE over the pass, original
            units), ``lr``, ``seconds``, ``rows_per_s``.
        """
        t0 = time.perf_counter()
        d = self.d
        # Robbins-Monro: a rate that decays as 1/√t, t counting rows seen in units of the first
        # batch, so that the minibatch noise averages out as batches keep coming (a constant rate
        # left the fit 5-20% above the optimum after 100 calls; SGDRegressor's invscaling decays too).
        rate = d.lr / math.sqrt(1 + self.rows_seen / self.first_rows)
        d.schedule = lambda step: rate
        self.rows_seen += len(X)
        sse = run_epoch(d, Resident(*self._prepared(X, Y, sample_weight)).epoch(d, 0), 0)
        loss = float((sse / len(X) * d.y_var).mean()) + _penalty(d.model, d.cfg.l2, d.pen, d.y_var)
        if not math.isfinite(loss):
            raise DivergenceError(f"partial_fit diverged: loss {loss:.4g}; use a smaller lr (now {d.lr:.3g})")
        elapsed = time.perf_counter() - t0
        record = {
            "epoch": len(self.history) + 1,
            "loss": loss,
            "lr": rate,
            "seconds": elapsed,
            "rows_per_s": len(X) / max(elapsed, 1e-12),
        }
        self.history.append(record)
        return record
