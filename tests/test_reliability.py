"""Reliability: numbers that do not fit, reproducible models, atomic writes under SIGKILL, and
predict under load (10M rows, 20 concurrent processes)."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from safetensors.numpy import load_file

from gradreg import LinearRegressor
from gradreg.errors import ConfigError, DataError

from .conftest import run_subprocess

RNG = np.random.default_rng(0)
X0 = RNG.normal(size=(300, 2))
Y0 = X0 @ np.array([1.0, 2.0]) + 3 + 0.1 * RNG.normal(size=300)


@pytest.mark.parametrize("solver", ["exact", "gd"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("scale", "y_scale"), [(1e30, 1.0), (1.0, 1e30), (np.array([1e-20, 1e20]), 1.0), (1e-140, 1.0)])
def test_huge_tiny_and_mixed_magnitudes_are_fitted(solver, dtype, scale, y_scale):
    from sklearn.linear_model import LinearRegression

    X, y = X0 * scale, Y0 * y_scale
    est = LinearRegressor(solver=solver, dtype=dtype, epochs=30).fit(X, y)
    ref = LinearRegression().fit(X0, Y0)  # the same problem in unit scale
    np.testing.assert_allclose(est.coef_ * scale / y_scale, ref.coef_, rtol=1e-9 if solver == "exact" else 0.02)
    assert est.model_.stats[est.model_.target_names[0]]["r2"] == pytest.approx(
        ref.score(X0, Y0), rel=1e-9 if solver == "exact" else 1e-3
    )


@pytest.mark.parametrize(
    ("scale", "message"),
    [
        (1e200, r"X, row \d+, column 'x0': -?\d\.\d+e\+200 overflows float64 when squared .*outlier.*multiply it by 1e-201"),
        (1e-310, r"column 'x0': all values are below .*e-310 in magnitude and underflow when squared .*multiply it by 1e310"),
    ],
)
def test_values_whose_squares_leave_float64_are_refused(scale, message):
    for solver in ("exact", "gd"):
        with pytest.raises(DataError, match=message):
            LinearRegressor(solver=solver).fit(X0 * scale, Y0)


def test_float32_overflow_of_raw_squares_suggests_float64(cli, tmp_path):
    with pytest.raises(ConfigError, match=r"values up to .*e\+20 overflow float32 when squared.*use dtype='float64'"):
        LinearRegressor(standardize=False, lr=1e-3).fit(X0 * 1e20, Y0)
    src = tmp_path / "big.csv"
    src.write_text("x,y\n" + "".join(f"{v * 1e20},{v}\n" for v in X0[:, 0]))
    r = cli("train", src, "--target", "y", "--no-standardize", "--lr", "1e-3", "-o", tmp_path / "m.safetensors")
    assert r.code == 2 and "use --dtype float64" in r.err and r.err.startswith("features: x (1)") and r.err.count("\n") == 2


def test_same_data_seed_and_settings_give_byte_identical_tensors(cli, tmp_path):
    paths = [tmp_path / f"m{i}.safetensors" for i in range(2)]
    for p in paths:
        args = ["train", "crops", "--target", "mangoes,oranges", "--val-fraction", "0.2", "--optimizer", "adam", "--seed", "7"]
        assert cli(*args, "-q", "-o", p).code == 0
    a, b = load_file(str(paths[0])), load_file(str(paths[1]))
    assert a.keys() == b.keys() and all(a[k].tobytes() == b[k].tobytes() for k in a)
    meta = [json.loads(cli("inspect", p, "--json").out) for p in paths]
    for m in meta:
        m["info"].pop("created")
    assert meta[0] == meta[1]  # identical metadata apart from the timestamp
    assert meta[0]["config"]["seed"] == 7 and len(meta[0]["info"]["data_sha256"]) == 64
    other = tmp_path / "other.safetensors"
    assert cli("train", "crops", "--target", "mangoes,oranges", "--seed", "8", "-q", "-o", other).code == 0
    assert load_file(str(other))["coef"].tobytes() != a["coef"].tobytes()  # the seed matters


def test_fingerprint_ignores_chunking_and_sees_one_changed_value():
    from gradreg.pipeline import Fingerprint

    rng = np.random.default_rng(3)
    X, Y, w = rng.normal(size=(1000, 4)).astype(np.float32), rng.normal(size=(1000, 2)), rng.uniform(size=1000)

    def digest(X, Y, w, cuts=(0, 1000)):
        fp = Fingerprint()
        for a, b in zip(cuts[:-1], cuts[1:]):
            fp.add(X[a:b], Y[a:b], None if w is None else w[a:b])
        return fp.hexdigest(["a", "b", "c", "d"], ["y", "z"], ["<f4", "<f8", "<f8"])

    base = digest(X, Y, w)
    assert len(base) == 64 and digest(X, Y, w, (0, 1, 333, 334, 1000)) == base
    X2 = X.copy()
    X2[500, 2] = np.nextafter(X2[500, 2], np.float32(np.inf))  # one bit of one value
    assert digest(X2, Y, w) != base and digest(X, Y, None) != base
    assert digest(X[::-1], Y[::-1], w[::-1]) != base  # the same rows in another order


def _big_csv(path, rows, cols=3):
    import pyarrow as pa
    import pyarrow.csv as pcsv

    rng = np.random.default_rng(1)
    with pcsv.CSVWriter(path, pa.schema([(f"x{j}", pa.float64()) for j in range(cols)])) as w:
        for start in range(0, rows, 1_000_000):
            m = min(1_000_000, rows - start)
            w.write_table(pa.table({f"x{j}": rng.normal(size=m).round(6) for j in range(cols)}))


@pytest.fixture(scope="module")
def model3(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model3")
    X = RNG.normal(size=(500, 3))
    data = folder / "train.csv"
    data.write_text("x0,x1,x2,y\n" + "".join(f"{a},{b},{c},{a + 2 * b - c + 1}\n" for a, b, c in X))
    path = folder / "m.safetensors"
    assert run_subprocess("train", data, "--target", "y", "--solver", "exact", "-q", "-o", path).returncode == 0
    return path


def test_sigkill_during_predict_leaves_the_previous_output_whole(model3, tmp_path):
    src = tmp_path / "in.csv"
    _big_csv(src, 3_000_000)
    out = tmp_path / "out.csv"
    out.write_text("y\n1.0\n")  # a previous, complete output
    proc = subprocess.Popen([sys.executable, "-m", "gradreg", "predict", str(model3), str(src), "-o", str(out)])
    deadline = time.time() + 60
    while time.time() < deadline:  # wait until the temporary file is being written
        if any(f.startswith(".out.csv.") and os.path.getsize(tmp_path / f) > 1_000_000 for f in os.listdir(tmp_path)):
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert out.read_text() == "y\n1.0\n"  # never a half-written file under the final name


def test_predict_ten_million_rows_with_bounded_memory(model3, tmp_path):
    probe = (
        "import sys, resource\n"
        "from gradreg.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)\n"
        "sys.exit(code)\n"
    )

    def predict(rows):
        src = tmp_path / f"{rows}.csv"
        _big_csv(src, rows)
        out = tmp_path / f"{rows}_pred.csv"
        args = [sys.executable, "-c", probe, "predict", str(model3), str(src), "-o", str(out)]
        r = subprocess.run(args, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        return src, out, int(r.stdout.split()[-1])

    _, _, small_mb = predict(1_000_000)
    src, out, peak_mb = predict(10_000_000)
    # ten times the rows (a 300 MB input), the same memory: chunks, not the table, are held
    assert peak_mb - small_mb < 64, f"peak RSS {small_mb} MB for 1M rows but {peak_mb} MB for 10M"
    with open(out, "rb") as f:
        lines = sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 24), b""))
    assert lines == 10_000_001  # the header and every row
    with open(out) as f, open(src) as g:
        f.readline(), g.readline()
        for _ in range(1000):
            a, b, c = map(float, g.readline().split(","))
            assert float(f.readline()) == pytest.approx(a + 2 * b - c + 1, abs=1e-9)


def test_twenty_concurrent_predicts_against_one_model(model3, tmp_path):
    rng = np.random.default_rng(2)
    jobs = []
    for i in range(20):
        X = rng.normal(size=(2000, 3))
        src = tmp_path / f"in{i}.csv"
        src.write_text("x0,x1,x2\n" + "".join(f"{a},{b},{c}\n" for a, b, c in X))
        out = tmp_path / f"out{i}.csv"
        proc = subprocess.Popen([sys.executable, "-m", "gradreg", "predict", str(model3), str(src), "-o", str(out)])
        jobs.append((proc, X, out))
    for proc, X, out in jobs:
        assert proc.wait(timeout=300) == 0
        pred = np.loadtxt(out, skiprows=1)
        np.testing.assert_allclose(pred, X @ np.array([1.0, 2.0, -1.0]) + 1, atol=1e-9)
