"""``gradreg predict MODEL data.csv -o out.csv`` against the plain pyarrow + numpy script
(baselines/predict_csv.py), in MB/s of input CSV per process, start included.

The data are B1 rows (100 float32 features with unscaled columns, see bench.py) written as CSV,
about 1.07 kB a row; the model is an exact fit on the first 20,000 of them. Every run is a fresh
process timed from the parent; the commands alternate, ``--runs`` times each, and the medians are
printed, with the load average before and after (the machine is shared: compare within one run).

Usage: python benchmarks/predict_speed.py [--rows 200000] [--runs 3] [--before SRC] [--profile]
``--before SRC`` also times the gradreg package under SRC (another checkout's ``src``) in the same
alternation; ``--profile`` prints the top of a cProfile of ``gradreg predict``'s main thread
(in-process, warm; the parsing thread shows as the main thread's waits).
Besides wall time, each line gives the processes' CPU time (user + system): on a shared machine
wall time depends on the others' load, CPU time much less.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.path.join(HERE, ".cache")
P, Q = 100, 2


def prepare(rows: int) -> tuple[str, str, str]:
    """The CSV, the gradreg model and the plain script's model (.npz), made once in CACHE."""
    data = os.path.join(CACHE, f"predict_speed_{rows}.csv")
    model = os.path.join(CACHE, "predict_speed.safetensors")
    npz = os.path.join(CACHE, "predict_speed_model.npz")
    if os.path.exists(data) and os.path.exists(model) and os.path.exists(npz):
        return data, model, npz
    import pyarrow as pa
    import pyarrow.csv as pcsv

    os.makedirs(CACHE, exist_ok=True)
    rng = np.random.default_rng(0)
    scales = np.logspace(-2, 3, P)
    offsets = rng.normal(size=P) * scales * 3
    B = rng.normal(size=(P, Q)) / scales[:, None]
    names = [f"x{j}" for j in range(P)]
    with pcsv.CSVWriter(data + ".tmp", pa.schema([(n, pa.float32()) for n in names])) as w:
        for start in range(0, rows, 50_000):
            X = (rng.standard_normal((min(50_000, rows - start), P)) * scales + offsets).astype(np.float32)
            w.write_table(pa.Table.from_arrays([pa.array(X[:, j]) for j in range(P)], names=names))
            if start == 0:
                Y = X[:20_000].astype(np.float64) @ B + 5.0 + rng.standard_normal((min(20_000, len(X)), Q))
                first = X[:20_000]
    os.replace(data + ".tmp", data)
    import pandas as pd

    from gradreg import LinearRegressor

    est = LinearRegressor(solver="exact").fit(pd.DataFrame(first, columns=names), Y)
    est.model_.save(model)
    m = est.model_
    np.savez(npz, features=m.feature_names, targets=m.target_names, coef=m.coef, intercept=m.intercept)
    return data, model, npz


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    """Wall and CPU seconds (user + system) of one process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)  # the plain script prints a JSON line
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--before", metavar="SRC", help="also time the gradreg package in this folder (PYTHONPATH)")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    data, model, npz = prepare(args.rows)
    mb = os.path.getsize(data) / 1e6
    out_g, out_p = os.path.join(CACHE, "predict_speed_gradreg.csv"), os.path.join(CACHE, "predict_speed_plain.csv")
    gradreg_cmd = [sys.executable, "-m", "gradreg", "predict", model, data, "-o", out_g]
    plain_cmd = [sys.executable, os.path.join(HERE, "baselines", "predict_csv.py"), npz, data, out_p]
    commands = {"plain": (plain_cmd, None), "gradreg": (gradreg_cmd, None)}
    if args.before:
        env = dict(os.environ, PYTHONPATH=os.path.abspath(args.before))
        commands["before"] = ([*gradreg_cmd[:-1], out_g + ".before.csv"], env)
    load = os.getloadavg()[0]
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in commands}
    for _ in range(args.runs):  # alternating, so that all see the same load
        for k, (cmd, env) in commands.items():
            times[k].append(timed(cmd, env))
    a, b = np.loadtxt(out_g, delimiter=",", skiprows=1), np.loadtxt(out_p, delimiter=",", skiprows=1)
    assert np.allclose(a, b, rtol=1e-9, atol=1e-9), "gradreg and the plain script disagree"
    med = {k: float(np.median([w for w, _ in v])) for k, v in times.items()}
    for k, sec in med.items():
        runs = ", ".join(f"{w:.2f}" for w, _ in times[k])
        cpu = float(np.median([c for _, c in times[k]]))
        print(
            f"{k:8s} {mb:.0f} MB in {sec:.2f} s = {mb / sec:.0f} MB/s (median of {args.runs} processes: {runs} s); "
            f"CPU {cpu:.2f} s = {mb / cpu:.0f} MB per CPU-second"
        )
    print(f"gradreg / plain: {med['plain'] / med['gradreg']:.2f}x the plain script's speed")
    print(f"load average (1 min) before {load:.1f}, after {os.getloadavg()[0]:.1f}, on {os.cpu_count()} cores")
    if args.profile:
        import cProfile
        import pstats

        from gradreg.cli import main as cli

        cli(["predict", model, data, "-o", out_g])  # warm
        prof = cProfile.Profile()
        prof.runcall(cli, ["predict", model, data, "-o", out_g])
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
