"""Many processes, one answer: torch.distributed set-up, sharding, and the collective merges.

``torchrun --nproc_per_node=N -m gradreg train ...`` (or ``gradreg train --nproc N``) starts N
copies of the same command; torchrun's environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``…)
tells each which one it is. :func:`init` then joins the process group (gloo on the CPU, NCCL on
CUDA) and returns a :class:`Comm`; without torchrun it returns None and nothing here is used.

Every rank reads only its shard (:func:`shard`): a contiguous, balanced run of Parquet row groups
and CSV byte ranges, in file order, so rank order is row order. The solvers then merge what each
rank computed with collectives, always in rank order, so the result does not depend on timing:

- the exact solver all-gathers each rank's partial factor (a (p+q)² matrix, a few KB) and folds
  them in rank order; sums (refinement, residuals) are all-reduced;
- gradient descent all-reduces gradients every step through DistributedDataParallel.

Faults: every collective here starts with a one-number status exchange. A rank whose work fails
announces its error there (:meth:`Comm.fail`), so the others stop at their next collective with
"rank R failed: ..." instead of waiting; a rank that dies outright is reported by torchrun, and
any wait is bounded by ``--timeout``.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .errors import ConfigError, GradregError

__all__ = ["Comm", "RankFailedError", "init", "launched", "shard", "balanced_ranges"]

DEFAULT_TIMEOUT = 600.0  # seconds a rank waits for the others at a collective (--timeout)


class RankFailedError(GradregError):
    """Another rank of a distributed job failed; this one stops too.

    Parameters
    ----------
    message : str
        What the failed rank said.
    **values
        Options named in ``message`` (see :class:`gradreg.errors.GradregError`).
    """

    exit_code = 1


def launched() -> bool:
    """Whether this process is one of several started by torchrun (``WORLD_SIZE`` > 1).

    Returns
    -------
    bool
    """
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def init(backend: str = "auto", timeout: float = DEFAULT_TIMEOUT, device: str = "auto") -> Comm | None:
    """Join the process group torchrun described in the environment; None for a single process.

    Parameters
    ----------
    backend : {"auto", "gloo", "nccl"}
        "auto" is NCCL when this rank computes on CUDA, else gloo.
    timeout : float
        Seconds any collective may wait for the other ranks.
    device : {"auto", "cpu", "cuda"}
        The ``--device`` of the run; with CUDA each rank takes GPU ``LOCAL_RANK``.

    Returns
    -------
    Comm or None
    """
    if not launched():
        return None
    import torch
    import torch.distributed as dist

    if timeout <= 0:
        raise ConfigError("{timeout} must be a positive number of seconds; got {timeout=}", timeout=timeout)
    if backend not in ("auto", "gloo", "nccl"):
        raise ConfigError("{backend} must be auto, gloo or nccl; got {backend=}", backend=backend)
    for var in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if var not in os.environ:
            raise ConfigError(f"WORLD_SIZE is set but {var} is not: start distributed runs with torchrun")
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)  # ranks on this machine
    if cuda and gpus:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % gpus)  # ranks share GPUs if fewer
    if backend == "auto":  # NCCL wants a GPU of its own per rank; ranks sharing one talk through gloo
        backend = "nccl" if cuda and gpus >= local else "gloo"
    if backend == "nccl" and gpus < local:
        raise ConfigError(
            f"{{backend=}} needs a GPU per rank: {local} ranks on this machine, {gpus} GPU(s); "
            "use {backend} gloo, or fewer processes per machine",
            backend=backend,
        )
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
    return Comm(dist.get_rank(), dist.get_world_size(), backend, timeout)


class Comm:
    """This rank's view of the job, and the collectives gradreg uses (numpy in, numpy out).

    Parameters
    ----------
    rank : int
    world : int
        Number of ranks.
    backend : str
        "gloo" or "nccl".
    timeout : float
        Seconds a collective may wait.
    """

    def __init__(self, rank: int, world: int, backend: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        import torch

        self.rank, self.world, self.backend, self.timeout = rank, world, backend, timeout
        self.device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")

    def __repr__(self) -> str:
        return f"<Comm rank {self.rank} of {self.world} ({self.backend})>"

    def close(self) -> None:
        """Leave the process group."""
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()

    # -- the status exchange -------------------------------------------------------------------
    def _status(self, failed: bool) -> int:
        """All-reduce MIN of (rank if failed else world): the lowest failed rank, or ``world``."""
        import torch
        import torch.distributed as dist

        t = torch.tensor([self.rank if failed else self.world], dtype=torch.int64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return int(t.item())

    def _message(self, text: str | None, src: int) -> str:
        return self._broadcast((text or "").encode()[:4096] if self.rank == src else None, src).decode(errors="replace")

    def _broadcast(self, data: bytes | None, src: int) -> bytes:
        """``src``'s bytes on every rank (a length, then the bytes); no status exchange."""
        import torch
        import torch.distributed as dist

        size = torch.tensor([len(data) if self.rank == src and data is not None else 0], dtype=torch.int64, device=self.device)
        dist.broadcast(size, src)
        buf = torch.empty(int(size.item()), dtype=torch.uint8, device=self.device)
        if self.rank == src and size.item():
            buf.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
        dist.broadcast(buf, src)
        return bytes(buf.cpu().numpy())

    def check(self) -> None:
        """Meet the other ranks; raise :class:`RankFailedError` if one announced a failure.

        Raises
        ------
        RankFailedError
            Naming the failed rank and its error.
        """
        src = self._status(False)
        if src < self.world:
            raise RankFailedError(f"rank {src} failed: {self._message(None, src)}")

    def fail(self, message: str) -> int:
        """Announce this rank's failure at the others' next collective (see :meth:`check`).

        Parameters
        ----------
        message : str
            The error, as this rank would print it.

        Returns
        -------
        int
            The lowest failed rank (this one, unless a lower one failed at the same point).
        """
        src = self._status(True)
        self._message(message, src)
        return src

    # -- collectives -----------------------------------------------------------------------------
    def _tensor(self, a: np.ndarray):
        import torch

        return torch.from_numpy(np.array(a, copy=True, order="C")).to(self.device)

    def _reduce(self, a, op: str) -> np.ndarray:
        import torch.distributed as dist

        self.check()
        t = self._tensor(np.asarray(a, dtype=np.float64))
        dist.all_reduce(t, op=getattr(dist.ReduceOp, op))
        return t.cpu().numpy()

    def sum(self, a) -> np.ndarray:
        """Σ over ranks of ``a`` (float64).

        Parameters
        ----------
        a : array-like

        Returns
        -------
        ndarray
        """
        return self._reduce(a, "SUM")

    def max(self, a) -> np.ndarray:
        """Elementwise maximum over ranks of ``a`` (float64).

        Parameters
        ----------
        a : array-like

        Returns
        -------
        ndarray
        """
        return self._reduce(a, "MAX")

    def gather(self, a) -> list[np.ndarray]:
        """Every rank's ``a`` (same shape on each), in rank order.

        Parameters
        ----------
        a : array-like

        Returns
        -------
        list of ndarray
        """
        import torch
        import torch.distributed as dist

        self.check()
        t = self._tensor(np.asarray(a))
        out = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(out, t)
        return [o.cpu().numpy() for o in out]

    def fold(self, local: np.ndarray, merge: Callable[[Any, Any], Any], decode: Callable[[np.ndarray], Any]) -> Any:
        """Gather each rank's flat float64 state and merge them in rank order (the same on all ranks).

        Parameters
        ----------
        local : ndarray
            This rank's state, flat.
        merge : callable
            ``merge(a, b)`` of two decoded states.
        decode : callable
            Flat array to state.

        Returns
        -------
        object
            The merged state.
        """
        parts = [decode(p) for p in self.gather(np.asarray(local, dtype=np.float64))]
        total = parts[0]
        for part in parts[1:]:
            total = merge(total, part)
        return total

    def sum_extended(self, a: np.ndarray) -> np.ndarray:
        """Σ over ranks of a numpy longdouble array, without losing its extra digits on the way:
        each rank sends a float64 head and tail, summed in rank order in longdouble.

        Parameters
        ----------
        a : ndarray of longdouble

        Returns
        -------
        ndarray of longdouble
        """
        head = a.astype(np.float64)
        tail = (a - head.astype(a.dtype)).astype(np.float64)
        total = np.zeros(a.shape, dtype=a.dtype)
        for part in self.gather(np.stack([head, tail])):
            total += part[0].astype(a.dtype) + part[1].astype(a.dtype)
        return total

    def agree(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every rank: decisions that choose the next collectives must agree.

        Parameters
        ----------
        flag : bool

        Returns
        -------
        bool
        """
        import torch
        import torch.distributed as dist

        self.check()
        t = torch.tensor([int(bool(flag))], dtype=torch.int64, device=self.device)
        dist.broadcast(t, 0)
        return bool(t.item())

    def broadcast_bytes(self, data: bytes | None, src: int = 0) -> bytes:
        """``src``'s bytes on every rank.

        Parameters
        ----------
        data : bytes or None
            Read on ``src`` only.
        src : int

        Returns
        -------
        bytes
        """
        self.check()
        return self._broadcast(data, src)

    def counts(self, n: int) -> list[int]:
        """Every rank's ``n`` (its rows), in rank order.

        Parameters
        ----------
        n : int

        Returns
        -------
        list of int
        """
        return [int(c[0]) for c in self.gather(np.array([n], dtype=np.int64))]

    def offsets(self, n: int) -> tuple[int, int]:
        """(rows on all ranks, rows on lower ranks) for this rank's ``n`` rows.

        Parameters
        ----------
        n : int

        Returns
        -------
        tuple of int
        """
        counts = self.counts(n)
        return sum(counts), sum(counts[: self.rank])


def balanced_ranges(sizes: Sequence[float], world: int) -> list[range]:
    """Cut items of the given sizes, in order, into ``world`` contiguous runs of about equal total.

    Item i goes to the rank whose share of the total holds the middle of item i, so every item
    is assigned exactly once and shares differ by at most one item's size.

    Parameters
    ----------
    sizes : sequence of float
    world : int

    Returns
    -------
    list of range
        One per rank (possibly empty), covering ``range(len(sizes))`` in order.
    """
    total = float(sum(sizes))
    owner = []
    acc = 0.0
    for s in sizes:
        mid = acc + s / 2
        owner.append(min(world - 1, int(mid * world / total)) if total > 0 else 0)
        acc += s
    out = []
    for r in range(world):
        idx = [i for i, o in enumerate(owner) if o == r]
        out.append(range(idx[0], idx[-1] + 1) if idx else range(0))
    return out


def shard(stream, world: int, rank: int) -> list[tuple]:
    """This rank's units of a :class:`~gradreg.io.Stream`: Parquet row groups (by rows) and
    CSV byte ranges (each CSV file cut into ``world`` ranges at line boundaries, by bytes).

    Parameters
    ----------
    stream : Stream
    world : int
    rank : int

    Returns
    -------
    list of tuple
        ``(file, row group)`` and ``(file, (start byte, end byte))`` units, in file order.
    """
    units, sizes = [], []
    width = 8 * max(1, len(stream.columns))  # Parquet rows weighed as float64 bytes, against CSV bytes
    for i, f in enumerate(stream.files):
        if f.kind == "parquet":
            for g, rows in enumerate(f.row_groups):
                units.append((i, g))
                sizes.append(rows * width)
        else:
            for start, end in stream.byte_ranges(i, world):
                units.append((i, (start, end)))
                sizes.append(end - start)
    mine = balanced_ranges(sizes, world)[rank]
    return [units[i] for i in mine]
