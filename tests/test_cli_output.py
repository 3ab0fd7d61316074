"""Where output goes: a reader that leaves the pipe (`| head`), outputs refused before any work,
Python warnings as one `warning:` line each, and input errors of `--nproc` jobs as one line."""

import json
import os
import signal
import subprocess
import sys
import warnings

import numpy as np
import pytest

from gradreg.fitted import FittedModel

from .conftest import run_subprocess, write

CONSTANT_K = "a,k,y\n1,5,2\n2,5,4\n3,5,7\n4,5,8\n5,5,9\n"
K_WARNING = "constant column(s) 'k': aliased with the intercept; coefficient set to 0, statistics NaN"


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    return env


def _read_one_line_and_leave(*args, timeout: float = 240):
    """Run `gradreg ARGS | head -1`: a 4 KiB pipe (so a run that prints more is sure to write into
    the closed pipe), read one line, close it, wait. Returns (exit status, first line, stderr)."""
    fcntl = pytest.importorskip("fcntl")
    if not hasattr(fcntl, "F_SETPIPE_SZ"):
        pytest.skip("needs Linux's F_SETPIPE_SZ")
    r, w = os.pipe()
    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 4096)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gradreg", *map(str, args)], stdout=w, stderr=subprocess.PIPE, text=True, env=_env()
    )
    os.close(w)
    with os.fdopen(r, "rb") as f:
        first = f.readline().decode()
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, first, err


# -- a closed pipe ------------------------------------------------------------------------------


@pytest.mark.parametrize("extra", [(), ("--json",)])
def test_train_whose_reader_leaves_still_writes_the_model(tmp_path, extra):
    out = tmp_path / "m.safetensors"
    code, first, err = _read_one_line_and_leave(
        "train",
        "crops",
        "--target",
        "mangoes",
        "--epochs",
        "150",
        "--tol",
        "0",
        "--batch-size",
        "15",
        "--plots",
        tmp_path / "p",
        "-o",
        out,
        *extra,
    )
    assert first.startswith("epoch 1/150" if not extra else '{"event": "epoch", "epoch": 1,')
    assert code == 0, err
    assert "Error" not in err and "Broken pipe" not in err and "Exception ignored" not in err
    assert FittedModel.load(str(out)).info["epochs_run"] == 150
    assert sorted(os.listdir(tmp_path / "p")) == ["loss.png", "predicted_vs_actual.png", "residuals.png"]


def test_resumed_train_whose_reader_leaves_still_writes_the_model(tmp_path):
    out, ckpt = tmp_path / "m.safetensors", tmp_path / "ckpt"
    args = [
        sys.executable,
        "-m",
        "gradreg",
        "train",
        "crops",
        "--target",
        "mangoes",
        "--epochs",
        "150",
        "--tol",
        "0",
        "--batch-size",
        "15",
    ]
    args += ["--checkpoint-dir", str(ckpt), "-o", str(out)]
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=_env())
    for line in first.stdout:  # the checkpoint of epoch 4 is saved before epoch 5 is printed
        if line.startswith("epoch 5/"):
            break
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert not out.exists()
    code, line, err = _read_one_line_and_leave(*args[3:], "--resume")
    assert code == 0, err
    assert line.startswith("epoch ") and "Error" not in err and "Exception ignored" not in err
    model = FittedModel.load(str(out))
    assert model.info["epochs_run"] == 150 and model.info["resumed_from_epoch"] >= 4


def test_two_ranks_whose_reader_leaves_still_write_the_model(tmp_path):
    out = tmp_path / "m.safetensors"
    code, first, err = _read_one_line_and_leave(
        "train",
        "crops",
        "--target",
        "mangoes",
        "--epochs",
        "40",
        "--tol",
        "0",
        "--batch-size",
        "15",
        "--json",
        "--nproc",
        "2",
        "-o",
        out,
    )
    assert first.startswith('{"event": "epoch", "epoch": 1,')
    assert code == 0, err
    assert "Error" not in err and "Exception ignored" not in err
    model = FittedModel.load(str(out))
    assert model.info["world_size"] == 2 and model.info["epochs_run"] == 40


def test_predict_and_report_to_a_reader_that_leaves_exit_0_quietly(tmp_path):
    model = tmp_path / "m.safetensors"
    assert run_subprocess("train", "crops", "--target", "mangoes,oranges", "--solver", "exact", "-q", "-o", model).returncode == 0
    rows = "".join(f"{t},{r},{h}\n" for t, r, h in zip(range(3000), range(3000), range(3000)))
    src = write(tmp_path / "big.csv", "temperature,rainfall,humidity\n" + rows)
    assert _read_one_line_and_leave("predict", model, src) == (0, "mangoes,oranges\n", "")
    code, first, err = _read_one_line_and_leave("report", model, "crops", "-o", "-")
    assert (code, err) == (0, "") and first.lower().startswith("<!doctype html>")


# -- outputs refused before any work -------------------------------------------------------------

PREDICT = "expected .csv, .parquet, .pq, .jsonl or .ndjson, or - for stdout"
BAD_OUTPUTS = [
    (["train", "crops", "--target", "mangoes", "-o", "."], "-o .: is a folder; give a file name ending in .safetensors"),
    (
        ["train", "crops", "--target", "mangoes", "-o", "-"],
        "-o -: a model is binary and is not written to stdout; give a file name ending in .safetensors",
    ),
    (["train", "crops", "--target", "mangoes", "-o", "m.pt"], "-o m.pt: unknown suffix '.pt' for a model; expected .safetensors"),
    (["train", "crops", "--target", "mangoes", "-o", "model"], "-o model: no suffix for a model; expected .safetensors"),
    (["predict", "MODEL", "crops", "-o", "out.xlsx"], f"-o out.xlsx: unknown suffix '.xlsx' for predictions; {PREDICT}"),
    (["predict", "MODEL", "crops", "-o", "."], "-o .: is a folder; give a file name ending in .csv, .parquet, .pq"),
    (
        ["predict", "MODEL", "crops", "--json", "-o", "p.csv"],
        "-o p.csv: unknown suffix '.csv' for JSON lines (--json); expected .jsonl or .ndjson, or - for stdout",
    ),
    (
        ["report", "MODEL", "-o", "r.pdf"],
        "-o r.pdf: unknown suffix '.pdf' for an HTML report; expected .html or .htm, or - for stdout",
    ),
    (["report", "MODEL", "-o", "."], "-o .: is a folder; give a file name ending in .html or .htm"),
    (["plot", "MODEL", "-o", "MODEL"], "exists and is not a folder; give a folder for the PNG files"),
    (["plot", "MODEL", "-o", "-"], "-o -: pictures are PNG files written into a folder, not to stdout; give a folder name"),
    (
        ["train", "crops", "--target", "mangoes", "--plots", "MODEL"],
        "exists and is not a folder; give a folder for the PNG files",
    ),
    (["demo", "--out", "MODEL"], "exists and is not a folder; give a folder for the PNG files"),
]


@pytest.fixture
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "m.safetensors"
    from gradreg.cli import main

    assert main(["train", "crops", "--target", "mangoes", "--epochs", "3", "-q", "-o", str(path)]) == 0
    return path


@pytest.mark.parametrize("argv,message", BAD_OUTPUTS)
def test_outputs_that_cannot_be_written_as_asked_are_refused_before_any_work(
    cli, tmp_path, model_file, monkeypatch, argv, message
):
    monkeypatch.chdir(tmp_path)
    argv = [str(model_file) if a == "MODEL" else a for a in argv]
    r = cli(*argv)
    assert r.code == 2 and r.out == ""
    assert r.err.startswith("Error: ") and r.err.count("\n") == 1 and message in r.err, r.err
    assert os.listdir(tmp_path) == []


def test_predict_output_format_follows_the_suffix(cli, model_file, tmp_path):
    jsonl = tmp_path / "p.jsonl"
    assert cli("predict", model_file, "crops", "-o", jsonl).code == 0  # no --json needed for .jsonl
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(rows) == 15 and list(rows[0]) == ["mangoes"]
    upper = tmp_path / "P.CSV"
    assert cli("predict", model_file, "crops", "-o", upper).code == 0
    assert upper.read_text().splitlines()[0] == "mangoes"


# -- warnings ----------------------------------------------------------------------------------


@pytest.mark.parametrize("solver", ["gd", "exact"])
def test_a_warning_is_one_line_on_stderr_in_a_real_process(tmp_path, solver):
    src = write(tmp_path / "k.csv", CONSTANT_K)
    r = run_subprocess("train", src, "--target", "y", "--solver", solver, "-o", tmp_path / "m.safetensors")
    assert r.returncode == 0
    assert r.stderr == f"features: a, k (2) → targets: y\nwarning: {K_WARNING}\n"
    assert K_WARNING not in r.stdout


def test_quiet_prints_no_warning_and_json_puts_it_in_the_summary(cli, tmp_path):
    src = write(tmp_path / "k.csv", CONSTANT_K)
    r = cli("train", src, "--target", "y", "-q", "-o", tmp_path / "m.safetensors")
    assert (r.code, r.out, r.err) == (0, "", "")
    assert FittedModel.load(str(tmp_path / "m.safetensors")).warnings == [K_WARNING]  # kept for inspect
    r = cli("train", src, "--target", "y", "--json", "-o", tmp_path / "m.safetensors")
    assert r.code == 0 and r.err == ""
    lines = [json.loads(line) for line in r.out.splitlines()]  # every stdout line is JSON
    assert lines[-1]["event"] == "summary" and lines[-1]["warnings"] == [K_WARNING]


def test_other_library_warnings_show_once_as_one_line(cli, tmp_path, monkeypatch):
    from gradreg import pipeline

    real = pipeline.train

    def train_that_warns(*args, **kwargs):  # as a gradient-descent fit that ends far from the optimum does
        model = real(*args, **kwargs)
        message = "gradient descent ended 5.00% above the exact optimum's MSE"
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        warnings.warn("a warning the model does not keep", UserWarning, stacklevel=2)
        model.warnings.append(message)
        return model

    monkeypatch.setattr(pipeline, "train", train_that_warns)
    out = tmp_path / "m.safetensors"
    r = cli("train", "crops", "--target", "mangoes", "-o", out)
    assert r.code == 0
    assert r.err.splitlines() == [
        "note: left out column 'region': it holds no numbers (--categorical region one-hot encodes it)",
        "features: temperature, rainfall, humidity, oranges (4) → targets: mangoes",
        "warning: gradient descent ended 5.00% above the exact optimum's MSE",
        "warning: a warning the model does not keep",
    ]
    r = cli("train", "crops", "--target", "mangoes", "--json", "-o", out)
    assert r.err == ""
    summary = json.loads(r.out.splitlines()[-1])
    assert summary["warnings"] == [
        "gradient descent ended 5.00% above the exact optimum's MSE",
        "a warning the model does not keep",
    ]


# -- --nproc: input errors -------------------------------------------------------------------------


def test_nproc_checks_the_columns_before_starting_ranks(cli, tmp_path, monkeypatch):
    from torch.distributed.launcher import api

    def no_launch(*args, **kwargs):
        raise AssertionError("ranks were started for a job whose input is wrong")

    monkeypatch.setattr(api, "elastic_launch", no_launch)
    src = write(tmp_path / "d.csv", "x,y,w\n1,2,1\n2,4,1\n3,7,1\n")
    out = tmp_path / "m.safetensors"
    for extra, message in [
        (["--target", "nope"], f"Error: {src}: no column named 'nope'; columns are x, y, w\n"),
        (["--target", "y", "--features", "x,z"], f"Error: {src}: no column named 'z'; columns are x, y, w\n"),
        (["--target", "y", "--weight", "v"], f"Error: {src}: no column named 'v'; columns are x, y, w\n"),
    ]:
        single = cli("train", src, *extra, "-o", out)
        r = cli("train", src, *extra, "--nproc", "2", "-o", out)
        assert (r.code, r.err) == (2, message) == (single.code, single.err)
    r = cli("train", tmp_path / "missing.csv", "--target", "y", "--nproc", "2", "-o", out)
    assert (r.code, r.err) == (2, f"Error: {tmp_path / 'missing.csv'}: no such file\n")
    assert sorted(os.listdir(tmp_path)) == ["d.csv"]


def test_nproc_input_error_is_one_line_and_status_2_in_a_real_process(tmp_path):
    src = write(tmp_path / "d.csv", "x,y\n1,2\n2,4\n3,7\n")
    r = run_subprocess("train", src, "--target", "nope", "--nproc", "2", "-o", tmp_path / "m.safetensors", env=_env())
    assert (r.returncode, r.stderr) == (2, f"Error: {src}: no column named 'nope'; columns are x, y\n")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="the error is that of a machine without a GPU per rank")
def test_an_error_every_rank_finds_is_one_line_and_status_2(tmp_path):
    out = tmp_path / "m.safetensors"
    r = run_subprocess("train", "crops", "--target", "mangoes", "--backend", "nccl", "--nproc", "2", "-o", out, env=_env())
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("Error: --backend nccl needs a GPU per rank: 2 ranks on this machine, 0 GPU(s)")
    assert not out.exists()


def test_inspect_whose_reader_leaves_exits_zero(tmp_path):
    # rich's console exits 1 on a closed pipe unless told otherwise; inspect prints through it
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 30))
    header = ",".join(f"feature_{j}" for j in range(30)) + ",y\n"
    body = "".join(",".join(f"{v:.6f}" for v in row) + f",{row.sum():.6f}\n" for row in X)
    src = write(tmp_path / "wide.csv", header + body)
    model = tmp_path / "m.safetensors"
    assert (
        subprocess.run(
            [sys.executable, "-m", "gradreg", "train", src, "--target", "y", "--solver", "exact", "-q", "-o", model], env=_env()
        ).returncode
        == 0
    )
    code, first, err = _read_one_line_and_leave("inspect", model)
    assert first.startswith("model: ") and (code, err) == (0, "")
