"""The plain scripts of benchmarks/baselines (what ``make bench`` holds gradreg to) give numpy lstsq's answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

BASELINES = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "baselines")
N, P = 70_000, 5  # more rows than one 65,536-row block


def run(script: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, os.path.join(BASELINES, script), *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Unscaled, offset float32 columns and two targets, with lstsq's float64 solution."""
    rng = np.random.default_rng(1)
    scales = np.logspace(-2, 3, P)
    X = (rng.standard_normal((N, P)) * scales + 3 * scales).astype(np.float32)
    B = rng.choice([-1, 1], size=(P, 2)) * (1 + rng.random((P, 2))) / scales[:, None]  # no coefficient near 0
    Y = (X @ B + 5 + rng.standard_normal((N, 2))).astype(np.float32)
    A = np.hstack([np.ones((N, 1)), X.astype(np.float64)])
    sol = np.linalg.lstsq(A, Y.astype(np.float64), rcond=None)[0]
    mse = ((Y - A @ sol) ** 2).mean(axis=0)
    return {"X": X, "Y": Y, "coef": sol[1:].T, "intercept": sol[0], "mse": mse, "dir": tmp_path_factory.mktemp("baselines")}


def check_fit(out: dict, data: dict) -> None:
    np.testing.assert_allclose(out["coef"], data["coef"], rtol=1e-9)
    np.testing.assert_allclose(out["intercept"], data["intercept"], rtol=1e-9)
    np.testing.assert_allclose(out["mse"], data["mse"], rtol=1e-9)


def test_exact_numpy(data):
    x, y = str(data["dir"] / "X.npy"), str(data["dir"] / "Y.npy")
    np.save(x, data["X"])
    np.save(y, data["Y"])
    check_fit(run("exact_numpy.py", x, y), data)


def test_stream_pyarrow(data):
    path = str(data["dir"] / "s.parquet")
    cols = {f"x{j}": data["X"][:, j] for j in range(P)} | {"y0": data["Y"][:, 0], "y1": data["Y"][:, 1]}
    pq.write_table(pa.table(cols), path, row_group_size=30_000)  # batches of unequal length
    out = run("stream_pyarrow.py", path, "--target", "y0,y1")
    assert out["features"] == [f"x{j}" for j in range(P)] and out["rows"] == N
    check_fit(out, data)
    assert run("stream_pyarrow.py", path, "--target", "y0,y1", "--decode-only")["rows"] == N


def test_predict_csv(data):
    model, csv, preds = (str(data["dir"] / name) for name in ("m.npz", "in.csv", "out.csv"))
    features = [f"x{j}" for j in range(P)]
    np.savez(model, features=features, targets=["a", "b"], coef=data["coef"], intercept=data["intercept"])
    # columns out of order and one that is no feature: the script must take the model's by name
    cols = {"id": np.arange(N)} | {f: data["X"][:, j] for j, f in reversed(list(enumerate(features)))}
    pcsv.write_csv(pa.table(cols), csv)
    out = run("predict_csv.py", model, csv, preds)
    assert out["mb"] == pytest.approx(os.path.getsize(csv) / 1e6)
    got = pcsv.read_csv(preds)
    assert got.column_names == ["a", "b"]
    X = np.column_stack([pcsv.read_csv(csv)[f].to_numpy() for f in features])  # the values as the CSV holds them
    np.testing.assert_allclose(np.column_stack([got["a"], got["b"]]), X @ data["coef"].T + data["intercept"], rtol=1e-12)
