"""End to end through the CLI: round trip, JSON, help, and one-line errors with nothing written."""

import json
import os
import re

import numpy as np
import pytest

from gradreg.cli import EXAMPLES, build_parser

from .conftest import CROPS_X, CROPS_Y, ols, run_subprocess, write

MANGOES = ("crops", "--target", "mangoes", "--features", "temperature,rainfall,humidity")


@pytest.fixture
def trained(cli, tmp_path):
    path = tmp_path / "crops.safetensors"
    r = cli("train", "crops", "--target", "mangoes", "--target", "oranges", "--batch-size", "3", "-o", path)
    assert r.code == 0, r.err
    return path


def test_train_prints_gap_tables_and_writes(cli, tmp_path):
    path = tmp_path / "m.safetensors"
    r = cli("train", "crops", "--target", "mangoes,oranges", "--batch-size", "3", "--tol", "0", "-o", path)
    assert r.code == 0
    assert "epoch 50/50  loss " in r.out
    line = next(ln for ln in r.out.splitlines() if ln.startswith("train MSE"))
    assert line.startswith("train MSE 0.909") and "(optimum 0.9094, +0.0" in line
    assert "note: left out column 'region': it holds no numbers (--categorical region one-hot encodes it)" in r.err
    assert f"wrote {path}" in r.out and path.exists()


def test_round_trip_train_predict_evaluate_inspect(cli, trained, tmp_path):
    r = cli("predict", trained, "crops")
    assert r.code == 0
    lines = r.out.strip().splitlines()
    assert lines[0] == "mangoes,oranges" and len(lines) == 16
    pred = np.array([[float(v) for v in ln.split(",")] for ln in lines[1:]])
    model = json.loads(cli("inspect", trained, "--json").out)
    coef, icpt = np.array(model["coef"]), np.array(model["intercept"])
    np.testing.assert_allclose(pred, CROPS_X @ coef.T + icpt, rtol=1e-15)
    # The fit is within a whisker of least squares.
    ls_coef, ls_icpt = ols(CROPS_X, CROPS_Y)
    np.testing.assert_allclose(pred, CROPS_X @ ls_coef.T + ls_icpt, atol=0.5)

    ev = json.loads(cli("evaluate", trained, "crops", "--json").out)
    mse = ((CROPS_Y - pred) ** 2).mean(axis=0)
    np.testing.assert_allclose(ev["metrics"]["mse"], mse, rtol=1e-9)
    np.testing.assert_allclose(ev["metrics"]["mae"], np.abs(CROPS_Y - pred).mean(axis=0), rtol=1e-9)
    r2 = 1 - ((CROPS_Y - pred) ** 2).sum(0) / ((CROPS_Y - CROPS_Y.mean(0)) ** 2).sum(0)
    np.testing.assert_allclose(ev["metrics"]["r2"], r2, rtol=1e-9)
    assert ev["n_rows"] == 15 and ev["targets"] == ["mangoes", "oranges"]

    assert model["features"] == ["temperature", "rainfall", "humidity"]
    assert model["targets"] == ["mangoes", "oranges"]
    assert set(model["metrics"]["train"]) == {"mse", "rmse", "mae", "r2"}
    table = cli("evaluate", trained, "crops").out
    assert "mangoes" in table and "R²" in table


def test_predict_matches_columns_by_name_in_any_order(cli, trained, tmp_path):
    src = write(tmp_path / "shuffled.csv", "humidity,extra,rainfall,temperature\n43,x,67,73\n64,y,88,91\n")
    out = tmp_path / "p.parquet"
    assert cli("predict", trained, src, "-o", out).code == 0
    import pyarrow.parquet as pq

    got = pq.read_table(out).to_pydict()
    model = json.loads(cli("inspect", trained, "--json").out)
    expect = CROPS_X[:2] @ np.array(model["coef"]).T + np.array(model["intercept"])
    np.testing.assert_allclose(np.c_[got["mangoes"], got["oranges"]], expect, rtol=1e-15)


def test_predict_to_csv_file(cli, trained, tmp_path):
    out = tmp_path / "p.csv"
    assert cli("predict", trained, "crops", "-o", out).code == 0
    assert out.read_text().splitlines()[0] == "mangoes,oranges"


def test_inspect_table(cli, trained):
    r = cli("inspect", trained)
    assert r.code == 0
    for s in ("coefficients (original units)", "temperature", "train MSE", "seed 0", "sha256", "Dep. variable:"):
        assert s in r.out


def test_json_training_stream(cli, tmp_path):
    r = cli("train", *MANGOES, "--epochs", "4", "--json", "-o", tmp_path / "m.safetensors")
    events = [json.loads(ln) for ln in r.out.strip().splitlines()]
    assert [e["event"] for e in events] == ["epoch"] * 4 + ["summary"]
    assert events[-1]["targets"] == ["mangoes"] and len(events[-1]["coef"][0]) == 3
    assert r.err == ""


def test_quiet(cli, tmp_path):
    r = cli("train", "crops", "--target", "mangoes", "--quiet", "-o", tmp_path / "m.safetensors")
    assert r.code == 0 and r.out == "" and r.err == ""


def test_exact_solver_via_cli(cli, tmp_path):
    path = tmp_path / "e.safetensors"
    assert cli("train", *MANGOES, "--solver", "exact", "-o", path, "-q").code == 0
    model = json.loads(cli("inspect", path, "--json").out)
    coef, icpt = ols(CROPS_X, CROPS_Y[:, :1])
    np.testing.assert_allclose(model["coef"], coef, rtol=1e-10)
    np.testing.assert_allclose(model["intercept"], icpt, rtol=1e-10)


def test_datasets_and_version(cli):
    r = cli("datasets")
    assert r.out.startswith("crops\t")
    r = cli("--version")
    assert r.code == 0 and r.out.startswith("gradreg 0.")


def _commands():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return parser, sub.choices


def test_every_command_help_has_an_example(capsys):
    parser, commands = _commands()
    assert set(commands) == set(EXAMPLES)
    for name in commands:
        with pytest.raises(SystemExit):
            parser.parse_args([name, "--help"])
        out = capsys.readouterr().out
        assert "examples:\n  gradreg " + name in out, name
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    assert "exit status: 0 success, 1 failure at run time, 2 usage or input error" in capsys.readouterr().out


def test_every_command_that_prints_results_has_json():
    _, commands = _commands()
    for name, sub in commands.items():
        if name == "completion":  # prints a shell script, not results
            continue
        assert any("--json" in a.option_strings for a in sub._actions), name


def test_json_from_predict_datasets_and_demo(cli, trained, tmp_path):
    r = cli("predict", trained, "crops", "--json")
    rows = [json.loads(line) for line in r.out.splitlines()]
    assert len(rows) == 15 and set(rows[0]) == {"mangoes", "oranges"}
    csv = cli("predict", trained, "crops").out.splitlines()[1].split(",")
    assert [rows[0]["mangoes"], rows[0]["oranges"]] == [float(v) for v in csv]
    r = cli("predict", trained, "crops", "--json", "-o", tmp_path / "p.jsonl")
    assert r.out == "" and (tmp_path / "p.jsonl").read_text().splitlines()[0] == json.dumps(rows[0])
    assert json.loads(cli("datasets", "--json").out)[0]["name"] == "crops"
    r = cli("demo", "--out", tmp_path / "demo", "--json")
    lines = [json.loads(line) for line in r.out.splitlines()]
    assert [x["event"] for x in lines] == ["epoch"] * 50 + ["summary"]
    assert lines[-1]["model"] == str(tmp_path / "demo" / "crops.safetensors") and len(lines[-1]["plots"]) == 3


def test_shell_completion(tmp_path):
    script = run_subprocess("completion", "bash").stdout
    path = tmp_path / "gradreg.bash"
    path.write_text(script)
    probe = (
        f"source {path}; "
        'COMP_WORDS=(gradreg tr); COMP_CWORD=1; _shtab_gradreg; echo "${COMPREPLY[@]}"; '
        'COMP_WORDS=(gradreg train crops --solver ""); COMP_CWORD=4; _shtab_gradreg; echo "${COMPREPLY[@]}"'
    )
    import subprocess

    r = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["train", "gd exact"]
    for shell in ("zsh", "tcsh", "fish"):
        r = run_subprocess("completion", shell)
        assert r.returncode == 0 and "train" in r.stdout and "--solver" in r.stdout, shell
    r = run_subprocess("completion", "cmd")
    assert r.returncode == 2 and "invalid choice: 'cmd'" in r.stderr


def test_demo(cli, tmp_path):
    r = cli("demo", "--out", tmp_path / "demo")
    assert r.code == 0, r.err
    line = next(ln for ln in r.out.splitlines() if ln.startswith("train MSE"))
    gap = float(line.split("(optimum 0.9094, ")[1].rstrip("%)"))
    assert 0 <= gap <= 1.0
    assert "predictions vs actual" in r.out and "exact optimum (least squares): MSE 0.9094" in r.out
    png = tmp_path / "demo" / "loss.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert (tmp_path / "demo" / "crops.safetensors").exists()


# -- errors: one line, exit 2, no traceback, nothing written -------------------------------------

BAD_TRAIN = [
    # ranges are TrainConfig's to check, once for Python and the CLI; the CLI names the flags
    (["--epochs", "-1"], "Error: --epochs must be a positive integer; got --epochs -1"),
    (["--epochs", "two"], "argument --epochs: expected an integer; got 'two'"),
    (["--lr", "0"], "Error: --lr must be a positive number; got --lr 0"),
    (["--lr", "-0.1"], "Error: --lr must be a positive number; got --lr -0.1"),
    (["--lr", "fast"], "argument --lr: expected a number; got 'fast'"),
    (["--batch-size", "0"], "Error: --batch-size must be a positive integer; got --batch-size 0"),
    (["--val-fraction", "1.5"], "Error: --val-fraction must be in [0, 1); got --val-fraction 1.5"),
    (["--seed", "-3"], "Error: --seed must be an integer >= 0; got --seed -3"),
    (["--early-stopping", "0"], "Error: --early-stopping must be a positive integer; got --early-stopping 0"),
    (["--l2", "-1"], "Error: --l2 must be a number >= 0; got --l2 -1"),
    (["--optimizer", "lbfgs"], "argument --optimizer: invalid choice: 'lbfgs'"),
    (["--features", "temperature,mangoes"], "column 'mangoes' is given both as a target and as a feature"),
    (["--features", "wind"], "crops: no column named 'wind'"),
]


@pytest.mark.parametrize("extra,message", BAD_TRAIN)
def test_bad_train_options(cli, tmp_path, extra, message):
    out = tmp_path / "m.safetensors"
    r = cli("train", "crops", "--target", "mangoes", "-o", out, *extra)
    assert r.code == 2
    assert r.err.startswith("Error: ") and message in r.err and r.err.count("\n") == 1
    assert not out.exists() and os.listdir(tmp_path) == []


def test_bad_data_via_cli(cli, tmp_path):
    src = write(tmp_path / "d.csv", "x,y\n1,2\n2,oops\n3,4\n")
    r = cli("train", src, "--target", "y", "-o", tmp_path / "m.safetensors")
    assert r.code == 2 and r.err == f"Error: {src}, line 3, column 'y': expected a number, got 'oops'\n"
    assert sorted(os.listdir(tmp_path)) == ["d.csv"]


def test_divergence_exits_1_and_writes_nothing(cli, tmp_path):
    out = tmp_path / "m.safetensors"
    r = cli("train", "crops", "--target", "mangoes", "--lr", "50", "--lr-schedule", "constant", "-o", out)
    assert r.code == 1 and "training diverged at epoch" in r.err and not out.exists()


def test_predict_missing_feature(cli, trained, tmp_path):
    src = write(tmp_path / "p.csv", "temperature,rainfall\n1,2\n")
    r = cli("predict", trained, src)
    assert r.code == 2 and "lacks model feature column(s) 'humidity'" in r.err and r.out == ""


def test_corrupted_model_via_cli(cli, trained, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(trained.read_bytes()[:200])
    for cmd in (["inspect", bad], ["predict", bad, "crops"], ["evaluate", bad, "crops"]):
        r = cli(*cmd)
        assert r.code == 2 and r.err.startswith(f"Error: {bad}: ") and r.err.count("\n") == 1


def test_output_folder_missing(cli, tmp_path):
    r = cli("train", "crops", "--target", "mangoes", "-o", tmp_path / "no" / "m.safetensors")
    assert r.code == 2 and "does not exist" in r.err


def test_real_process_shows_no_traceback(tmp_path):
    r = run_subprocess("train", str(tmp_path / "missing.csv"), "--target", "y", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr == f"Error: {tmp_path / 'missing.csv'}: no such file\n"
    assert "Traceback" not in r.stderr and os.listdir(tmp_path) == []
    r = run_subprocess("train", "crops", "--target", "mangoes", "--epochs", "0", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_debug_shows_traceback(tmp_path):
    r = run_subprocess("--debug", "train", str(tmp_path / "missing.csv"), "--target", "y")
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_help_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys; from gradreg.cli import main; main(['--help']); print('torch' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert out.strip().splitlines()[-1] == "False False"
    assert "examples:" in out


def test_inspect_json_statistics_per_target(cli, tmp_path):
    path = tmp_path / "e.safetensors"
    assert cli("train", "crops", "--target", "mangoes,oranges", "--solver", "exact", "--cov", "HC3", "-o", path, "-q").code == 0
    model = json.loads(cli("inspect", path, "--json").out)
    assert set(model["stats"]) == {"mangoes", "oranges"}
    for s in model["stats"].values():
        for key in ("std_err", "t", "p", "ci_low", "ci_high"):
            assert len(s[key]) == 4  # intercept first, then the three features
        for key in ("r2", "r2_adj", "f", "f_p", "df_resid", "aic", "bic"):
            assert isinstance(s[key], float)
        assert s["cov_type"] == "HC3"
    assert model["info"]["condition_number"] > 1


def _run_in_pty(args, env=None):
    """Run gradreg with stdout/stderr on a pseudo-terminal; return (status, what the terminal got)."""
    import pty
    import subprocess
    import sys
    import threading

    master, slave = pty.openpty()
    chunks: list[bytes] = []

    def drain():
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    full_env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    full_env.update({"COLUMNS": "120", **(env or {})})
    proc = subprocess.run(
        [sys.executable, "-m", "gradreg", *map(str, args)], stdin=slave, stdout=slave, stderr=slave, timeout=120, env=full_env
    )
    os.close(slave)
    reader.join(timeout=10)
    os.close(master)
    return proc.returncode, b"".join(chunks).decode("utf-8", "replace")


COLOR = re.compile(r"\x1b\[[0-9;]*(?:3[0-9]|9[0-7]|38;[25];[0-9;]+)m")  # an SGR sequence that sets a foreground colour


def test_progress_bar_on_a_terminal(tmp_path):
    """On a TTY training shows a live bar: epoch, loss, validation loss, rows/s and the ETA."""
    args = ["train", *MANGOES, "--epochs", "3", "--tol", "0", "--val-fraction", "0.2", "-o", tmp_path / "m.safetensors"]
    code, screen = _run_in_pty(args)
    assert code == 0
    assert "epoch 3/3" in screen and "loss " in screen and "val " in screen and "rows/s" in screen
    assert re.search(r"\d:\d\d:\d\d", screen)  # time remaining
    assert COLOR.search(screen)  # a terminal gets colour...
    code, screen = _run_in_pty(args, env={"NO_COLOR": "1"})
    assert code == 0 and "epoch 3/3" in screen
    assert not COLOR.search(screen)  # ...unless NO_COLOR is set (https://no-color.org)
    piped = run_subprocess(*args)
    assert piped.returncode == 0 and "\x1b" not in piped.stdout + piped.stderr  # no control codes in pipes
    assert "epoch 3/3  loss " in piped.stdout


def test_dash_reads_data_from_stdin(tmp_path):
    model = tmp_path / "m.safetensors"
    csv_text = "x,y\n1,2.1\n2,3.9\n3,6.2\n4,7.8\n"
    r = run_subprocess("train", "-", "--target", "y", "--solver", "exact", "-q", "-o", model, input=csv_text)
    assert r.returncode == 0, r.stderr
    r = run_subprocess("predict", model, "-", input="x\n5\n")
    lines = r.stdout.splitlines()
    assert lines[0] == "y" and float(lines[1]) == pytest.approx(5 * 1.94 + 0.15, rel=1e-14)  # slope 1.94, intercept 0.15
    r = run_subprocess("evaluate", model, "-", "--json", input="x,y\n\n5,oops\n6,7\n")
    assert r.returncode == 2 and r.stderr == "Error: <stdin>, line 3, column 'y': expected a number, got 'oops'\n"


def test_leading_blank_lines_are_not_an_empty_file(cli, tmp_path):
    src = write(tmp_path / "b.csv", "\n\n\n\n\nx,y\n1,2\n2,3\n3,5\n")
    assert cli("train", src, "--target", "y", "--solver", "exact", "-q", "-o", tmp_path / "m.safetensors").code == 0
