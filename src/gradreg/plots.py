"""Pictures: the loss curve (more in later work). matplotlib is optional and imported lazily."""

from __future__ import annotations

from typing import Any

from .errors import GradregError
from .persist import atomic_path


def _figure(**kw: Any):
    try:
        from matplotlib.figure import Figure  # no pyplot: no GUI backend, faster import
    except ImportError:
        raise GradregError("plots need matplotlib: pip install 'gradreg[plots]' (or pip install matplotlib)") from None
    return Figure(**kw)


def loss_curve(history: list[dict], optimum: float | None, path: str, *, title: str = "training loss") -> str:
    """Write a PNG of train (and validation) loss per epoch, with the exact optimum as a line."""
    fig = _figure(figsize=(6.4, 4.0), dpi=100)
    ax = fig.subplots()
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h["loss"] for h in history], marker="o", ms=3, label="train")
    if any("val_loss" in h for h in history):
        ax.plot(epochs, [h.get("val_loss", float("nan")) for h in history], marker="s", ms=3, label="validation")
    if optimum is not None:
        ax.axhline(optimum, color="k", ls="--", lw=1, label=f"exact optimum {optimum:.4g}")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE (original units)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


PLOTTERS = {"loss_curve": loss_curve}


class BackgroundPlotter:
    """A child process that imports matplotlib while this one imports torch and trains.

    matplotlib's import (~0.7 s here) then costs no wall time: the machine has a second core.
    ``draw(name, **kwargs)`` sends one request and waits for the PNG; errors come back as
    GradregError with the child's one-line message.
    """

    def __init__(self) -> None:
        import subprocess
        import sys

        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from gradreg.plots import _serve; _serve()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def draw(self, name: str, **kwargs: Any) -> str:
        import json

        from .persist import jsonable

        out, err = self.proc.communicate(json.dumps({"plot": name, "kwargs": jsonable(kwargs)}), timeout=120)
        if self.proc.returncode != 0:
            lines = [ln for ln in err.strip().splitlines() if ln.strip()]
            raise GradregError(lines[-1] if lines else f"plotting process failed with status {self.proc.returncode}")
        return out.strip()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _serve() -> None:
    """The child side of BackgroundPlotter: one JSON request on stdin, the written path on stdout."""
    import json
    import sys

    try:
        _figure()  # import matplotlib now, while the parent is busy
        request = json.loads(sys.stdin.read())
        path = PLOTTERS[request["plot"]](**request["kwargs"])
    except GradregError as e:
        sys.stderr.write(f"{e}\n")
        raise SystemExit(2) from None
    sys.stdout.write(f"{path}\n")
