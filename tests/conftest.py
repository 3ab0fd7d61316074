"""Shared fixtures: a fixed seed for every test, the crops table, and an in-process CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest

CROPS_X = np.array(
    [
        [73, 67, 43],
        [91, 88, 64],
        [87, 134, 58],
        [102, 43, 37],
        [69, 96, 70],
        [74, 66, 43],
        [91, 87, 65],
        [88, 134, 59],
        [101, 44, 37],
        [68, 96, 71],
        [73, 66, 44],
        [92, 87, 64],
        [87, 135, 57],
        [103, 43, 36],
        [68, 97, 70],
    ],
    dtype=np.float64,
)
CROPS_Y = np.array(
    [
        [56, 70],
        [81, 101],
        [119, 133],
        [22, 37],
        [103, 119],
        [57, 69],
        [80, 102],
        [118, 132],
        [21, 38],
        [104, 118],
        [57, 69],
        [82, 100],
        [118, 134],
        [20, 38],
        [102, 120],
    ],
    dtype=np.float64,
)


@pytest.fixture(autouse=True)
def _seed():
    import torch

    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def crops_xy():
    return CROPS_X.copy(), CROPS_Y.copy()


def ols(X, Y, w=None, intercept=True):
    """Reference least squares by float64 numpy lstsq: (coef (q, p), intercept (q,))."""
    A = np.c_[np.ones(len(X)), X] if intercept else X
    sw = np.ones(len(X)) if w is None else np.sqrt(w)
    beta = np.linalg.lstsq(A * sw[:, None], Y.reshape(len(Y), -1) * sw[:, None], rcond=None)[0]
    if intercept:
        return beta[1:].T, beta[0]
    return beta.T, np.zeros(beta.shape[1])


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys):
    """Run `gradreg ARGS` in-process: Result(code, stdout, stderr)."""
    from gradreg.cli import main

    def run(*args: str) -> Result:
        code = main([str(a) for a in args])
        cap = capsys.readouterr()
        return Result(code, cap.out, cap.err)

    return run


def run_subprocess(*args: str, cwd=None, input=None, env=None) -> subprocess.CompletedProcess:
    """The real entry point, for what only a process shows (exit status, no traceback, TTY)."""
    return subprocess.run(
        [sys.executable, "-m", "gradreg", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        input=input,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def write(path, text: str) -> str:
    path.write_text(text)
    return str(path)
