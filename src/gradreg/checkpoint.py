"""Training checkpoints: everything gradient descent needs to go on exactly where it stopped.

A checkpoint is one safetensors file (never pickle) written atomically every ``--checkpoint-every``
epochs: the model's parameters, the optimizer's state (momentum buffers or Adam's moments), the
random generator's state (which fixes every later batch order), the best weights for early
stopping, and as JSON the epoch, the history and the counters. It also records what it belongs
to (the settings and the data's fingerprint): ``--resume`` refuses a checkpoint of another run.
On the CPU a resumed run is bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from . import persist
from .distributed import SINGLE, Comm
from .errors import ConfigError

__all__ = ["Checkpoint"]

FORMAT = "gradreg-checkpoint"
FILE = "checkpoint.safetensors"


class Checkpoint:
    """Where and how often to save, and whether to resume.

    Parameters
    ----------
    folder : str
        Created if missing; holds ``checkpoint.safetensors``.
    every : int
        Save after every ``every`` epochs (and after the last).
    resume : bool or "auto"
        Start from the saved state; an error when there is none or it belongs to another run.
        "auto" (a job torchrun restarted) resumes when there is a checkpoint, else starts afresh.
    identity : dict
        What the state belongs to (settings, data fingerprint); compared on resume.
    """

    def __init__(
        self, folder: str, *, every: int = 1, resume: bool | str = False, identity: dict[str, Any] | None = None
    ) -> None:
        if every < 1:
            raise ConfigError("{checkpoint_every} must be a positive integer; got {checkpoint_every=}", checkpoint_every=every)
        self.folder, self.every, self.resume = folder, every, resume
        self.identity = persist.jsonable(identity or {})
        self.path = os.path.join(folder, FILE)

    def restore(self, comm: Comm = SINGLE) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The saved (tensors, state), or None when not resuming.

        Parameters
        ----------
        comm : gradreg.distributed.Comm
            Rank 0 reads the file and sends it to the others (no shared file system needed).

        Returns
        -------
        tuple of (dict of str to ndarray, dict) or None
            Tensors in their original dtypes, and the JSON state.
        """
        if not self.resume:
            return None
        data = None
        if comm.lead:
            if os.path.exists(self.path):
                with open(self.path, "rb") as f:
                    data = f.read()
            elif self.resume != "auto":
                raise ConfigError(f"{{resume}}: no checkpoint in {self.folder} (expected {FILE})", resume=True)
        data = comm.broadcast_bytes(data) or None
        if data is None:  # "auto" (a restarted distributed job) and no checkpoint yet: start afresh
            return None
        tensors, meta = persist.loads(data, self.path, fmt=FORMAT)
        saved = meta.get("identity", {})
        if saved != self.identity:
            keys = sorted(k for k in set(saved) | set(self.identity) if saved.get(k) != self.identity.get(k))
            detail, named = ", ".join(keys), {}
            if "config" in keys:
                a, b = saved.get("config") or {}, self.identity.get("config") or {}
                named = {k: b.get(k) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}
                detail = ", ".join(f"{{{k}}} {a.get(k)!r} → {b.get(k)!r}" for k in named)  # each option as its flag in the CLI
            raise ConfigError(
                f"{{resume}}: the checkpoint in {self.folder} is from another run (differs in {detail})", resume=True, **named
            )
        dtypes = meta.get("dtypes", {})
        return {k: v.astype(dtypes.get(k, "float64")) for k, v in tensors.items()}, meta.get("state", {})

    def due(self, epoch: int, last: bool) -> bool:
        """Whether to save after ``epoch``.

        Parameters
        ----------
        epoch : int
        last : bool
            The final epoch (always saved).

        Returns
        -------
        bool
        """
        return last or epoch % self.every == 0

    def save(self, tensors: dict[str, Any], state: dict[str, Any]) -> None:
        """Write the state atomically (the previous checkpoint stays until the new one is whole).

        Parameters
        ----------
        tensors : dict of str to torch.Tensor or ndarray
            Stored exactly: float32 and uint8 values survive the float64 file format unchanged.
        state : dict
            JSON-able.
        """
        os.makedirs(self.folder, exist_ok=True)
        arrays = {k: (t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)) for k, t in tensors.items()}
        dtypes = {k: str(a.dtype) for k, a in arrays.items()}
        persist.save(self.path, arrays, {"identity": self.identity, "dtypes": dtypes, "state": state}, fmt=FORMAT)
