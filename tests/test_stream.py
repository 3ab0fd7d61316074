"""Streaming: files, folders and globs read in chunks give the in-memory answers, name bad cells by
file and line, and keep memory bounded on data larger than the limit the test sets."""

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from gradreg.config import TrainConfig
from gradreg.errors import DataError
from gradreg.io import ReadOptions, Stream, StreamingDataset, expand
from gradreg.pipeline import train

from .conftest import run_subprocess


def _table(n, seed=0, weights=False):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4)) * [1, 10, 100, 0.1] + [5, -3, 1000, 0]
    Y = X @ np.array([[1, 0.1, 0.01, 10], [-2, 0.3, 0.0, 1]]).T + rng.normal(size=(n, 2))
    cols = {"a": X[:, 0], "b": X[:, 1], "c": X[:, 2], "d": X[:, 3], "y1": Y[:, 0], "y2": Y[:, 1]}
    if weights:
        cols["w"] = rng.uniform(0.5, 2, size=n)
    return pa.table(cols)


@pytest.fixture
def parts(tmp_path):
    """One table split over a folder: two Parquet files (several row groups) and a CSV file."""
    table = _table(30_000, weights=True)
    folder = tmp_path / "parts"
    folder.mkdir()
    pq.write_table(table.slice(0, 12_000), folder / "p1.parquet", row_group_size=5_000)
    pq.write_table(table.slice(12_000, 10_000), folder / "p2.parquet", row_group_size=3_000)
    pcsv.write_csv(table.slice(22_000), folder / "p3.csv")
    return folder, table


def test_expand_files_folders_and_globs(parts, tmp_path):
    folder, _ = parts
    assert [os.path.basename(f) for f in expand(str(folder))] == ["p1.parquet", "p2.parquet", "p3.csv"]
    assert [os.path.basename(f) for f in expand(str(folder / "*.parquet"))] == ["p1.parquet", "p2.parquet"]
    with pytest.raises(DataError, match=r"\*\.tsv: the pattern matches no CSV or Parquet file"):
        expand(str(folder / "*.tsv"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="the folder holds no CSV or Parquet file"):
        expand(str(tmp_path / "empty"))
    pcsv.write_csv(pa.table({"a": [1.0], "zz": [2.0]}), folder / "p4.csv")
    with pytest.raises(DataError, match=r"p4\.csv: columns differ from .*p1\.parquet: it lacks 'b', 'c', 'd', 'w', 'y1', 'y2'"):
        Stream(str(folder))


def test_chunks_cover_every_row_once_in_order(parts):
    folder, table = parts
    stream = Stream(str(folder), chunk_rows=4_096)
    sds = StreamingDataset(stream, ["y1", "y2"], weight="w")
    sizes = [len(X) for X, _, _ in sds.chunks()]
    assert max(sizes) <= 4_096 and sum(sizes) == 30_000
    X = np.concatenate([c[0] for c in sds.chunks()])
    np.testing.assert_array_equal(X[:, 2], table.column("c").to_numpy())
    assert sds.feature_names == ["a", "b", "c", "d"] and sds.target_names == ["y1", "y2"]
    assert len(stream.units()) == 3 + 4 + 1  # row groups of p1 and p2, and the CSV file


@pytest.mark.parametrize("cov", ["nonrobust", "HC3"])
def test_streamed_exact_equals_in_memory(parts, cov):
    folder, _ = parts
    sds = StreamingDataset(Stream(str(folder), chunk_rows=2_000), ["y1", "y2"], weight="w")
    cfg = TrainConfig(solver="exact", cov_type=cov)
    streamed, whole = train(sds, cfg), train(sds.in_memory(), cfg)
    np.testing.assert_allclose(streamed.coef, whole.coef, rtol=1e-10)
    np.testing.assert_allclose(streamed.intercept, whole.intercept, rtol=1e-10)
    for s, t in zip(streamed.stats.values(), whole.stats.values()):
        for key in ("std_err", "t", "ci_low"):
            np.testing.assert_allclose(s[key], t[key], rtol=1e-8)
        assert s["r2"] == pytest.approx(t["r2"], rel=1e-12)
    for key in ("mse", "mae", "r2"):
        np.testing.assert_allclose(streamed.metrics["train"][key], whole.metrics["train"][key], rtol=1e-10)
    assert streamed.info["streamed"] and streamed.info["n_rows"] == 30_000
    assert streamed.info["data_sha256"] == whole.info["data_sha256"]  # the same rows, the same fingerprint


def test_streamed_gradient_descent_reaches_the_optimum_with_validation(parts):
    folder, _ = parts
    sds = StreamingDataset(Stream(str(folder), chunk_rows=3_000), ["y1", "y2"])
    model = train(sds, TrainConfig(epochs=10, val_fraction=0.2, seed=3), shuffle_buffer=8_000)
    assert 0 <= model.optimum["gap"] < 0.01
    assert model.info["n_val"] == pytest.approx(6_000, rel=0.05) and model.info["n_train"] + model.info["n_val"] == 30_000
    assert "val_loss" in model.history[-1] and model.metrics["val"]["r2"][0] > 0.75  # signal variance 4, noise 1
    again = train(sds, TrainConfig(epochs=10, val_fraction=0.2, seed=3), shuffle_buffer=8_000)
    np.testing.assert_array_equal(again.coef, model.coef)  # seeded: the same model twice


def test_cli_streams_train_predict_evaluate(parts, cli, tmp_path):
    folder, table = parts
    model = tmp_path / "m.safetensors"
    r = cli(
        "train",
        str(folder / "*.parquet"),
        "--target",
        "y1,y2",
        "--features",
        "a,b,c,d",
        "--solver",
        "exact",
        "--stream",
        "--chunk-rows",
        "1000",
        "-q",
        "-o",
        model,
    )
    assert r.code == 0, r.err
    ref = cli(
        "train",
        str(folder / "*.parquet"),
        "--target",
        "y1,y2",
        "--features",
        "a,b,c,d",
        "--solver",
        "exact",
        "-q",
        "-o",
        tmp_path / "ref.safetensors",
    )
    assert ref.code == 0
    a, b = json.loads(cli("inspect", model, "--json").out), json.loads(cli("inspect", tmp_path / "ref.safetensors", "--json").out)
    np.testing.assert_allclose(a["coef"], b["coef"], rtol=1e-10)
    assert a["info"]["streamed"] and "streamed" not in b["info"]
    out = tmp_path / "pred.parquet"
    assert cli("predict", model, str(folder), "-o", out, "--chunk-rows", "777").code == 0
    pred = pq.read_table(out)
    X = np.column_stack([table.column(c).to_numpy() for c in "abcd"])
    np.testing.assert_allclose(
        np.column_stack([pred.column("y1"), pred.column("y2")]), X @ np.array(a["coef"]).T + a["intercept"], rtol=1e-12
    )
    ev = json.loads(cli("evaluate", model, str(folder), "--json", "--chunk-rows", "999").out)
    Y = np.column_stack([table.column("y1").to_numpy(), table.column("y2").to_numpy()])
    res = Y - (X @ np.array(a["coef"]).T + a["intercept"])
    np.testing.assert_allclose(ev["metrics"]["mse"], (res**2).mean(axis=0), rtol=1e-10)
    r2 = 1 - (res**2).sum(0) / ((Y - Y.mean(0)) ** 2).sum(0)
    np.testing.assert_allclose(ev["metrics"]["r2"], r2, rtol=1e-10)
    assert ev["n_rows"] == 30_000


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("0.5,oops,1,2,3,4", "line 1236, column 'b': expected a number, got 'oops'"),
        ("0.5,,1,2,3,4", "line 1236, column 'b': missing value; drop such rows with --drop-missing"),
        ("0.5,1,2", "line 1236: expected 6 fields like the header, got 3"),
    ],
)
def test_bad_cells_deep_in_a_streamed_csv_name_file_and_line(cli, tmp_path, line, message):
    rows = ["a,b,c,d,y1,y2"] + [f"{i},{i % 7},{i % 5},{i % 3},{2 * i},{i % 11}" for i in range(3000)]
    rows[1235] = line  # data row 1235 is on line 1236
    src = tmp_path / "bad.csv"
    src.write_text("\n".join(rows) + "\n")
    out = tmp_path / "m.safetensors"
    r = cli("train", src, "--target", "y1", "--stream", "--chunk-rows", "100", "-q", "-o", out)
    assert r.code == 2 and r.err == f"Error: {src}, {message}\n" and not out.exists()
    good = tmp_path / "good.csv"
    good.write_text("\n".join(rows[:1000]) + "\n")
    assert cli("train", good, "--target", "y1", "--features", "a,b,c,d", "--solver", "exact", "-q", "-o", out).code == 0
    pred = tmp_path / "p.csv"
    r = cli("predict", out, src, "--chunk-rows", "100", "-o", pred)
    assert r.code == 2 and r.err == f"Error: {src}, {message}\n" and not pred.exists()  # nothing half written


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc are Linux facilities")
def test_streaming_stays_within_a_memory_limit_smaller_than_the_data(tmp_path):
    """The test caps the address space at (a small run's peak + 200 MB), then trains on a table
    that takes 352 MB as float64 (4M rows × 11 columns): streaming fits, reading it whole does not."""
    path = tmp_path / "big.parquet"
    rng = np.random.default_rng(0)
    writer = pq.ParquetWriter(path, pa.schema([(f"x{j}", pa.float64()) for j in range(10)] + [("y", pa.float64())]))
    for _ in range(40):
        X = rng.standard_normal((100_000, 10))
        cols = {f"x{j}": X[:, j] for j in range(10)}
        cols["y"] = X @ np.arange(10.0) + rng.standard_normal(100_000)
        writer.write_table(pa.table(cols))
    writer.close()
    small = tmp_path / "small.parquet"
    pq.write_table(pq.read_table(path).slice(0, 1000), small)
    probe = (
        "import sys, resource\n"
        "limit = int(sys.argv[1]) * 2**20\n"
        "if limit: resource.setrlimit(resource.RLIMIT_AS, (limit, limit))\n"
        "from gradreg.cli import main\n"
        "code = main(sys.argv[2:])\n"
        "peak = [l for l in open('/proc/self/status') if l.startswith('VmPeak')][0].split()[1]\n"
        "print(code, int(peak) // 1024)\n"
        "sys.exit(code)\n"
    )

    def run(limit_mb, *args):
        r = subprocess.run(
            [sys.executable, "-c", probe, str(limit_mb), *map(str, args)], capture_output=True, text=True, timeout=300
        )
        return r

    base = run(0, "train", small, "--target", "y", "--stream", "--solver", "exact", "-q", "-o", tmp_path / "s.safetensors")
    assert base.returncode == 0, base.stderr
    limit = int(base.stdout.split()[1]) + 200
    for solver in ("exact", "gd"):
        r = run(
            limit,
            "train",
            path,
            "--target",
            "y",
            "--stream",
            "--solver",
            solver,
            *(["--epochs", "1", "--shuffle-buffer", "262144"] if solver == "gd" else []),  # exact refuses them
            "-q",
            "-o",
            tmp_path / f"{solver}.safetensors",
        )
        assert r.returncode == 0, r.stderr
    model = json.loads(run_subprocess("inspect", tmp_path / "exact.safetensors", "--json").stdout)
    np.testing.assert_allclose(model["coef"][0], np.arange(10.0), atol=2e-3)
    whole = run(limit, "train", path, "--target", "y", "--solver", "exact", "-q", "-o", tmp_path / "w.safetensors")
    assert whole.returncode == 1 and "out of memory" in whole.stderr  # the control: in memory it cannot fit


def test_streamed_header_names_lose_their_spaces_and_a_bom(tmp_path):
    src = tmp_path / "s.txt"
    src.write_text("\ufeff x \t rain \n" + "".join(f"{i}\t{2 * i + 1}\n" for i in range(10)), encoding="utf-8")
    stream = Stream(str(src), chunk_rows=4, delimiter="tab")
    assert stream.columns == ["x", "rain"]
    sds = StreamingDataset(stream, "rain")
    assert sds.feature_names == ["x"]
    X = np.concatenate([X for X, _, _ in sds.chunks()])
    Y = np.concatenate([Y for _, Y, _ in sds.chunks()])
    np.testing.assert_array_equal(X[:, 0], np.arange(10))
    np.testing.assert_array_equal(Y[:, 0], 2 * np.arange(10) + 1)


def test_streamed_delimiter_hint_and_bad_delimiter(tmp_path):
    from gradreg.errors import ConfigError

    src = tmp_path / "e.csv"
    src.write_text("a;y\n" + "".join(f"{i},5;{i}\n" for i in range(5)))
    with pytest.raises(DataError) as e:
        StreamingDataset(Stream(str(src), delimiter=","), "y")
    assert str(e.value) == f"{src}, line 2: expected 1 field like the header, got 2; the header is one field " + (
        "holding ';': for a ';'-separated file give --delimiter ';' (its numbers use decimal commas, as in '0,5': "
        "give --decimal ',' too)"
    )
    with pytest.raises(DataError) as e:  # not given: ';' is detected, and the decimal commas are named
        StreamingDataset(Stream(str(src)), "y")
    assert str(e.value) == f"{src}: no numeric feature columns besides the target(s): column 'a': it holds no " + (
        "numbers (numbers with a decimal comma, as in '0,5'? give --decimal ',')"
    )
    sds = StreamingDataset(Stream(str(src), options=ReadOptions.of(decimal=",")), "y")
    np.testing.assert_array_equal(np.concatenate([X for X, _, _ in sds.chunks()])[:, 0], np.arange(5) + 0.5)
    with pytest.raises(ConfigError, match=r"^delimiter must be one character .*; got delimiter=';;'"):
        Stream(str(src), delimiter=";;")


def test_the_largest_value_is_found_by_file_and_line(tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    (folder / "a.csv").write_text("x,y\n" + "".join(f"{i},{i}\n" for i in range(7)))
    (folder / "b.csv").write_text("x,y\n1,1\n\n2,2\n-3e9,3\n4,4\n")
    sds = StreamingDataset(Stream(str(folder), chunk_rows=3), "y")
    where = f"{folder / 'b.csv'}, line 5, column 'x'"
    assert sds.largest(0) == (where, -3e9)
    ds = sds.in_memory()  # rows of several files and chunks, in one Dataset
    assert ds.largest(0) == (where, -3e9)
    assert ds.where(3, "y") == f"{folder / 'a.csv'}, line 5, column 'y'"


def test_a_model_file_in_a_stream_says_so(tmp_path):
    from gradreg.io import load

    path = tmp_path / "m.csv"  # a model under a data name
    train(load("crops", "mangoes"), TrainConfig(solver="exact")).save(str(tmp_path / "m.safetensors"))
    os.replace(tmp_path / "m.safetensors", path)
    with pytest.raises(DataError, match=r"m\.csv: a \.safetensors model file, not data \(did you swap MODEL and DATA\?"):
        Stream(str(path))
