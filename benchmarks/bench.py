"""gradreg beside its peers and the plain scripts it must beat, one process per tool (``make bench``).

Every figure answers one of issue 13's goals; the run ends with a table of them (gradreg, the peer,
the plain script, the ratios, the goal, met or not), the tools' own figures, and the BLAS kernels
and thread counts that each tool's process ran with.

Cases
-----
B1      --rows (1,000,000) x 100 float32 features with unscaled columns (scales 1e-2..1e3,
        offsets), 2 targets, noise sd 1, in memory, through the Python API.
S1      the same generator, --stream-rows (5,000,000) rows in a Parquet file written with
        pyarrow's default writer settings (row groups of 1,048,576 rows, snappy), trained with
        ``gradreg train FILE --stream``. 20,000,000 rows (8 GB) is the issue's large case.
CSV     ``gradreg predict`` on the first --csv-rows (200,000) B1 rows as a CSV file (about
        210 MB): MB/s of input per process, process start included.
help    ``gradreg --help``, wall time.

Tools
-----
gradreg-exact, gradreg-gd      LinearRegressor(solver="exact"), LinearRegressor() (every default)
exact-numpy                    baselines/exact_numpy.py: float64 Gram (dsyrk), Cholesky, residuals
sklearn-linear, numpy-lstsq    LinearRegression; np.linalg.lstsq with an intercept column, float64
sklearn-sgd                    StandardScaler + SGDRegressor(max_iter=10, tol=None), one per target
gradreg-stream-exact, -gd      ``gradreg train FILE --stream`` (--solver exact; 2 epochs of gd)
stream-pyarrow, decode-pyarrow baselines/stream_pyarrow.py (Gram and solve; --decode-only)
gradreg-predict, predict-pyarrow   ``gradreg predict``; baselines/predict_csv.py
statsmodels-ols, tutorial      only with --slow-peers: OLS on target 0; the tutorial's batch-3 loop

Every tool runs in a fresh process (``--tool NAME``). In-memory tools load B1, warm up on 2,000
rows (imports, first calls) and time only the fit. Streamed tools find the file in the page cache
(the parent reads it just before each), warm up on a 2,000-row file and time the whole run.
Predict tools run once untimed, then three times as bare processes, interleaved; the median counts.
After its run each process records its BLAS libraries (threadpoolctl) and, if it loaded torch,
torch's BLAS build, MKL's dispatch line and thread count. The parent computes each B1 tool's MSE
in float64 over the optimum's, and its coefficients' relative error against the float64 solution
(QR of the centered data): max_j |coef_j - ref_j| sd_j / max_j |ref_j| sd_j, the worst target, with
sd_j the feature's standard deviation (the error in standardized units, so that no column's scale
hides another's error).

``make bench`` runs this with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset: where they are set (on
some processors here, for old OpenBLAS builds), numpy's OpenBLAS runs an older, slower kernel.
Timings on a shared 2-core machine are noisy: compare the ratios of one run.

Usage: python benchmarks/bench.py [--quick] [--rows N] [--stream-rows N] [--csv-rows N]
                                  [--device cpu|cuda] [--slow-peers] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import re
import resource
import runpy
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.path.join(HERE, ".cache")
BASELINES = os.path.join(HERE, "baselines")
P, Q = 100, 2
TARGETS = "y0,y1"
ROW_GROUP = 1024 * 1024  # pyarrow's default row group length: writing tables of this size reproduces pq.write_table(table, path)
WARMUP_ROWS = 2_000
QUICK = {
    "rows": 50_000,
    "stream_rows": 200_000,
    "csv_rows": 20_000,
}  # every case: about a minute of CPU, 50 epochs of gd the most
MIB_LIMIT = 1.5e9 / 2**20  # the streamed goal's 1.5 GB of peak RSS, in MiB


# -- data ------------------------------------------------------------------------------------
def _generator(seed: int = 0):
    rng = np.random.default_rng(seed)
    scales = np.logspace(-2, 3, P)
    offsets = rng.normal(size=P) * scales * 3
    B = rng.normal(size=(P, Q)) / scales[:, None]
    return rng, scales, offsets, B


def _rows(rng, scales, offsets, B, n):
    X = (rng.standard_normal((n, P), dtype=np.float32) * scales.astype(np.float32) + offsets.astype(np.float32)).astype(
        np.float32
    )
    Y = (X.astype(np.float64) @ B + 5.0 + rng.standard_normal((n, Q))).astype(np.float32)
    return X, Y


def b1_paths(rows: int) -> tuple[str, str]:
    x, y = os.path.join(CACHE, f"b1_{rows}_X.npy"), os.path.join(CACHE, f"b1_{rows}_Y.npy")
    if not (os.path.exists(x) and os.path.exists(y)):
        os.makedirs(CACHE, exist_ok=True)
        X, Y = _rows(*_generator(), rows)
        np.save(x, X)
        np.save(y, Y)
    return x, y


def s1_path(rows: int) -> str:
    """The S1 Parquet file of ``rows`` rows, laid out as ``pq.write_table(table, path)`` would."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = os.path.join(CACHE, f"s1_{rows}_default.parquet")
    if os.path.exists(path):
        return path
    os.makedirs(CACHE, exist_ok=True)
    rng, scales, offsets, B = _generator()
    schema = pa.schema([(f"x{j}", pa.float32()) for j in range(P)] + [(f"y{t}", pa.float32()) for t in range(Q)])
    tmp = path + ".tmp"
    with pq.ParquetWriter(tmp, schema) as w:  # every other writer setting is pyarrow's default
        for start in range(0, rows, ROW_GROUP):
            X, Y = _rows(rng, scales, offsets, B, min(ROW_GROUP, rows - start))
            w.write_table(pa.table({f"x{j}": X[:, j] for j in range(P)} | {f"y{t}": Y[:, t] for t in range(Q)}))
    os.replace(tmp, path)
    return path


def csv_path(rows: int, b1_rows: int) -> str:
    import pyarrow as pa
    import pyarrow.csv as pcsv

    path = os.path.join(CACHE, f"predict_{rows}.csv")
    if not os.path.exists(path):
        X = np.load(b1_paths(b1_rows)[0], mmap_mode="r")[:rows]
        pcsv.write_csv(pa.table({f"x{j}": np.asarray(X[:, j]) for j in range(P)}), path + ".tmp")
        os.replace(path + ".tmp", path)
    return path


def _read_through(path: str) -> None:
    """Read a file once, so that the tool timed next finds it in the page cache."""
    with open(path, "rb") as f:
        while f.read(1 << 26):
            pass


# -- one tool, in its own process ---------------------------------------------------------------
def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _script(path: str, argv: list[str]) -> dict:
    """Run a script as ``__main__`` in this process and return the JSON line it prints."""
    out, saved = io.StringIO(), sys.argv
    sys.argv = [path, *argv]
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(path, run_name="__main__")
    finally:
        sys.argv = saved
    return json.loads(out.getvalue().strip().splitlines()[-1])


def _mkl_line(torch) -> str | None:
    """MKL's first verbose line names the code path it dispatched to on this processor."""
    with tempfile.TemporaryFile() as f:
        sys.stdout.flush()
        saved = os.dup(1)  # MKL writes to the C-level stdout
        os.dup2(f.fileno(), 1)
        try:
            with torch.backends.mkl.verbose(torch.backends.mkl.VERBOSE_ON):
                x = torch.ones(8, 8, dtype=torch.float64)
                x @ x
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        f.seek(0)
        lines = f.read().decode(errors="replace").splitlines()
    return lines[0].removeprefix("MKL_VERBOSE ").strip() if lines else None


def kernels() -> dict:
    """The BLAS libraries and thread pools loaded in this process, as threadpoolctl and torch see them."""
    from threadpoolctl import threadpool_info

    keys = ("user_api", "internal_api", "version", "architecture", "num_threads", "threading_layer", "prefix")
    libs = []
    for lib in threadpool_info():
        entry = {k: lib.get(k) for k in keys}
        parts = lib["filepath"].split(os.sep)  # .../site-packages/numpy.libs/libscipy_openblas64_-….so: numpy's
        entry["package"] = parts[parts.index("site-packages") + 1].removesuffix(".libs") if "site-packages" in parts else None
        libs.append(entry)
    out: dict = {"env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}, "libs": libs}
    if "torch" in sys.modules:
        import torch

        cfg = dict(re.findall(r"\b(BLAS_INFO|LAPACK_INFO)=([^,\s]+)", torch.__config__.show()))
        out["torch"] = {
            "version": torch.__version__,
            "blas_info": cfg.get("BLAS_INFO"),
            "lapack_info": cfg.get("LAPACK_INFO"),
            "mkl": _mkl_line(torch) if torch.backends.mkl.is_available() else None,
            "num_threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        }
    return out


def run_tool(tool: str, args) -> dict:
    if tool.startswith(("gradreg-stream", "stream-", "decode-")):
        return _stream_tool(tool, args)
    if tool.endswith("predict") or tool.startswith("predict-"):
        return _predict_tool(tool, args)
    xpath, ypath = b1_paths(args.rows)
    if tool == "exact-numpy":
        return _script(os.path.join(BASELINES, "exact_numpy.py"), [xpath, ypath])
    X, Y = np.load(xpath), np.load(ypath)
    n = len(X)
    out: dict = {}
    t0 = time.perf_counter()
    if tool in ("gradreg-exact", "gradreg-gd"):
        import gradreg

        solver = tool.split("-")[1]
        gradreg.LinearRegressor(solver=solver, device=args.device).fit(X[:WARMUP_ROWS], Y[:WARMUP_ROWS])  # warm-up
        t0 = time.perf_counter()
        est = gradreg.LinearRegressor(solver=solver, device=args.device).fit(X, Y)
        out["seconds"] = time.perf_counter() - t0
        coef, icpt = est.coef_, est.intercept_
        if solver == "gd":
            epochs = [h["seconds"] for h in est.history_]
            out |= {
                "epochs": len(epochs),
                "epoch_seconds": float(np.median(epochs)),
                "setup_seconds": out["seconds"] - sum(epochs),
            }
            with contextlib.suppress(AttributeError, KeyError, TypeError):  # when the running loss first came within 1%
                opt, elapsed = est.model_.optimum["mean_objective"], out["seconds"] - sum(epochs)
                for h in est.history_:
                    elapsed += h["seconds"]
                    if h["loss"] <= 1.01 * opt:
                        out["to_1pct"] = elapsed
                        break
    elif tool == "sklearn-linear":
        from sklearn.linear_model import LinearRegression

        LinearRegression().fit(X[:WARMUP_ROWS], Y[:WARMUP_ROWS])
        t0 = time.perf_counter()
        m = LinearRegression().fit(X, Y)
        out["seconds"] = time.perf_counter() - t0
        coef, icpt = m.coef_, m.intercept_
    elif tool == "sklearn-sgd":
        from sklearn.linear_model import SGDRegressor
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        coef, icpt = np.zeros((Q, P)), np.zeros(Q)
        make_pipeline(StandardScaler(), SGDRegressor(max_iter=1, tol=None)).fit(X[:WARMUP_ROWS], Y[:WARMUP_ROWS, 0])
        t0 = time.perf_counter()
        for t in range(Q):  # one model per target: SGDRegressor is single-output
            m = make_pipeline(StandardScaler(), SGDRegressor(max_iter=10, tol=None, random_state=0)).fit(X, Y[:, t])
            sc, sgd = m[0], m[1]
            coef[t] = sgd.coef_ / sc.scale_
            icpt[t] = sgd.intercept_[0] - coef[t] @ sc.mean_
        out["seconds"] = time.perf_counter() - t0
    elif tool == "numpy-lstsq":
        np.linalg.lstsq(np.ones((WARMUP_ROWS, P + 1)), Y[:WARMUP_ROWS].astype(np.float64), rcond=None)
        t0 = time.perf_counter()
        A = np.empty((n, P + 1))
        A[:, 0] = 1.0
        A[:, 1:] = X
        sol = np.linalg.lstsq(A, Y.astype(np.float64), rcond=None)[0]
        out["seconds"] = time.perf_counter() - t0
        coef, icpt = sol[1:].T, sol[0]
    elif tool == "statsmodels-ols":
        import statsmodels.api as sm

        sm.OLS(Y[:WARMUP_ROWS, 0].astype(np.float64), sm.add_constant(X[:WARMUP_ROWS].astype(np.float64))).fit()
        t0 = time.perf_counter()
        res = sm.OLS(Y[:, 0].astype(np.float64), sm.add_constant(X.astype(np.float64))).fit()
        out["seconds"] = time.perf_counter() - t0
        out["targets"] = 1
        coef, icpt = np.vstack([res.params[1:], np.full(P, np.nan)]), np.array([res.params[0], np.nan])
    elif tool == "tutorial":
        import torch
        from torch.utils.data import DataLoader, TensorDataset

        rows = min(n, 30_000)  # a slice, extrapolated to one epoch of all rows
        loader = DataLoader(
            TensorDataset(torch.from_numpy(X[:rows].copy()), torch.from_numpy(Y[:rows].copy())), batch_size=3, shuffle=True
        )
        w = torch.randn(Q, P, requires_grad=True)
        b = torch.randn(Q, requires_grad=True)
        t0 = time.perf_counter()
        for x, y in loader:
            diff = x @ w.t() + b - y
            loss = torch.sum(diff * diff) / diff.numel()
            loss.backward()
            with torch.no_grad():
                w -= w.grad * 1e-6
                b -= b.grad * 1e-6
                w.grad.zero_()
                b.grad.zero_()
        return {"seconds_per_epoch": (time.perf_counter() - t0) * n / rows, "peak_mb": _peak_mib()}
    else:
        raise SystemExit(f"unknown tool {tool}")
    out["coef"] = np.asarray(coef, dtype=np.float64).reshape(Q, P).tolist()
    out["intercept"] = np.asarray(icpt, dtype=np.float64).reshape(Q).tolist()
    out["peak_mb"] = _peak_mib()
    return out


def _stream_model(tool: str) -> str:
    return os.path.join(CACHE, f"{tool}.safetensors")


def _stream_tool(tool: str, args) -> dict:
    path = s1_path(args.stream_rows)
    if tool in ("stream-pyarrow", "decode-pyarrow"):
        extra = ["--decode-only"] if tool == "decode-pyarrow" else []
        return _script(os.path.join(BASELINES, "stream_pyarrow.py"), [path, "--target", TARGETS, *extra])
    import gradreg
    from gradreg.cli import main

    solver = "exact" if tool.endswith("exact") else "gd"
    extra = ["--epochs", "2"] if solver == "gd" else []
    model = _stream_model(tool)

    def train(data: str) -> None:
        cmd = ["train", data, "--target", TARGETS, "--stream", "--solver", solver, "--device", args.device, "-q", "-o", model]
        if main([*cmd, *extra]) != 0:
            raise SystemExit(f"gradreg {' '.join(cmd)} failed")

    train(s1_path(WARMUP_ROWS))  # warm-up: imports (torch) and first calls
    t0 = time.perf_counter()
    train(path)
    out = {"seconds": time.perf_counter() - t0, "rows": args.stream_rows, "peak_mb": _peak_mib()}
    out["rows_per_s"] = out["rows"] / out["seconds"]
    est = gradreg.load(model)
    out["coef"] = np.asarray(est.coef_).tolist()
    out["intercept"] = np.asarray(est.intercept_).tolist()
    if solver == "gd":
        out["epoch_seconds"] = [h["seconds"] for h in est.history_]
        with contextlib.suppress(AttributeError, KeyError, TypeError):
            out["gap"] = est.model_.optimum["gap"]
    return out


def _predict_cmd(tool: str, model: str, csv: str, out: str) -> list[str]:
    if tool == "gradreg-predict":
        return ["-m", "gradreg", "predict", model, csv, "-o", out]
    return [os.path.join(BASELINES, "predict_csv.py"), model, csv, out]


def _predict_tool(tool: str, args) -> dict:
    """The untimed first run of a predict tool, in this process: it records the kernels."""
    argv = _predict_cmd(tool, args.model, csv_path(args.csv_rows, args.rows), os.path.join(CACHE, f"{tool}.csv"))
    if argv[0] == "-m":
        saved = sys.argv
        sys.argv = [argv[1], *argv[2:]]
        try:
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        except SystemExit as e:
            if e.code:
                raise
        finally:
            sys.argv = saved
        return {"peak_mb": _peak_mib()}
    return _script(argv[0], argv[1:]) | {"peak_mb": _peak_mib()}


# -- the parent ----------------------------------------------------------------------------------
def _child(tool: str, args, **extra: str) -> dict:
    cmd = [sys.executable, __file__, "--tool", tool, "--device", args.device]
    cmd += ["--rows", str(args.rows), "--stream-rows", str(args.stream_rows), "--csv-rows", str(args.csv_rows)]
    for k, v in extra.items():
        cmd += [f"--{k}", v]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        return {"error": (r.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def _blocks(n: int, size: int = 100_000):
    return ((s, min(s + size, n)) for s in range(0, n, size))


def _mse(coef, icpt, X, Y) -> np.ndarray:
    sse = np.zeros(Q)
    for s, e in _blocks(len(X)):
        r = Y[s:e].astype(np.float64) - (X[s:e].astype(np.float64) @ np.asarray(coef).T + icpt)
        sse += (r * r).sum(axis=0)
    return sse / len(X)


def reference(X, Y) -> dict:
    """The float64 least-squares solution: a QR of the centered data, 100k-row blocks (independent of gradreg)."""
    n = len(X)
    xm, ym = X.mean(axis=0, dtype=np.float64), Y.mean(axis=0, dtype=np.float64)
    R = None
    for s, e in _blocks(n):
        Z = np.hstack([X[s:e] - xm, Y[s:e] - ym])
        R = np.linalg.qr(Z if R is None else np.vstack([R, Z]), mode="r")
    beta = np.linalg.solve(R[:P, :P], R[:P, P:])  # (P, Q)
    sd = np.sqrt(np.einsum("ij,ij->j", R[:P, :P], R[:P, :P]) / n)  # column norms of R = those of centered X
    coef, icpt = beta.T, ym - xm @ beta
    return {"coef": coef, "intercept": icpt, "sd": sd, "mse": _mse(coef, icpt, X, Y)}


def coef_error(coef, ref: dict) -> float:
    """Relative error in standardized units, the worst target: max_j |Δcoef_j| sd_j / max_j |ref_j| sd_j."""
    d = np.abs(np.asarray(coef) - ref["coef"]) * ref["sd"]
    return float(np.nanmax(d.max(axis=1) / (np.abs(ref["coef"]) * ref["sd"]).max(axis=1)))


def _kernel_lines(results: dict) -> list[str]:
    """One line per distinct library (or torch build), with the tools that loaded it."""
    seen: dict[str, list[str]] = {}
    envs: dict[str, list[str]] = {}
    for tool, r in results.items():
        k = r.get("kernels")
        if not k:
            continue
        env = ", ".join(f"{name}={v}" if v is not None else f"{name} unset" for name, v in k["env"].items())
        envs.setdefault(env, []).append(tool)
        for lib in k["libs"]:
            if lib["user_api"] == "blas":
                text = (
                    f"{lib['internal_api']} {lib['version']} ({lib['prefix']}, {lib['package'] or '?'}): "
                    f"{lib['architecture']} kernels, {lib['num_threads']} threads, {lib['threading_layer']}"
                )
            else:
                text = f"{lib['user_api']} {lib['prefix']} ({lib['package'] or '?'}): {lib['num_threads']} threads"
            seen.setdefault(text, []).append(tool)
        if "torch" in k:
            t = k["torch"]
            text = (
                f"torch {t['version']}: BLAS_INFO={t['blas_info']}, LAPACK_INFO={t['lapack_info']}, "
                f"{t['num_threads']} threads, CPU capability {t['cpu_capability']}; MKL: {t['mkl']}"
            )
            seen.setdefault(text, []).append(tool)
    lines = [f"  {text}\n      in: {', '.join(tools)}" for text, tools in seen.items()]
    lines += [f"  environment: {env}\n      in: {', '.join(tools)}" for env, tools in envs.items()]
    return lines


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    return platform.processor() or "?"


def _fmt(x, spec: str = ".2f", unit: str = "") -> str:
    return "—" if x is None else f"{x:{spec}}{unit}"


def _ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def _speed(unit: str, mine, other):
    """gradreg's speed over another tool's (above 1: gradreg is faster); None where the figure is no time or rate."""
    if unit == "s":
        return _ratio(other, mine)
    return _ratio(mine, other) if unit in ("rows/s", "MB/s") else None


def goals(r: dict, args) -> list[dict]:
    """Issue 13's goals, one row each: gradreg's figure, the peer's, the plain script's, the speed ratios, met or not."""

    def fig(tool: str, key: str = "seconds"):
        return r.get(tool, {}).get(key)

    epochs = fig("gradreg-stream-gd", "epoch_seconds")
    slowest = args.stream_rows / max(epochs) if epochs else None
    b1, s1 = f"B1 {args.rows:,}×{P}", f"S1 {args.stream_rows:,} rows"
    # case, unit, gradreg, peer, baseline, goal, met(gradreg, × peer, × baseline)
    spec = [
        (f"{b1} exact: fit", "s", fig("gradreg-exact"), fig("sklearn-linear"), fig("exact-numpy"),
         "≥ 15× peer, > 1× baseline", lambda v, p, b: p >= 15 and b > 1),
        (f"{b1} exact: MSE / optimum", "", fig("gradreg-exact", "mse_ratio"), fig("sklearn-linear", "mse_ratio"),
         fig("exact-numpy", "mse_ratio"), "≤ 1.0001", lambda v, p, b: v <= 1.0001),
        (f"{b1} exact: coef rel. error", "", fig("gradreg-exact", "coef_err"), fig("sklearn-linear", "coef_err"),
         fig("exact-numpy", "coef_err"), "≤ 1e-9", lambda v, p, b: v <= 1e-9),
        (f"{b1} gd defaults: fit", "s", fig("gradreg-gd"), fig("sklearn-sgd"), None, "≥ 15× peer", lambda v, p, b: p >= 15),
        (f"{b1} gd defaults: MSE / optimum", "", fig("gradreg-gd", "mse_ratio"), fig("sklearn-sgd", "mse_ratio"), None,
         "≤ 1.01", lambda v, p, b: v <= 1.01),
        (f"{s1} exact: run", "s", fig("gradreg-stream-exact"), None, fig("stream-pyarrow"), "≥ 1× baseline",
         lambda v, p, b: b >= 1),
        (f"{s1} exact: peak RSS", "MiB", fig("gradreg-stream-exact", "peak_mb"), None, fig("stream-pyarrow", "peak_mb"),
         f"≤ 1.5 GB ({MIB_LIMIT:.0f} MiB)", lambda v, p, b: v <= MIB_LIMIT),
        (f"{s1} gd: slowest epoch", "rows/s", slowest, None, fig("decode-pyarrow", "rows_per_s"), "≥ 0.8× baseline",
         lambda v, p, b: b >= 0.8),
        (f"predict CSV, {args.csv_rows:,} rows", "MB/s", fig("gradreg-predict", "mb_per_s"), None,
         fig("predict-pyarrow", "mb_per_s"), "≥ 100 MB/s", lambda v, p, b: v >= 100),
    ]  # fmt: skip
    rows = []
    for case, unit, mine, peer, base, goal, test in spec:
        vs_peer, vs_base = _speed(unit, mine, peer), _speed(unit, mine, base)
        try:
            met = bool(test(mine, vs_peer, vs_base))
        except TypeError:  # a figure it needs is missing (that tool failed)
            met = None
        rows.append(
            dict(
                case=case,
                unit=unit,
                gradreg=mine,
                peer=peer,
                baseline=base,
                vs_peer=vs_peer,
                vs_baseline=vs_base,
                goal=goal,
                met=met,
            )
        )
    return rows


def _goal_cell(x, unit: str) -> str:
    if x is None:
        return "—"
    if unit == "" and x < 1e-3:
        return f"{x:.1e}"
    if unit == "":
        return f"{x:.6f}"
    if unit == "rows/s":
        return f"{x / 1e6:.2f}M"
    return f"{x:.0f}" if unit in ("MiB", "MB/s") else f"{x:.2f}"


def print_report(results: dict, args, ref: dict, load: tuple) -> list[dict]:
    from importlib.metadata import version

    print(f"\n## {platform.machine()}, {os.cpu_count()} cores, {_cpu_model()}, Python {platform.python_version()}")
    print(
        f"  load average at the start {', '.join(f'{x:.1f}' for x in load)}, at the end {', '.join(f'{x:.1f}' for x in os.getloadavg())} (other work shares these cores)"
    )
    print("  " + ", ".join(f"{pkg} {version(pkg)}" for pkg in ("gradreg", "torch", "numpy", "scipy", "scikit-learn", "pyarrow")))
    print("\nBLAS kernels and threads, as each tool's process recorded them after its run:")
    print("\n".join(_kernel_lines(results)))
    rows = goals(results, args)
    print("\n## Issue 13's goals (speed ratios: > 1 means gradreg is faster)\n")
    print("| case | unit | gradreg | peer | baseline | × peer | × baseline | goal | met |")
    print("|---|---|---:|---:|---:|---:|---:|---|---|")
    for g in rows:
        met = "—" if g["met"] is None else ("yes" if g["met"] else "no")
        cells = [_goal_cell(g[k], g["unit"]) for k in ("gradreg", "peer", "baseline")]
        print(
            f"| {g['case']} | {g['unit']} | {' | '.join(cells)} | {_fmt(g['vs_peer'], '.2f', '×')} | "
            f"{_fmt(g['vs_baseline'], '.2f', '×')} | {g['goal']} | {met} |"
        )
    print("\n## Every tool\n")
    print("| tool | seconds | rows/s | peak RSS (MiB) | MSE / optimum | coef rel. error | note |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for tool, r in results.items():
        if "error" in r:
            print(f"| {tool} | error: {r['error']} | | | | | |")
            continue
        sec = r.get("seconds", r.get("seconds_per_epoch"))
        note = []
        if "seconds_per_epoch" in r:
            note.append("per epoch, extrapolated from 30,000 rows")
        if r.get("targets") == 1:
            note.append("target 0 only")
        if "epoch_seconds" in r:
            e = r["epoch_seconds"]
            note.append(f"epochs: {', '.join(f'{s:.2f}' for s in e)} s" if isinstance(e, list) else f"median epoch {e:.3f} s")
        if r.get("to_1pct") is not None:
            note.append(f"loss within 1% after {r['to_1pct']:.2f} s")
        if "mb_per_s" in r:
            note.append(f"{r['mb_per_s']:.0f} MB/s of a {r['mb']:.0f} MB CSV, median of 3 processes, start included")
        if "coef_diff" in r:
            note.append(f"coefficients vs stream-pyarrow: {r['coef_diff']:.1e} rel.")
        if r.get("gap") is not None:
            note.append(f"MSE {r['gap']:.1e} above the optimum (gradreg's own gap)")
        if "pred_diff" in r:
            note.append(f"predictions vs predict-pyarrow: {r['pred_diff']:.1e} rel.")
        rps = r.get("rows_per_s")
        err = r.get("coef_err")
        print(
            f"| {tool} | {_fmt(sec)} | {_fmt(rps / 1e6 if rps else None, '.2f', 'M')} | {_fmt(r.get('peak_mb'), '.0f')} | "
            f"{_fmt(r.get('mse_ratio'), '.6f')} | {_fmt(err, '.1e')} | {'; '.join(note)} |"
        )
    print(f"\nB1 optimum MSE {ref['mse'].mean():.6f} (float64 QR of the centered data)")
    return rows


def _predictions_diff(a: str, b: str) -> float:
    import pyarrow.csv as pcsv

    A, B = (np.column_stack([c.to_numpy() for c in pcsv.read_csv(p).columns]) for p in (a, b))
    return float(np.abs(A - B).max() / np.abs(B).max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tool", help="run one tool in this process and print its JSON line (the parent's child)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="gradreg's device (default: cpu)")
    ap.add_argument("--quick", action="store_true", help=f"small data for every case, to check the harness: {QUICK}")
    ap.add_argument("--rows", type=int, default=1_000_000, help="B1 rows (default: 1,000,000)")
    ap.add_argument(
        "--stream-rows", type=int, default=5_000_000, help="S1 rows (default: 5,000,000; the issue's 8 GB case: 20000000)"
    )
    ap.add_argument("--csv-rows", type=int, default=200_000, help="rows of the predict CSV (default: 200,000)")
    ap.add_argument("--slow-peers", action="store_true", help="also statsmodels OLS and the tutorial's loop (about 40 s)")
    ap.add_argument("--model", help=argparse.SUPPRESS)  # the predict tools' model, from the parent
    ap.add_argument("--json", help="also write every figure here")
    args = ap.parse_args()
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, v)
    if args.csv_rows > args.rows:
        ap.error(f"the predict CSV is made of B1's rows: --csv-rows must be at most --rows; got {args.csv_rows} > {args.rows}")
    if args.tool:
        out = run_tool(args.tool, args)
        print(json.dumps(out | {"kernels": kernels()}))
        return

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, device {args.device}; "
        f"B1 {args.rows:,} rows, S1 {args.stream_rows:,} rows, CSV {args.csv_rows:,} rows"
    )
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if var in os.environ:
            print(f"note: {var}={os.environ[var]} is set: numpy's OpenBLAS may run a slower kernel (make bench unsets it)")
    load = os.getloadavg()  # 1, 5 and 15 minutes: how busy the machine was before this run
    X, Y = (np.load(p, mmap_mode="r") for p in b1_paths(args.rows))
    ref = reference(X, Y)
    results: dict = {}

    def report(tool: str, res: dict) -> None:
        results[tool] = res
        brief = {
            k: (round(v, 4) if isinstance(v, float) else v)
            for k, v in res.items()
            if k not in ("kernels", "coef", "intercept", "features")
        }
        print(f"  {tool:22s} {json.dumps(brief)}", flush=True)

    b1 = ["gradreg-exact", "exact-numpy", "sklearn-linear", "numpy-lstsq", "gradreg-gd", "sklearn-sgd"]
    b1 += ["statsmodels-ols", "tutorial"] if args.slow_peers else []
    for tool in b1:
        res = _child(tool, args)
        if "coef" in res:
            res["mse_ratio"] = float(np.nanmean(_mse(res["coef"], res["intercept"], X, Y) / ref["mse"]))
            res["coef_err"] = coef_error(res["coef"], ref)
        report(tool, res)

    path = s1_path(args.stream_rows)
    s1_path(WARMUP_ROWS)
    models = {
        "gradreg-predict": _stream_model("gradreg-stream-exact"),
        "predict-pyarrow": os.path.join(CACHE, "stream-pyarrow.npz"),
    }
    for model in models.values():  # the predict tools take this run's models, never an earlier run's
        with contextlib.suppress(FileNotFoundError):
            os.remove(model)
    for tool in ("gradreg-stream-exact", "stream-pyarrow", "gradreg-stream-gd", "decode-pyarrow"):
        _read_through(path)
        report(tool, _child(tool, args))
    base, mine = results["stream-pyarrow"], results["gradreg-stream-exact"]
    if "coef" in base and "coef" in mine:
        mine["coef_diff"] = float(np.max(np.abs(np.asarray(mine["coef"]) - base["coef"]) / np.abs(base["coef"])))

    csv = csv_path(args.csv_rows, args.rows)
    if "coef" in base:
        np.savez(
            models["predict-pyarrow"],
            features=base["features"],
            targets=TARGETS.split(","),
            coef=base["coef"],
            intercept=base["intercept"],
        )
    outs = {tool: os.path.join(CACHE, f"{tool}.csv") for tool in models}
    times: dict[str, list[float]] = {tool: [] for tool in models}
    ready = [t for t in models if os.path.exists(models[t])]
    for tool in ready:
        results[tool] = _child(tool, args, model=models[tool])  # untimed: compiles, caches, records kernels
    for _ in range(3):  # interleaved, so that a slow moment of the machine hits both
        for tool in ready:
            if "error" not in results[tool]:
                t0 = time.perf_counter()
                subprocess.run(
                    [sys.executable, *_predict_cmd(tool, models[tool], csv, outs[tool])], check=True, capture_output=True
                )
                times[tool].append(time.perf_counter() - t0)
    mb = os.path.getsize(csv) / 1e6
    for tool in models:
        res = results.get(tool, {"error": "no model: its streamed fit failed"})
        if times[tool]:
            sec = float(np.median(times[tool]))
            res |= {"seconds": sec, "mb": mb, "mb_per_s": mb / sec, "runs": times[tool]}
        report(tool, res)
    if all(times.values()):
        results["gradreg-predict"]["pred_diff"] = _predictions_diff(outs["gradreg-predict"], outs["predict-pyarrow"])

    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "gradreg", "--help"], check=True, capture_output=True)
    report("gradreg-help", {"seconds": time.perf_counter() - t0})

    rows = print_report(results, args, ref, load)
    if args.json:
        for r in results.values():
            r.pop("coef", None), r.pop("intercept", None)
        with open(args.json, "w") as f:
            json.dump(
                {
                    "args": vars(args),
                    "load": [load, os.getloadavg()],
                    "optimum_mse": ref["mse"].tolist(),
                    "goals": rows,
                    "tools": results,
                },
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
