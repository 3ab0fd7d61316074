"""Minibatch gradient descent under autograd: the tutorial's loop, made fast and safe.

fit_gd → run_epoch → train_step. Each epoch draws a fresh permutation without replacement and
slices it into batches (the last one may be partial) that index the tensors directly: a
per-sample DataLoader costs Python work for every row.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from ..config import TrainConfig, resolve_device
from ..errors import ConfigError, DivergenceError
from ..model import LinearModel

__all__ = ["GDResult", "fit_gd", "fit_gd_stream", "IncrementalGD", "auto_lr", "lr_from_curvature", "auto_batch_size"]

DIVERGENCE_FACTOR = 1000.0  # an epoch loss this many times the best so far means divergence


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
    lr: float = 0.0
    batch_size: int = 0
    resumed_from: int | None = None


_BLOCK = 65_536  # rows per block when standardizing or measuring large arrays


def _standardized(A: np.ndarray, mean: np.ndarray, scale: np.ndarray, dtype, device, rotation=None) -> torch.Tensor:
    """(A − mean) / scale (times ``rotation``) in ``dtype`` on ``device``, in float64 block by block."""
    out = torch.empty(A.shape, dtype=dtype, device=device)
    for s in range(0, len(A), _BLOCK):
        block = (A[s : s + _BLOCK] - mean) / scale
        out[s : s + _BLOCK] = torch.from_numpy(block if rotation is None else block @ rotation)
    return out


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
    comm=None,
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
    comm : gradreg.distributed.Comm, optional
        Xs is this rank's share of ``n_total`` rows: sums and maxima are over all ranks.
    n_total : int, optional

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
    if comm is not None:
        lmax = float(comm.max([lmax])[0])
        if gram_max_eig is None:
            G = torch.as_tensor(comm.sum(G.cpu().numpy()), device=Xs.device)
            c = torch.as_tensor(comm.sum(c.cpu().numpy()), device=Xs.device)
            w_sum = float(comm.sum([w_sum])[0])
        n = n_total
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


def fit_gd(
    X: np.ndarray,
    Y: np.ndarray,
    sample_weight: np.ndarray | None,
    cfg: TrainConfig,
    *,
    X_val: np.ndarray | None = None,
    Y_val: np.ndarray | None = None,
    w_val: np.ndarray | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    moments: tuple[np.ndarray, ...] | None = None,
    gram_max_eig: float | None = None,
    precondition: np.ndarray | None = None,
    checkpoint=None,
    comm=None,
    n_total: int | None = None,
    offset: int = 0,
) -> GDResult:
    """Train a :class:`LinearModel` on X (n, p), Y (n, q) by minibatch gradient descent.

    Losses in the history are in original target units: the mean over targets of each target's
    (weighted) MSE, plus the ridge penalty when ``cfg.l2 > 0``.

    Parameters
    ----------
    X : ndarray of shape (n, n_features)
    Y : ndarray of shape (n, n_targets)
    sample_weight : ndarray of shape (n,) or None
    cfg : TrainConfig
    X_val : ndarray of shape (n_val, n_features), optional
    Y_val : ndarray of shape (n_val, n_targets), optional
    w_val : ndarray of shape (n_val,), optional
        Validation rows: their loss is recorded each epoch and drives early stopping.
    on_epoch : callable, optional
        Called with each epoch's history record.
    moments : tuple of ndarray, optional
        ``(x_mean, x_std, y_mean, y_std)`` as :func:`weighted_moments` would compute them, when
        already known (the exact solver's factor holds them); saves two passes over the data.
    gram_max_eig : float, optional
        The largest eigenvalue of the standardized design's weighted Gram (with the intercept
        column), for :func:`auto_lr`; saves another pass.
    precondition : ndarray of shape (n_features, n_features), optional
        P that whitens the standardized features: (Zᵀ W Z) / Σw = Pᵀ⁻¹ P⁻¹ on the identified
        directions (see ``fitted._gd_hints``). Used when standardizing without a ridge penalty:
        descent then converges at the same rate on any design, however ill-conditioned.
    checkpoint : gradreg.checkpoint.Checkpoint, optional
        Save the training state every few epochs; resume from it when asked.
    comm : gradreg.distributed.Comm, optional
        X, Y (and the validation rows) are this rank's share of the training rows, which are
        rows ``offset`` to ``offset + len(X)`` of ``n_total``. Every rank draws the same
        permutation of all ``n_total`` rows, so each global batch is the single-process batch,
        and trains on its own rows of it; gradients are all-reduced by DistributedDataParallel.
        ``moments`` (global) are required.
    n_total : int, optional
        Training rows on all ranks.
    offset : int
        Training rows on lower ranks.

    Returns
    -------
    GDResult

    Raises
    ------
    DivergenceError
        When the loss becomes NaN/inf or grows 1000-fold.
    """
    device = resolve_device(cfg.device)
    dtype = torch.float32 if cfg.dtype == "float32" else torch.float64
    n, p = X.shape
    q = Y.shape[1]
    if comm is not None:
        if moments is None or n_total is None:
            raise ValueError("distributed gradient descent needs the global moments and n_total")
        n = n_total
    gen = torch.Generator().manual_seed(cfg.seed)
    if moments is None:  # x_std also scales the ridge penalty, with or without standardization
        moments = weighted_moments(X, sample_weight, cfg.fit_intercept) + weighted_moments(Y, sample_weight, cfg.fit_intercept)
    x_std = moments[1]
    model, (xm, xs, ym, ys) = _new_model(p, q, cfg, moments, dtype, device, gen)
    P = precondition if (cfg.standardize and cfg.l2 == 0 and precondition is not None) else None
    if P is not None:
        model.precondition(P)
        gram_max_eig = 1.0  # the whitened design's Gram (an intercept column of weight 1 beside it)
    # Standardize once, in float64, then keep the training copy in the working dtype.
    Xs = _standardized(X, xm, xs, dtype, device, P)
    Ys = _standardized(Y, ym, ys, dtype, device)
    wn = None
    if sample_weight is not None:
        w_mean = sample_weight.mean() if comm is None else float(comm.sum([sample_weight.sum()])[0]) / n
        wn = torch.as_tensor(sample_weight / w_mean, dtype=dtype).to(device)
    pen = torch.as_tensor(x_std / xs, dtype=dtype, device=device)  # ridge scale per model weight
    y_var = torch.as_tensor(ys**2, dtype=torch.float64, device=device)
    B = cfg.batch_size or auto_batch_size(n)
    B = min(B, n)
    if cfg.lr is not None:
        lr = cfg.lr
    else:
        lam = gram_max_eig if cfg.standardize else None  # the hint is for the standardized design
        lr = auto_lr(Xs, wn, B, q, cfg.l2, pen, cfg.fit_intercept, cfg.optimizer, gram_max_eig=lam, comm=comm, n_total=n)
    params = [model.weight] + ([model.bias] if cfg.fit_intercept else [])
    opt = Optimizer(cfg.optimizer, params, lr)
    steps_per_epoch = math.ceil(n / B)  # the last batch may be partial
    total_steps = cfg.epochs * steps_per_epoch
    schedule = (lambda step: cosine_lr(lr, step, total_steps)) if cfg.lr_schedule == "cosine" else (lambda step: lr)
    val = None
    n_val = len(X_val) if X_val is not None else 0
    if comm is not None:
        n_val = int(comm.sum([n_val])[0])
    if n_val:
        if w_val is not None:
            wv_mean = w_val.mean() if comm is None else float(comm.sum([w_val.sum()])[0]) / n_val
        val = (
            _standardized(X_val, xm, xs, dtype, device, P),
            torch.as_tensor((Y_val - ym) / ys, dtype=dtype).to(device),
            None if w_val is None else torch.as_tensor(w_val / wv_mean, dtype=dtype).to(device),
        )
    result = GDResult(model, lr=lr, batch_size=B)
    shard = None if comm is None else _Shard(comm, model, n, offset)

    def train_epoch(epoch: int) -> torch.Tensor:
        return run_epoch(model, opt, schedule, (epoch - 1) * steps_per_epoch, Xs, Ys, wn, B, gen, cfg.l2, pen, shard)

    val_loss = (lambda: evaluate_loss(model, *val, y_var, comm=comm, n=n_val)) if val is not None else None
    return _epochs(
        result,
        cfg,
        n,
        train_epoch,
        val_loss,
        schedule,
        steps_per_epoch,
        pen,
        y_var,
        on_epoch,
        opt=opt,
        gen=gen,
        checkpoint=checkpoint,
        comm=comm,
    )


class _Shard:
    """This rank's part of distributed descent: its rows' place among all rows, and the model
    wrapped in DistributedDataParallel (whose backward all-reduces the gradients)."""

    def __init__(self, comm, model: LinearModel, n: int, offset: int) -> None:
        self.comm, self.n, self.offset = comm, n, offset
        self.forward = _ddp(model)

    def batches(self, perm: torch.Tensor, B: int, n_local: int, device) -> list[tuple[torch.Tensor, int]]:
        """Per global batch of ``perm``: this rank's rows of it (local indices) and its size."""
        mine = torch.nonzero((perm >= self.offset) & (perm < self.offset + n_local)).squeeze(1)
        local = (perm[mine] - self.offset).to(device)
        edges = torch.searchsorted(mine, torch.arange(0, self.n + B, B).clamp(max=self.n)).tolist()
        return [(local[edges[k] : edges[k + 1]], min(B, self.n - start)) for k, start in enumerate(range(0, self.n, B))]


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


def _epochs(
    result: GDResult,
    cfg: TrainConfig,
    n: int,
    train_epoch,
    val_loss,
    schedule,
    steps_per_epoch,
    pen,
    y_var,
    on_epoch,
    *,
    opt: Optimizer,
    gen: torch.Generator,
    checkpoint=None,
    comm=None,
):
    """The epoch loop shared by in-memory and streaming descent: history, divergence, early
    stopping, and checkpoints (saved after an epoch, restored before the next). Distributed,
    ``train_epoch`` returns the SSE of all ranks, so every rank takes the same decisions; rank 0
    alone writes checkpoints, and sends the one it resumes from to the others."""
    model, lr = result.model, result.lr
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
            result.stopped_early = True
    for epoch in range(start, cfg.epochs + 1):
        t0 = time.perf_counter()
        sse = train_epoch(epoch)
        train_loss = float((sse / n * y_var).mean()) + _penalty(model, cfg.l2, pen, y_var)
        elapsed = time.perf_counter() - t0
        record = {
            "epoch": epoch,
            "loss": train_loss,
            "lr": schedule(epoch * steps_per_epoch - 1),
            "seconds": elapsed,
            "rows_per_s": n / elapsed if elapsed > 0 else math.inf,
        }
        if val_loss is not None:
            record["val_loss"] = val_loss()
        result.history.append(record)
        if not math.isfinite(train_loss) or train_loss > DIVERGENCE_FACTOR * min(best_train(result.history[:-1]), 1e300):
            raise DivergenceError(
                f"training diverged at epoch {epoch}: loss {train_loss:.4g}; use a smaller {{lr}} (now {lr:.3g})"
                + ("" if cfg.standardize else " or drop {standardize=}"),
                lr=lr,
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
                result.stopped_early = True
        writer = comm is None or comm.rank == 0
        if checkpoint is not None and writer and checkpoint.due(epoch, last=epoch == cfg.epochs or result.stopped_early):
            tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
            tensors.update({f"opt.{k}": v for k, v in opt.state_tensors().items()})
            tensors["generator"] = gen.get_state()
            tensors.update({f"best.{k}": v for k, v in (best_state or {}).items()})
            state = {"epoch": epoch, "history": result.history, "best": best, "since_best": since_best}
            checkpoint.save(tensors, {**state, "best_epoch": result.best_epoch, "stopped_early": result.stopped_early})
        if result.stopped_early:
            break
    if best_state is not None:
        model.load_state_dict(best_state)  # keep the best weights, not the last
    elif not cfg.early_stopping:
        result.best_epoch = len(result.history)
    return result


def fit_gd_stream(
    chunks: Callable[[int], Iterator[tuple]],
    n: int,
    cfg: TrainConfig,
    *,
    moments: tuple[np.ndarray, ...],
    gram_max_eig: float,
    row_norm_max: float,
    sum_w: float,
    precondition: np.ndarray | None = None,
    val_chunks: Callable[[], Iterator[tuple]] | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    shuffle_buffer: int = 1 << 18,
    checkpoint=None,
    comm=None,
    counts: list[int] | None = None,
) -> GDResult:
    """Minibatch gradient descent over chunks that need not fit in memory.

    Each epoch reads the chunks in the order ``chunks(epoch)`` gives (a fresh random order of
    files/row groups), standardizes them, and shuffles rows inside a buffer of ``shuffle_buffer``
    rows before cutting batches; leftover rows carry over, so an epoch takes ceil(n / B) steps,
    as in memory. The moments and curvature come from the exact solver's factor (one pass done
    already), so no extra pass is needed before the first step.

    Parameters
    ----------
    chunks : callable
        ``chunks(epoch)`` returns an iterator of ``(X, Y, w)``: X (m, n_features), Y (m, n_targets),
        w (m,) or None.
    n : int
        Training rows in all chunks.
    cfg : TrainConfig
    moments : tuple of ndarray
        ``(x_mean, x_std, y_mean, y_std)``.
    gram_max_eig : float
        Largest eigenvalue of the standardized weighted Gram (intercept column included).
    row_norm_max : float
        An upper bound of max wᵢ‖uᵢ‖² over standardized rows uᵢ = [1, (xᵢ − mean)/std], weights
        normalized to mean 1.
    sum_w : float
        Σ w over the training rows (n without weights).
    precondition : ndarray of shape (n_features, n_features), optional
        P that whitens the standardized features, as for :func:`fit_gd`; ``gram_max_eig`` and
        ``row_norm_max`` must then describe the whitened rows.
    val_chunks : callable, optional
        Returns an iterator of validation ``(X, Y, w)`` chunks.
    on_epoch : callable, optional
    shuffle_buffer : int
        Rows shuffled together.
    checkpoint : gradreg.checkpoint.Checkpoint, optional
        Save the training state every few epochs; resume from it when asked.
    comm : gradreg.distributed.Comm, optional
        The chunks are this rank's share. Every rank takes the same ceil(n / B) steps an epoch,
        each with its proportional part of the batch (the parts sum to the global batch), shuffled
        in its own buffer; gradients are all-reduced by DistributedDataParallel.
    counts : list of int, optional
        Training rows on each rank (with ``comm``).

    Returns
    -------
    GDResult
    """
    device = resolve_device(cfg.device)
    dtype = torch.float32 if cfg.dtype == "float32" else torch.float64
    x_center, x_std, y_center, y_std = moments
    p, q = len(x_center), len(y_center)
    gen = torch.Generator().manual_seed(cfg.seed)
    model, (xm, xs, ym, ys) = _new_model(p, q, cfg, moments, dtype, device, gen)
    P = precondition if (cfg.standardize and cfg.l2 == 0 and precondition is not None) else None
    if P is not None:
        model.precondition(P)
    pen = torch.as_tensor(x_std / xs, dtype=dtype, device=device)
    y_var = torch.as_tensor(ys**2, dtype=torch.float64, device=device)
    w_mean = sum_w / n
    B = min(cfg.batch_size or auto_batch_size(n), n)
    if cfg.lr is not None:
        lr = cfg.lr
    elif cfg.optimizer == "adam":
        lr = 1e-2
    elif not cfg.standardize:
        raise ConfigError("{standardize=} on streamed data needs an explicit {lr}", standardize=False, lr=None)
    else:
        lam = gram_max_eig + (cfg.l2 * float((pen.double() ** 2).max()) if cfg.l2 > 0 else 0.0)
        lr = lr_from_curvature(lam, row_norm_max, n, B, q, cfg.optimizer)
    params = [model.weight] + ([model.bias] if cfg.fit_intercept else [])
    opt = Optimizer(cfg.optimizer, params, lr)
    steps_per_epoch = math.ceil(n / B)
    total_steps = cfg.epochs * steps_per_epoch
    schedule = (lambda step: cosine_lr(lr, step, total_steps)) if cfg.lr_schedule == "cosine" else (lambda step: lr)

    def prepared(X, Y, w):
        return (
            _standardized(X, xm, xs, dtype, device, P),
            _standardized(Y, ym, ys, dtype, device),
            None if w is None else torch.as_tensor(w / w_mean, dtype=dtype, device=device),
        )

    # Rows this process takes at each step of an epoch (B, and a partial last batch), and the
    # global batch sizes. Distributed: each rank's share of every step, in proportion to its rows.
    if comm is None:
        sizes = [min(B, n - k * B) for k in range(steps_per_epoch)]
        totals = sizes
        forward, world = None, 1
    else:
        shares = [[c // steps_per_epoch + (1 if k < c % steps_per_epoch else 0) for k in range(steps_per_epoch)] for c in counts]
        sizes = shares[comm.rank]
        totals = [sum(col) for col in zip(*shares)]
        forward, world = _ddp(model), comm.world

    def train_epoch(epoch: int) -> torch.Tensor:
        sse = torch.zeros(q, dtype=torch.float64, device=device)
        first = (epoch - 1) * steps_per_epoch
        k = 0  # steps taken this epoch
        held: list[tuple] = []
        rows = 0
        # One process: the run's generator (its state is checkpointed). Ranks: their own stream
        # of draws per epoch, from the seed, so a resumed epoch shuffles as the first try did.
        shuffle = gen if comm is None else torch.Generator().manual_seed(cfg.seed * 1_000_003 + comm.rank * 7919 + epoch)

        def drain(final: bool) -> None:
            nonlocal held, rows, k, sse
            if held:
                Xs = torch.cat([h[0] for h in held])
                Ys = torch.cat([h[1] for h in held])
                ws = None if held[0][2] is None else torch.cat([h[2] for h in held])
            else:  # a rank with no rows left still takes its (empty) part of every step
                Xs = torch.empty(0, p, dtype=dtype, device=device)
                Ys = torch.empty(0, q, dtype=dtype, device=device)
                ws = None
            perm = torch.randperm(len(Xs), generator=shuffle).to(device)
            start = 0
            while k < steps_per_epoch and (final or start + sizes[k] <= len(Xs)):
                idx = perm[start : start + sizes[k]]
                start += sizes[k]
                wb = None if ws is None else ws[idx]
                denom = None if comm is None else totals[k] * q / world
                sse += train_step(model, opt, schedule(first + k), Xs[idx], Ys[idx], wb, cfg.l2, pen, forward, denom)
                k += 1
            rest = perm[start:]
            held = [(Xs[rest], Ys[rest], None if ws is None else ws[rest])] if len(rest) else []
            rows = len(rest)

        for X, Y, w in chunks(epoch):
            if len(X) == 0:
                continue
            held.append(prepared(X, Y, w))
            rows += len(X)
            if rows >= max(shuffle_buffer, B):
                drain(final=False)
        if rows or (comm is not None and k < steps_per_epoch):
            drain(final=True)
        if comm is not None:
            sse = torch.as_tensor(comm.sum(sse.cpu().numpy()), device=device)
        return sse

    def val_loss() -> float:
        total = torch.zeros(q, dtype=torch.float64, device=device)
        sw = 0.0
        with torch.no_grad():
            for X, Y, w in val_chunks():
                if len(X) == 0:
                    continue
                Xs, Ys, _ = prepared(X, Y, None)
                err = (model.forward_standardized(Xs) - Ys).double()
                wt = torch.ones(len(X), dtype=torch.float64, device=device) if w is None else torch.as_tensor(w, device=device)
                total += (wt[:, None] * err * err).sum(dim=0)
                sw += float(wt.sum())
        if comm is not None:
            both = comm.sum(np.concatenate([total.cpu().numpy(), [sw]]))
            total, sw = torch.as_tensor(both[:-1], device=device), float(both[-1])
        return float((total / sw * y_var).mean()) if sw > 0 else math.nan

    result = GDResult(model, lr=lr, batch_size=B)
    val = val_loss if val_chunks is not None else None
    return _epochs(
        result,
        cfg,
        n,
        train_epoch,
        val,
        schedule,
        steps_per_epoch,
        pen,
        y_var,
        on_epoch,
        opt=opt,
        gen=gen,
        checkpoint=checkpoint,
        comm=comm,
    )


def best_train(history: list[dict]) -> float:
    return min((h["loss"] for h in history), default=math.inf)


def run_epoch(model, opt, schedule, first_step, Xs, Ys, wn, B, gen, l2, pen, shard: _Shard | None = None) -> torch.Tensor:
    """One pass over a fresh permutation; returns per-target (weighted) SSE in model units (of
    all ranks' rows, with ``shard``)."""
    if shard is not None:
        return _run_epoch_shard(model, opt, schedule, first_step, Xs, Ys, wn, B, gen, l2, pen, shard)
    n = Xs.shape[0]
    perm = torch.randperm(n, generator=gen).to(Xs.device)
    sse = torch.zeros(Ys.shape[1], dtype=torch.float64, device=Xs.device)
    # Gather each batch into the same buffers: index_select with out= is several times faster
    # than fancy indexing, which allocates a fresh tensor per batch.
    xbuf = torch.empty((min(B, n), Xs.shape[1]), dtype=Xs.dtype, device=Xs.device)
    ybuf = torch.empty((min(B, n), Ys.shape[1]), dtype=Ys.dtype, device=Ys.device)
    for k, start in enumerate(range(0, n, B)):
        idx = perm[start : start + B]
        m = len(idx)
        xb = torch.index_select(Xs, 0, idx, out=xbuf[:m])
        yb = torch.index_select(Ys, 0, idx, out=ybuf[:m])
        sse += train_step(model, opt, schedule(first_step + k), xb, yb, None if wn is None else wn[idx], l2, pen)
    return sse


def _run_epoch_shard(model, opt, schedule, first_step, Xs, Ys, wn, B, gen, l2, pen, shard: _Shard) -> torch.Tensor:
    """:func:`run_epoch` on one rank: the same permutation of all rows on every rank; each trains
    on its rows of every batch, and DDP sums the gradients, so each step is the single-process one."""
    perm = torch.randperm(shard.n, generator=gen)  # the same draws as a single process makes
    q = Ys.shape[1]
    sse = torch.zeros(q, dtype=torch.float64, device=Xs.device)
    world = shard.comm.world
    batches = shard.batches(perm, B, Xs.shape[0], Xs.device)
    most = max(len(idx) for idx, _ in batches)
    xbuf = torch.empty((most, Xs.shape[1]), dtype=Xs.dtype, device=Xs.device)  # reused, as in run_epoch
    ybuf = torch.empty((most, q), dtype=Ys.dtype, device=Ys.device)
    for k, (idx, m) in enumerate(batches):
        xb = torch.index_select(Xs, 0, idx, out=xbuf[: len(idx)])
        yb = torch.index_select(Ys, 0, idx, out=ybuf[: len(idx)])
        # DDP averages gradients over ranks: scale so that the average is the global batch mean.
        denom = m * q / world
        wb = None if wn is None else wn[idx]
        sse += train_step(model, opt, schedule(first_step + k), xb, yb, wb, l2, pen, shard.forward, denom)
    return torch.as_tensor(shard.comm.sum(sse.cpu().numpy()), device=Xs.device)


def train_step(model, opt, lr, xb, yb, wb, l2, pen, forward=None, denom: float | None = None) -> torch.Tensor:
    """Forward, MSE (+ ridge), backward, step. Returns the batch's per-target SSE (detached).

    Distributed, ``forward`` is the DDP-wrapped model and ``denom`` the divisor of this rank's
    squared errors that makes the all-reduced gradient the global batch's.
    """
    opt.zero_grad()
    err = (forward or model.forward_standardized)(xb) - yb
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


@torch.no_grad()
def evaluate_loss(model, Xs, Ys, wn, y_var, comm=None, n: int | None = None) -> float:
    """Mean over targets of the (weighted) MSE in original units on standardized data (over all
    ranks' ``n`` rows, with ``comm``)."""
    err = model.forward_standardized(Xs) - Ys
    sq = err.double() ** 2
    if wn is not None:
        sq = sq * wn.double()[:, None]
    if comm is None:
        return float((sq.mean(dim=0) * y_var).mean())
    total = torch.as_tensor(comm.sum(sq.sum(dim=0).cpu().numpy()), device=y_var.device)
    return float((total / n * y_var).mean())


class IncrementalGD:
    """Gradient descent fed one batch of rows at a time (``LinearRegressor.partial_fit``).

    The first batch fixes the standardization, the batch size and (unless given) the learning
    rate; every call then makes one shuffled pass over its rows with a constant learning rate,
    as scikit-learn's ``SGDRegressor.partial_fit`` does. The optimizer's state carries over.

    Parameters
    ----------
    X : ndarray of shape (n, n_features)
        The first batch.
    Y : ndarray of shape (n, n_targets)
    sample_weight : ndarray of shape (n,) or None
    cfg : TrainConfig
    """

    def __init__(self, X: np.ndarray, Y: np.ndarray, sample_weight: np.ndarray | None, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.dtype = torch.float32 if cfg.dtype == "float32" else torch.float64
        n, p = X.shape
        q = Y.shape[1]
        self.gen = torch.Generator().manual_seed(cfg.seed)
        moments = weighted_moments(X, sample_weight, cfg.fit_intercept) + weighted_moments(Y, sample_weight, cfg.fit_intercept)
        x_std = moments[1]
        self.model, (self.xm, self.xs, self.ym, self.ys) = _new_model(p, q, cfg, moments, self.dtype, self.device, self.gen)
        self.pen = torch.as_tensor(x_std / self.xs, dtype=self.dtype, device=self.device)
        self.y_var = torch.as_tensor(self.ys**2, dtype=torch.float64, device=self.device)
        self.B = min(cfg.batch_size or auto_batch_size(n), n)
        Xs, _, wn = self._prepared(X, Y, sample_weight)
        self.lr = cfg.lr or auto_lr(Xs, wn, self.B, q, cfg.l2, self.pen, cfg.fit_intercept, cfg.optimizer)
        params = [self.model.weight] + ([self.model.bias] if cfg.fit_intercept else [])
        self.opt = Optimizer(cfg.optimizer, params, self.lr)
        self.history: list[dict] = []

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
        inc.xm, inc.xs, inc.ym, inc.ys = fitted.x_mean, fitted.x_scale, fitted.y_mean, fitted.y_scale
        W = fitted.coef * fitted.x_scale[None, :] / fitted.y_scale[:, None]
        b = (fitted.intercept + fitted.coef @ fitted.x_mean - fitted.y_mean) / fitted.y_scale
        m = inc.model
        with torch.no_grad():
            for buf, val in ((m.x_mean, inc.xm), (m.x_scale, inc.xs), (m.y_mean, inc.ym), (m.y_scale, inc.ys), (m.weight, W)):
                buf.copy_(torch.as_tensor(val))
            if cfg.fit_intercept:
                m.bias.copy_(torch.as_tensor(b))
        inc.lr = cfg.lr or fitted.info.get("lr") or inc.lr
        inc.opt.base_lr = inc.lr
        inc.history = list(fitted.history)
        return inc

    def _prepared(self, X, Y, w):
        Xs = _standardized(X, self.xm, self.xs, self.dtype, self.device)
        Ys = _standardized(Y, self.ym, self.ys, self.dtype, self.device)
        wn = None if w is None else torch.as_tensor(w / w.mean(), dtype=self.dtype, device=self.device)
        return Xs, Ys, wn

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
        Xs, Ys, wn = self._prepared(X, Y, sample_weight)
        sse = run_epoch(self.model, self.opt, lambda step: self.lr, 0, Xs, Ys, wn, self.B, self.gen, self.cfg.l2, self.pen)
        loss = float((sse / len(X) * self.y_var).mean()) + _penalty(self.model, self.cfg.l2, self.pen, self.y_var)
        if not math.isfinite(loss):
            raise DivergenceError(f"partial_fit diverged: loss {loss:.4g}; use a smaller lr (now {self.lr:.3g})")
        elapsed = time.perf_counter() - t0
        record = {
            "epoch": len(self.history) + 1,
            "loss": loss,
            "lr": self.lr,
            "seconds": elapsed,
            "rows_per_s": len(X) / max(elapsed, 1e-12),
        }
        self.history.append(record)
        return record
