"""Many processes, one answer: torch.distributed set-up, sharding, and the collective merges.

``torchrun --nproc_per_node=N -m gradreg train ...`` (or ``gradreg train --nproc N``) starts N
copies of the same command; torchrun's environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``…)
tells each which one it is. :func:`init` then joins the process group (gloo on the CPU, NCCL on
CUDA) and returns a :class:`GroupComm`. Without torchrun it returns :data:`SINGLE`, the
:class:`Comm` of one process (world 1, rank 0; as torchtune's ``get_world_size_and_rank`` gives
``(1, 0)`` with no process group): its collectives hand back their input, so the solvers have one
code path for one process and many, and none asks whether it is distributed.

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

__all__ = [
    "Comm",
    "GroupComm",
    "SINGLE",
    "RankFailedError",
    "init",
    "launch",
    "launched",
    "run_rank",
    "communication_error",
    "shard",
    "balanced_ranges",
]

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


def init(backend: str = "auto", timeout: float = DEFAULT_TIMEOUT, device: str = "auto") -> Comm:
    """Join the process group torchrun described in the environment; :data:`SINGLE` for a single process.

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
    Comm
    """
    if not launched():
        return SINGLE
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
    return GroupComm(dist.get_rank(), dist.get_world_size(), backend, timeout)


class Comm:
    """One process's view of the job, and the collectives gradreg uses (numpy in, numpy out).

    This base class is the job of one process: world 1, rank 0, and every collective returns
    this rank's own contribution. :class:`GroupComm` is the same interface over a
    torch.distributed process group.
    """

    rank, world, backend, timeout = 0, 1, "none", DEFAULT_TIMEOUT

    def __repr__(self) -> str:
        return f"<Comm rank {self.rank} of {self.world} ({self.backend})>"

    @property
    def lead(self) -> bool:
        """Whether this rank speaks and writes for the job (rank 0)."""
        return self.rank == 0

    def close(self) -> None:
        """Leave the process group (nothing to leave for one process)."""

    def check(self) -> None:
        """Meet the other ranks; raise :class:`RankFailedError` if one announced a failure."""

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
        self.check()
        return self._gather(np.asarray(a))

    def fold(
        self,
        local: Any,
        merge: Callable[[Any, Any], Any],
        encode: Callable[[Any], np.ndarray],
        decode: Callable[[np.ndarray], Any],
    ) -> Any:
        """Every rank's state merged in rank order (the same on all ranks).

        Parameters
        ----------
        local : object
            This rank's state.
        merge : callable
            ``merge(a, b)`` of two states.
        encode : callable
            State to a flat float64 array (what travels between ranks).
        decode : callable
            Flat array to state.

        Returns
        -------
        object
            The merged state.
        """
        if self.world == 1:  # nothing to merge: the state itself, not a decoded copy of it
            return local
        parts = [decode(p) for p in self.gather(np.asarray(encode(local), dtype=np.float64))]
        total = parts[0]
        for part in parts[1:]:
            total = merge(total, part)
        return total

    def gather_json(self, obj: Any) -> list[Any]:
        """Every rank's JSON-able ``obj`` (any size on each), in rank order.

        Parameters
        ----------
        obj : object
            Anything :func:`json.dumps` takes.

        Returns
        -------
        list
        """
        import json

        if self.world == 1:
            return [obj]
        data = np.frombuffer(json.dumps(obj).encode(), dtype=np.uint8)
        size = int(self.max(np.array([len(data)], dtype=np.float64))[0])
        buf = np.zeros(size + 1)
        buf[0], buf[1 : 1 + len(data)] = len(data), data  # bytes as float64: every rank sends the same shape
        return [json.loads(bytes(p[1 : 1 + int(p[0])].astype(np.uint8)).decode()) for p in self.gather(buf)]

    def sum_extended(self, a: np.ndarray) -> np.ndarray:
        """Σ over ranks of a numpy longdouble array, without losing its extra digits on the way.

        Parameters
        ----------
        a : ndarray of longdouble

        Returns
        -------
        ndarray of longdouble
        """
        head = a.astype(np.float64)  # a float64 head and tail travel, summed in rank order in longdouble
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
        self.check()
        return self._first(bool(flag))

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

    # -- the primitives a process group replaces (one process: each rank's own contribution) ----
    def _reduce(self, a, op: str) -> np.ndarray:
        return np.array(a, dtype=np.float64)

    def _gather(self, a: np.ndarray) -> list[np.ndarray]:
        return [np.array(a)]

    def _first(self, flag: bool) -> bool:
        return flag

    def _broadcast(self, data: bytes | None, src: int) -> bytes:
        return data or b""


SINGLE = Comm()  # the job of one process


class GroupComm(Comm):
    """This rank's view of a torch.distributed job: the collectives of :class:`Comm` across ranks.

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

    def _gather(self, a: np.ndarray) -> list[np.ndarray]:
        import torch
        import torch.distributed as dist

        t = self._tensor(np.asarray(a))
        out = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(out, t)
        return [o.cpu().numpy() for o in out]

    def _first(self, flag: bool) -> bool:
        import torch
        import torch.distributed as dist

        t = torch.tensor([int(bool(flag))], dtype=torch.int64, device=self.device)
        dist.broadcast(t, 0)
        return bool(t.item())


ONE_TERMINAL = "GRADREG_NPROC"  # set for ranks started by launch(): they share the launcher's stderr


def launch(command: Sequence[str], nproc: int, max_restarts: int = 0) -> tuple[int, int, str] | None:
    """Start ``nproc`` ranks of ``python *command`` on this machine through torchrun's launcher
    (elastic, c10d rendezvous on a free port, restarted up to ``max_restarts`` times) and wait.

    Parameters
    ----------
    command : sequence of str
        The arguments after ``python``, e.g. ``["-m", "gradreg", "train", ...]``.
    nproc : int
    max_restarts : int

    Returns
    -------
    tuple of (int, int, str) or None
        None when every rank finished; else the root cause as (rank, exit code, signal name):
        a rank killed by a signal other than the launcher's SIGTERM, else one that exited with
        status 2 (its own input error), else the first to fail.
    """
    import logging
    import sys
    import uuid

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    threads = max(1, (os.cpu_count() or 1) // nproc)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))  # N processes share the cores, as torchrun does
    # A store of its own for every restart: the shared one can hand a restarted rank the address of
    # a rank of the failed round, and the restart then hangs (pytorch/pytorch#135712).
    os.environ.setdefault("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
    os.environ[ONE_TERMINAL] = "1"
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=f"gradreg-{uuid.uuid4().hex[:12]}",
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",  # a free port
        max_restarts=max_restarts,
        monitor_interval=0.1,
        start_method="spawn",
    )
    # The ranks say what failed; the launcher's own log lines would repeat it as noise.
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        elastic_launch(config, sys.executable)(*command)
    except ChildFailedError as e:

        def cause(item):
            r, f = item
            return (not (f.exitcode < 0 and f.signal_name() != "SIGTERM"), f.exitcode != 2, f.timestamp, r)

        rank, failure = min(e.failures.items(), key=cause)
        return rank, failure.exitcode, failure.signal_name() if failure.exitcode < 0 else ""
    return None


def run_rank(
    work: Callable[[], int],
    comm: Comm,
    describe: Callable[[BaseException], tuple[str | None, int | None]],
    verbose: bool = False,
) -> int:
    """Run this rank's ``work`` under the failure protocol: an error becomes one line and an exit
    status, and the other ranks hear of it at their next collective instead of waiting.

    Parameters
    ----------
    work : callable
        Returns the exit status.
    comm : Comm
    describe : callable
        An error to (one-line message, exit status); (None, None) for a bug, which is re-raised
        with its traceback after the other ranks are told.
    verbose : bool
        Every rank prints its error (else the lowest failed rank alone, and rank 0 for another's).

    Returns
    -------
    int
        The exit status.
    """
    import contextlib
    import sys

    try:
        return work()
    except RankFailedError as e:  # another rank failed and said why; rank 0 tells the user
        if (comm.rank == 0 and ONE_TERMINAL not in os.environ) or verbose:  # launched: it said so there
            sys.stderr.write(f"Error: {e}\n")
        return e.exit_code
    except BaseException as e:
        text, code = describe(e)
        if text is None:
            text = f"{type(e).__name__}: {e}"
        lowest = comm.rank
        if not communication_error(e):
            with contextlib.suppress(Exception):  # tell the others, which stop at their next collective
                lowest = comm.fail(text)
        if code is None or isinstance(e, BrokenPipeError):
            raise  # a bug (with its traceback), or `| head` closed the output: the caller handles it
        if lowest == comm.rank or verbose:  # when all ranks fail alike (bad options), one says so
            sys.stderr.write(f"Error: rank {comm.rank}: {text}\n")
        return code


def communication_error(e: BaseException) -> bool:
    """Whether ``e`` is a failed collective: a peer died or the timeout passed (gloo raises plain
    RuntimeErrors).

    Parameters
    ----------
    e : BaseException

    Returns
    -------
    bool
    """
    if not isinstance(e, RuntimeError):
        return False
    import torch.distributed as dist

    if isinstance(e, getattr(dist, "DistError", ())):
        return True
    text = str(e)
    return any(s in text for s in ("gloo", "Gloo", "NCCL", "Connection reset", "Connection closed", "timed out", "Timed out"))


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
