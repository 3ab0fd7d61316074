"""Distributed training: sharding, and 2- and 4-process gloo runs against single-process results.

The process tests start real jobs (torchrun, ``gradreg train --nproc``, or ranks started by hand)
on the CPU with gloo, and compare their model files with the single-process fit of the same data.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from gradreg import distributed
from gradreg.config import TrainConfig
from gradreg.errors import DataError
from gradreg.fitted import FittedModel
from gradreg.io import Stream, StreamingDataset, load
from gradreg.pipeline import train

N_ROWS = 6000
STATS = ("coef", "std_err", "t", "p", "ci_low", "ci_high", "r2", "r2_adj", "f", "llf", "aic", "bic")


def _table(n: int = N_ROWS, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4)) * [1.0, 10.0, 100.0, 0.1] + [5.0, 0.0, -3.0, 1.0]
    beta = np.array([[0.05, 0.02, -0.001, 1.0], [0.03, -0.01, 0.001, 4.0]])  # t statistics of ~5 to ~100
    Y = X @ beta.T + rng.normal(size=(n, 2)) * [1.0, 2.0]
    w = rng.uniform(0.5, 2.0, size=n)
    cols = {f"x{i}": X[:, i] for i in range(4)}
    return pa.table({**cols, "y1": Y[:, 0], "y2": Y[:, 1], "w": w})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dist")
    table = _table()
    pcsv.write_csv(table, folder / "d.csv")
    pq.write_table(table, folder / "d.parquet", row_group_size=500)  # 12 row groups
    return folder


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.pop("WORLD_SIZE", None)
    return env


def _gradreg(*args: str, env=None, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gradreg", *args], capture_output=True, text=True, env=env or _env(), timeout=timeout
    )


def _single(path, **cfg) -> FittedModel:
    """The single-process fit (in this process, through the library)."""
    weight = cfg.pop("weight", None)
    ds = load(str(path), ["y1", "y2"], ["x0", "x1", "x2", "x3"], weight=weight)
    return train(ds, TrainConfig(**cfg))


def _close(a: FittedModel, b: FittedModel, rtol: float) -> None:
    np.testing.assert_allclose(a.coef, b.coef, rtol=rtol)
    np.testing.assert_allclose(a.intercept, b.intercept, rtol=rtol)
    for sa, sb in zip(a.stats.values(), b.stats.values()):
        for k in STATS:
            np.testing.assert_allclose(sa[k], sb[k], rtol=rtol, err_msg=k)
    for split in b.metrics:
        for k in ("mse", "mae", "r2"):
            np.testing.assert_allclose(a.metrics[split][k], b.metrics[split][k], rtol=rtol, err_msg=f"{split} {k}")


# -- sharding ----------------------------------------------------------------------------------


def test_balanced_ranges_assign_every_item_once_in_order():
    rng = np.random.default_rng(1)
    for _ in range(200):
        sizes = rng.integers(0, 100, size=rng.integers(1, 30)).tolist()
        world = int(rng.integers(1, 9))
        ranges = distributed.balanced_ranges(sizes, world)
        assert len(ranges) == world
        assert [i for r in ranges for i in r] == list(range(len(sizes)))
        totals = [sum(sizes[i] for i in r) for r in ranges]
        assert max(totals) - sum(sizes) / world <= max(sizes) + 1e-9


def test_csv_byte_ranges_read_every_line_exactly_once(tmp_path):
    rng = np.random.default_rng(2)
    path = tmp_path / "ragged.csv"
    rows = [(i, "x" * int(rng.integers(0, 40)), float(rng.normal())) for i in range(997)]
    # long and short lines, Windows line ends
    path.write_bytes(("id,pad,v\r\n" + "".join(f"{i},{pad},{v!r}\r\n" for i, pad, v in rows)).encode())
    stream = Stream(str(path), chunk_rows=64)
    for parts in (1, 2, 3, 7, 50, 2000):
        ranges = stream.byte_ranges(0, parts)
        assert len(ranges) == parts
        assert ranges[0][0] == len(b"id,pad,v\r\n") and ranges[-1][1] == path.stat().st_size
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
        ids = []
        for r in ranges:
            for t in stream.tables(["id", "v"], [(0, r)]):
                ids += t.data.column("id").to_pylist()
        assert ids == list(range(997)), parts


def test_csv_byte_range_errors_name_the_line_in_the_whole_file(tmp_path):
    # past the first megabyte, which every rank reads to learn the columns' types
    lines = ["a,b,y"] + [f"{i},{2 * i},{3 * i}" for i in range(120_000)]
    lines[100_001] = "100000,oops,900"  # data row 100000 is line 100002
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + "\n")
    stream = Stream(str(path), chunk_rows=5000)
    units = distributed.shard(stream, 2, 1)
    sds = StreamingDataset(stream, "y", units=units)
    with pytest.raises(DataError, match=r"bad.csv, line 100002, column 'b': expected a number, got 'oops'"):
        list(sds.chunks())
    lines[100_001] = "100000,,900"  # a missing value: found after parsing, by the table's row
    path.write_text("\n".join(lines) + "\n")
    sds = StreamingDataset(Stream(str(path), chunk_rows=5000), "y", units=units)
    with pytest.raises(DataError, match=r"line 100002, column 'b'"):
        list(sds.chunks())


def test_shards_split_row_groups_and_files_without_overlap(tmp_path):
    for k in range(3):
        pq.write_table(_table(700 + 300 * k, seed=k), tmp_path / f"part-{k}.parquet", row_group_size=200)
    stream = Stream(str(tmp_path))
    for world in (1, 2, 3, 5, 16):
        shards = [distributed.shard(stream, world, r) for r in range(world)]
        assert [u for s in shards for u in s] == stream.units()
        rows = [sum(stream.files[f].row_groups[g] for f, g in s) for s in shards]
        assert max(rows) - min(rows) <= 2 * 200 or world > len(stream.units()) / 2


def test_max_restarts_without_nproc_is_refused(capsys):
    from gradreg.cli import main

    assert main(["train", "crops", "--target", "mangoes", "--max-restarts", "2"]) == 2
    assert "--max-restarts goes with --nproc" in capsys.readouterr().err


# -- jobs --------------------------------------------------------------------------------------


def test_exact_two_ranks_csv_via_torchrun_matches_single_process(data, tmp_path):
    out = tmp_path / "m.safetensors"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "gradreg"]
    args = ["train", str(data / "d.csv"), "--target", "y1,y2", "--features", "x0,x1,x2,x3", "--solver", "exact", "-o", str(out)]
    r = subprocess.run(cmd + args, capture_output=True, text=True, env=_env(), timeout=240)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("wrote ") == 1  # rank 0 alone reports
    model = FittedModel.load(str(out))
    assert model.info["world_size"] == 2 and model.info["backend"] == "gloo"
    _close(model, _single(data / "d.csv", solver="exact"), 1e-10)
    assert "2 processes (gloo)" in _gradreg("inspect", str(out)).stdout


@pytest.mark.parametrize("world", [1, 4])
def test_exact_weighted_robust_parquet_matches_single_process(data, tmp_path, world):
    out = tmp_path / "m.safetensors"
    r = _gradreg(
        "train", str(data / "d.parquet"), "--target", "y1,y2", "--features", "x0,x1,x2,x3", "--weight", "w",
        "--solver", "exact", "--cov", "HC3", "--val-fraction", "0.25", "--nproc", str(world), "-q", "-o", str(out),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    model = FittedModel.load(str(out))
    assert model.info.get("world_size", 1) == world
    single = _single(data / "d.parquet", solver="exact", cov_type="HC3", val_fraction=0.25, weight="w")
    assert model.info["n_train"] == single.info["n_train"]
    _close(model, single, 1e-10)


def test_gradient_descent_two_ranks_follows_the_single_process_loss_curve(data, tmp_path):
    common = dict(epochs=4, tol=0, optimizer="momentum", val_fraction=0.2, batch_size=250)
    for dtype, rtol in (("float64", 1e-10), ("float32", 1e-5)):
        out = tmp_path / f"{dtype}.safetensors"
        r = _gradreg(
            "train", str(data / "d.csv"), "--target", "y1,y2", "--features", "x0,x1,x2,x3", "--weight", "w",
            "--epochs", "4", "--tol", "0", "--optimizer", "momentum", "--val-fraction", "0.2", "--batch-size", "250",
            "--dtype", dtype, "--nproc", "2", "-q", "--verbose", "-o", str(out),
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert r.stdout == "" and "rank 1: epoch 4/4" in r.stderr  # rank 0 is quiet (-q), rank 1 speaks (--verbose)
        model = FittedModel.load(str(out))
        single = _single(data / "d.csv", dtype=dtype, weight="w", **common)
        assert len(model.history) == len(single.history) == 4
        for key in ("loss", "val_loss", "lr"):
            np.testing.assert_allclose([h[key] for h in model.history], [h[key] for h in single.history], rtol=rtol)
        np.testing.assert_allclose(model.coef, single.coef, rtol=rtol * 10, atol=rtol * 10 * np.abs(single.coef).max())
        np.testing.assert_allclose(model.x_mean, single.x_mean, rtol=1e-12)  # global standardization
        np.testing.assert_allclose(model.x_scale, single.x_scale, rtol=1e-12)


def test_streamed_shards_exact_matches_and_descent_converges(data, tmp_path):
    out = tmp_path / "exact.safetensors"
    base = ["train", str(data / "d.csv"), "--target", "y1,y2", "--features", "x0,x1,x2,x3", "--stream", "--chunk-rows", "700"]
    r = _gradreg(*base, "--solver", "exact", "--nproc", "2", "-q", "-o", str(out))
    assert r.returncode == 0, r.stderr
    single = _single(data / "d.csv", solver="exact")
    _close(FittedModel.load(str(out)), single, 1e-10)
    # descent over streamed shards shuffles inside each rank's buffer: the same optimum, not the same steps
    out = tmp_path / "gd.safetensors"
    r = _gradreg(*base, "--epochs", "8", "--nproc", "2", "-q", "-o", str(out))
    assert r.returncode == 0, r.stderr
    model = FittedModel.load(str(out))
    assert model.info["streamed"] and model.info["world_size"] == 2
    assert 0 <= model.optimum["gap"] < 1e-3
    np.testing.assert_allclose(model.optimum["coef"], single.coef, rtol=1e-10)


FLOAT32_CHILD = """
import sys
from gradreg.solvers import exact
exact.BLOCK_ROWS, exact.GRAM_ROWS, exact.FLOAT32_AFTER_ROWS = 512, 256, 1024  # this small table: float32 blocks
from gradreg.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("stream", [False, True])
def test_float32_gram_on_two_ranks_refines_to_the_single_process_solution(data, tmp_path, stream):
    """Ranks started by hand with the float32 Gram's thresholds lowered: every rank's float32 blocks,
    merged co-moments and refinement sums give the single process's float64 fit."""
    out = tmp_path / "m.safetensors"
    env = {**_env(), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    args = ["train", str(data / "d.parquet"), "--target", "y1,y2", "--features", "x0,x1,x2,x3", "--weight", "w"]
    args += ["--solver", "exact", *(["--stream"] if stream else []), "-q", "-o", str(out)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", FLOAT32_CHILD, *args],
            stderr=subprocess.PIPE,
            text=True,
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
        )
        for r in range(2)
    ]
    errs = [p.communicate(timeout=240)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    model, single = FittedModel.load(str(out)), _single(data / "d.parquet", solver="exact", weight="w")
    assert model.info["world_size"] == 2
    np.testing.assert_allclose(model.coef, single.coef, rtol=1e-10)
    np.testing.assert_allclose(model.intercept, single.intercept, rtol=1e-10)
    for split in single.metrics:
        for k in ("mse", "mae", "r2"):
            np.testing.assert_allclose(model.metrics[split][k], single.metrics[split][k], rtol=1e-10)
    for sa, sb in zip(model.stats.values(), single.stats.values()):
        for k in STATS:  # the standard errors come from the float32 Gram: 6 digits (GRAM32_COND_LIMIT)
            np.testing.assert_allclose(sa[k], sb[k], rtol=1e-4 if k == "p" else 1e-6, err_msg=k)  # p ~ t² δt in the tail


def test_a_rank_without_rows_takes_part_and_rank_0_alone_draws(tmp_path):
    path = tmp_path / "two.parquet"
    pq.write_table(_table(3000, seed=4), path, row_group_size=1500)  # 2 row groups for 3 ranks
    base = ["train", str(path), "--target", "y1,y2", "--features", "x0,x1,x2,x3", "--nproc", "3", "-q"]
    r = _gradreg(
        *base, "--epochs", "3", "--dtype", "float64", "--plots", str(tmp_path / "plots"), "-o", str(tmp_path / "gd.safetensors")
    )
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(tmp_path / "plots")) == ["loss.png", "predicted_vs_actual.png", "residuals.png"]
    single = _single(path, epochs=3, dtype="float64")
    np.testing.assert_allclose(FittedModel.load(str(tmp_path / "gd.safetensors")).coef, single.coef, rtol=1e-10)
    r = _gradreg(*base, "--stream", "--solver", "exact", "-o", str(tmp_path / "exact.safetensors"))
    assert r.returncode == 0, r.stderr
    _close(FittedModel.load(str(tmp_path / "exact.safetensors")), _single(path, solver="exact"), 1e-10)


def test_bad_data_on_one_rank_stops_every_rank_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.csv"
    pcsv.write_csv(_table(20_000, seed=3), bad)  # 2.3 MB: rank 1's half lies past the first MB every rank reads
    lines = bad.read_text().splitlines()
    fields = lines[15001].split(",")
    fields[2] = "oops"
    lines[15001] = ",".join(fields)
    bad.write_text("\n".join(lines) + "\n")
    out = tmp_path / "m.safetensors"
    t0 = time.monotonic()
    r = _gradreg("train", str(bad), "--target", "y1,y2", "--nproc", "2", "-o", str(out))
    assert r.returncode == 2  # bad input, as in one process
    assert time.monotonic() - t0 < 120
    # one line, from the rank that found it: rank 0 and the launcher print to the same terminal and say no more
    errors = [ln for ln in r.stderr.splitlines() if not ln.startswith("features: ")]  # rank 0 names them first
    assert errors == [f"Error: rank 1: {bad}, line 15002, column 'x2': expected a number, got 'oops'"]
    assert "Traceback" not in r.stderr
    assert sorted(os.listdir(tmp_path)) == ["bad.csv"]  # no model, no temporary file


def _rank_pid(marker: str, rank: int, timeout: float = 60) -> int:
    """The pid of a job's rank, found by its environment (the launcher starts the ranks)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
            except OSError:
                continue
            if f"GRADREG_TEST_JOB={marker}".encode() in env and f"RANK={rank}".encode() in env:
                return int(pid)
        time.sleep(0.05)
    raise AssertionError(f"rank {rank} of job {marker} never started")


def _checkpoint_epoch(folder) -> int:
    import json
    import struct

    try:
        data = (folder / "checkpoint.safetensors").read_bytes()
        (n,) = struct.unpack("<Q", data[:8])
        return json.loads(json.loads(data[8 : 8 + n])["__metadata__"]["gradreg"])["state"]["epoch"]
    except (OSError, ValueError, KeyError, struct.error):
        return 0


LONG_RUN = [
    "--features",
    "x0,x1,x2,x3",
    "--epochs",
    "150",
    "--tol",
    "0",
    "--batch-size",
    "100",
    "--dtype",
    "float64",
    "--optimizer",
    "momentum",
    "--lr-schedule",
    "constant",
]


def _kill_after_checkpoint(proc, marker, ckpt, epoch: int = 2) -> int:
    """SIGKILL rank 1 once a checkpoint of ``epoch`` exists; returns that checkpoint's epoch."""
    pid = _rank_pid(marker, 1)
    deadline = time.monotonic() + 120
    while _checkpoint_epoch(ckpt) < epoch:
        assert proc.poll() is None, "the job ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    return _checkpoint_epoch(ckpt)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    path = tmp_path_factory.mktemp("small") / "s.csv"
    pcsv.write_csv(_table(3000, seed=5), path)
    return path


def test_killed_rank_fails_the_job_then_resume_finishes_it(small, tmp_path):
    ckpt, out = tmp_path / "ckpt", tmp_path / "m.safetensors"
    marker = uuid.uuid4().hex
    args = [sys.executable, "-m", "gradreg", "train", str(small), "--target", "y1,y2", *LONG_RUN]
    args += ["--checkpoint-dir", str(ckpt), "--nproc", "2", "-q", "-o", str(out)]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env={**_env(), "GRADREG_TEST_JOB": marker})
    _kill_after_checkpoint(proc, marker, ckpt)
    t0 = time.monotonic()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and time.monotonic() - t0 < 60
    assert "first exit: rank 1, signal SIGKILL); no model was written" in err
    assert not out.exists() and not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    r = subprocess.run(args + ["--resume"], capture_output=True, text=True, env=_env(), timeout=240)
    assert r.returncode == 0, r.stderr
    model = FittedModel.load(str(out))
    assert model.info["resumed_from_epoch"] >= 2 and len(model.history) == 150
    single = _single(small, epochs=150, tol=0, batch_size=100, dtype="float64", optimizer="momentum", lr_schedule="constant")
    np.testing.assert_allclose([h["loss"] for h in model.history], [h["loss"] for h in single.history], rtol=1e-9)
    np.testing.assert_allclose(model.coef, single.coef, rtol=1e-9)


def test_streamed_shards_resume_bit_for_bit(tmp_path):
    """Each rank's shuffle buffer draws from (seed, rank, epoch): a resumed epoch repeats the first try."""
    path = tmp_path / "s.parquet"
    pq.write_table(_table(3000, seed=5), path, row_group_size=300)
    shorter = [("40" if a == "150" else a) for a in LONG_RUN]  # epochs
    base = [sys.executable, "-m", "gradreg", "train", str(path), "--target", "y1,y2", *shorter]
    base += ["--stream", "--chunk-rows", "200", "--shuffle-buffer", "500", "--nproc", "2", "-q"]
    r = subprocess.run(base + ["-o", str(tmp_path / "ref.safetensors")], capture_output=True, text=True, env=_env(), timeout=240)
    assert r.returncode == 0, r.stderr
    marker = uuid.uuid4().hex
    args = base + ["--checkpoint-dir", str(tmp_path / "ckpt"), "-o", str(tmp_path / "m.safetensors")]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env={**_env(), "GRADREG_TEST_JOB": marker})
    _kill_after_checkpoint(proc, marker, tmp_path / "ckpt")
    proc.communicate(timeout=120)
    assert proc.returncode != 0 and not (tmp_path / "m.safetensors").exists()
    r = subprocess.run(args + ["--resume"], capture_output=True, text=True, env=_env(), timeout=240)
    assert r.returncode == 0, r.stderr
    resumed, whole = FittedModel.load(str(tmp_path / "m.safetensors")), FittedModel.load(str(tmp_path / "ref.safetensors"))
    assert resumed.info["resumed_from_epoch"] >= 2
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in whole.history]
    np.testing.assert_array_equal(resumed.coef, whole.coef)


def test_elastic_restart_resumes_from_the_checkpoint(small, tmp_path):
    ckpt, out = tmp_path / "ckpt", tmp_path / "m.safetensors"
    marker = uuid.uuid4().hex
    args = [sys.executable, "-m", "gradreg", "train", str(small), "--target", "y1,y2", *LONG_RUN]
    args += ["--checkpoint-dir", str(ckpt), "--nproc", "2", "--max-restarts", "1", "-q", "-o", str(out)]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env={**_env(), "GRADREG_TEST_JOB": marker})
    killed_at = _kill_after_checkpoint(proc, marker, ckpt)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    model = FittedModel.load(str(out))
    assert model.info["resumed_from_epoch"] >= killed_at and len(model.history) == 150
    single = _single(small, epochs=150, tol=0, batch_size=100, dtype="float64", optimizer="momentum", lr_schedule="constant")
    np.testing.assert_allclose(model.coef, single.coef, rtol=1e-9)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("fault", ["killed", "hung"])
def test_without_torchrun_a_lost_rank_ends_the_others_within_the_timeout(small, tmp_path, fault):
    """Ranks started by hand (as a scheduler might), so no agent stops the survivors: a killed
    rank's closed sockets, or for a hung one (SIGSTOP) --timeout, must end them."""
    ckpt = tmp_path / "ckpt"
    env = {**_env(), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    args = [sys.executable, "-m", "gradreg", "train", str(small), "--target", "y1,y2", *LONG_RUN]
    args += ["--checkpoint-dir", str(ckpt), "--timeout", "8", "-q", "-o", str(tmp_path / "m.safetensors")]
    procs = [
        subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)})
        for r in range(2)
    ]
    try:
        deadline = time.monotonic() + 120
        while _checkpoint_epoch(ckpt) < 2:
            assert procs[0].poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        procs[1].send_signal(signal.SIGKILL if fault == "killed" else signal.SIGSTOP)
        t0 = time.monotonic()
        _, err = procs[0].communicate(timeout=90)
        assert procs[0].returncode == 1
        assert time.monotonic() - t0 < 8 + 20
        assert "Error: rank 0: lost contact with the other ranks" in err and "Traceback" not in err
        assert not (tmp_path / "m.safetensors").exists()
    finally:
        for p in procs:
            p.kill()
            p.wait()


# -- CUDA (run where a GPU is; skipped elsewhere) -----------------------------------------------

needs_cuda = pytest.mark.skipif(
    not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU (NCCL and CUDA tensors in the collectives)"
)

NCCL_CHILD = """
import json, sys
import numpy as np, torch, torch.distributed as dist
from gradreg.config import TrainConfig
from gradreg.distributed import GroupComm
from gradreg.pipeline import train
from gradreg.io import load
from gradreg.distributed import Comm

dist.init_process_group("nccl", init_method="tcp://127.0.0.1:" + sys.argv[2], rank=0, world_size=1)
torch.cuda.set_device(0)
comm = GroupComm(0, 1, "nccl")
ds = load(sys.argv[1], ["y1", "y2"], ["x0", "x1", "x2", "x3"], weight="w")
out = {}
for name, cfg in {
    "exact": dict(solver="exact", cov_type="HC1", val_fraction=0.2),
    "gd": dict(epochs=3, dtype="float64", optimizer="momentum", val_fraction=0.2),
}.items():
    a = train(ds, TrainConfig(device="cuda", **cfg), comm=comm)
    b = train(ds, TrainConfig(device="cuda", **cfg))
    out[name] = float(np.max(np.abs(a.coef - b.coef) / np.abs(b.coef)))
    out[name + "_loss"] = [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
dist.destroy_process_group()
print(json.dumps(out))
"""


@needs_cuda
def test_nccl_collectives_on_cuda_tensors_agree_with_a_single_process(data):
    """One rank through NCCL: every collective gradreg makes runs on CUDA tensors."""
    import json

    r = subprocess.run(
        [sys.executable, "-c", NCCL_CHILD, str(data / "d.csv"), str(_free_port())],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["exact"] < 1e-10 and out["gd"] < 1e-10 and out["gd_loss"], out


@needs_cuda
def test_two_ranks_on_cuda_with_gloo_agree_with_a_single_process(data, tmp_path):
    out = tmp_path / "m.safetensors"
    r = _gradreg(
        "train", str(data / "d.csv"), "--target", "y1,y2", "--features", "x0,x1,x2,x3", "--epochs", "3",
        "--dtype", "float64", "--device", "cuda", "--backend", "gloo", "--nproc", "2", "-q", "-o", str(out),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    model = FittedModel.load(str(out))
    single = _single(data / "d.csv", epochs=3, dtype="float64", device="cuda")
    np.testing.assert_allclose([h["loss"] for h in model.history], [h["loss"] for h in single.history], rtol=1e-10)
    np.testing.assert_allclose(model.coef, single.coef, rtol=1e-9)
