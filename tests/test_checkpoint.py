"""Checkpoint and resume: a run killed with SIGKILL mid-epoch and resumed ends bit-identical to an
uninterrupted one; checkpoints are safe files that refuse another run's resume."""

import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from safetensors.numpy import load_file

from gradreg import persist
from gradreg.checkpoint import FILE, FORMAT

from .conftest import run_subprocess


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20_000, 8)) * np.arange(1, 9)
    y = X @ rng.normal(size=8) + rng.normal(size=20_000)
    path = tmp_path_factory.mktemp("ckpt") / "d.csv"
    path.write_text(
        ",".join(f"x{j}" for j in range(8)) + ",y\n" + "".join(",".join(map(str, r)) + f",{t}\n" for r, t in zip(X, y))
    )
    return path


def _train(data, out, *extra):
    base = [
        "train",
        data,
        "--target",
        "y",
        "--batch-size",
        "16",
        "--epochs",
        "12",
        "--tol",
        "0",
        "--val-fraction",
        "0.1",
        "--seed",
        "3",
    ]
    return [sys.executable, "-m", "gradreg", *map(str, base), "-q", "-o", str(out), *map(str, extra)]


def _epoch_saved(path) -> int:
    try:
        _, meta = persist.load(str(path), fmt=FORMAT)
    except Exception:
        return 0
    return meta["state"]["epoch"]


@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_sigkill_then_resume_is_bit_identical(data, tmp_path, optimizer):
    ref = tmp_path / "ref.safetensors"
    assert subprocess.run(_train(data, ref, "--optimizer", optimizer), timeout=300).returncode == 0
    ckdir = tmp_path / "ck"
    out = tmp_path / "resumed.safetensors"
    proc = subprocess.Popen(_train(data, out, "--optimizer", optimizer, "--checkpoint-dir", ckdir))
    deadline = time.time() + 240
    while time.time() < deadline and _epoch_saved(ckdir / FILE) < 3:
        time.sleep(0.01)
    time.sleep(0.05)  # into the next epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = _epoch_saved(ckdir / FILE)
    assert proc.returncode == -signal.SIGKILL and 3 <= saved < 12 and not out.exists()
    r = subprocess.run(_train(data, out, "--optimizer", optimizer, "--checkpoint-dir", ckdir, "--resume"), timeout=300)
    assert r.returncode == 0
    a, b = load_file(str(ref)), load_file(str(out))
    for key in ("coef", "intercept"):
        assert a[key].tobytes() == b[key].tobytes(), key
    assert _epoch_saved(ckdir / FILE) == 12


def test_resume_refuses_another_run_and_a_missing_checkpoint(data, tmp_path):
    ckdir = tmp_path / "ck"
    out = tmp_path / "m.safetensors"
    assert subprocess.run(_train(data, out, "--epochs", "2", "--checkpoint-dir", ckdir), timeout=300).returncode == 0
    tensors = load_file(str(ckdir / FILE))
    assert {"model.weight", "model.bias", "generator"} <= set(tensors)  # plain safetensors, no pickle
    r = run_subprocess(*_train(data, out, "--epochs", "3", "--checkpoint-dir", ckdir, "--resume")[3:])
    assert r.returncode == 2 and "is from another run (differs in --epochs 2 → 3)" in r.stderr
    r = run_subprocess(*_train(data, out, "--checkpoint-dir", tmp_path / "none", "--resume")[3:])
    assert r.returncode == 2 and "--resume: no checkpoint in" in r.stderr
    r = run_subprocess(*_train(data, out, "--resume")[3:])
    assert r.returncode == 2 and "--resume needs --checkpoint-dir" in r.stderr
    (ckdir / FILE).write_bytes(b"\x80\x04\x95junk")  # a pickle-like blob is refused, never executed
    r = run_subprocess(*_train(data, out, "--epochs", "2", "--checkpoint-dir", ckdir, "--resume")[3:])
    assert r.returncode == 2 and "Error:" in r.stderr and "Traceback" not in r.stderr


def test_streamed_sigkill_then_resume_is_bit_identical(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(1)
    X = rng.normal(size=(30_000, 4))
    cols = {f"x{j}": X[:, j] for j in range(4)} | {"y": X @ [1.0, -2.0, 0.5, 3.0] + rng.normal(size=30_000)}
    src = tmp_path / "d.parquet"
    pq.write_table(pa.table(cols), src, row_group_size=4_000)
    base = [
        "train",
        str(src),
        "--target",
        "y",
        "--stream",
        "--epochs",
        "10",
        "--tol",
        "0",
        "--batch-size",
        "16",
        "--shuffle-buffer",
        "10000",
    ]
    base += ["--val-fraction", "0.1", "--seed", "5", "-q"]

    def cmd(out, *extra):
        return [sys.executable, "-m", "gradreg", *base, "-o", str(out), *map(str, extra)]

    ref = tmp_path / "ref.safetensors"
    assert subprocess.run(cmd(ref), timeout=300).returncode == 0
    ckdir = tmp_path / "ck"
    out = tmp_path / "resumed.safetensors"
    proc = subprocess.Popen(cmd(out, "--checkpoint-dir", ckdir))
    deadline = time.time() + 240
    while time.time() < deadline and _epoch_saved(ckdir / FILE) < 2:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 2 <= _epoch_saved(ckdir / FILE) < 10 and not out.exists()
    assert subprocess.run(cmd(out, "--checkpoint-dir", ckdir, "--resume"), timeout=300).returncode == 0
    a, b = load_file(str(ref)), load_file(str(out))
    assert a["coef"].tobytes() == b["coef"].tobytes() and a["intercept"].tobytes() == b["intercept"].tobytes()
