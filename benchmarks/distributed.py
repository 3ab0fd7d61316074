"""One process against two on this machine: ``gradreg train`` alone, then ``--nproc 2`` (torchrun's
launcher, gloo), side by side in one run (``make bench-dist``).

Cases (the generator of bench.py: float32 features with unscaled columns, 2 targets)
-----
exact-stream   S1, 5,000,000 x 102 Parquet (2 GB, pyarrow's default row groups of 1,048,576
               rows), ``--solver exact``: larger than the 1 GiB in-memory limit; ``--stream``
               keeps every process count on that path.
exact-memory   the first 1,000,000 rows as Parquet (10 row groups), ``--solver exact``, in memory.
gd-memory      the same, gradient descent, 3 epochs: the median epoch (rank 0's clock covers
               every rank's steps, and the all-reduce of every step).

allreduce      one gloo all-reduce of a 202-float gradient (p = 100, q = 2) between two
               processes: the communication of one gradient-descent step.

Every figure is the wall time of the whole command (start, imports, launcher, reading, fit,
writing the model) unless it says epoch. Both runs of a case must agree: the script prints the
largest relative difference of their coefficients.

Usage: python benchmarks/distributed.py [--procs 1,2] [--stream-rows N] [--memory-rows N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench import CACHE, s1_path  # noqa: E402


def memory_path(rows: int, stream_rows: int) -> str:
    import pyarrow.parquet as pq

    path = os.path.join(CACHE, f"dist_{rows}_of_s1.parquet")
    if not os.path.exists(path):
        import pyarrow as pa

        batches, have = [], 0
        for batch in pq.ParquetFile(s1_path(stream_rows)).iter_batches():  # the first `rows` rows of S1
            batches.append(batch.slice(0, rows - have))
            have += len(batches[-1])
            if have == rows:
                break
        pq.write_table(pa.Table.from_batches(batches), path + ".tmp", row_group_size=100_000)
        os.replace(path + ".tmp", path)
    return path


def run(data: str, nproc: int, extra: list[str], device: str) -> dict:
    from gradreg.fitted import FittedModel

    out = os.path.join(CACHE, f"dist-{nproc}.safetensors")
    cmd = [sys.executable, "-m", "gradreg", "train", data, "--target", "y0,y1", "-q", "-o", out, "--device", device, *extra]
    if nproc > 1:
        cmd += ["--nproc", str(nproc)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    seconds = time.perf_counter() - t0
    m = FittedModel.load(out)
    epochs = [h["seconds"] for h in m.history]
    return {"seconds": seconds, "epoch": float(np.median(epochs)) if epochs else None, "coef": m.coef, "gap": m.optimum["gap"]}


def allreduce_child() -> None:
    """Under torchrun: the time of one gloo all-reduce of a 202-float gradient (p = 100, q = 2)."""
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    t = torch.zeros(202, dtype=torch.float32)
    for _ in range(50):
        dist.all_reduce(t)
    t0 = time.perf_counter()
    for _ in range(500):
        dist.all_reduce(t)
    seconds = (time.perf_counter() - t0) / 500
    if dist.get_rank() == 0:
        print(json.dumps({"allreduce_us": seconds * 1e6}))
    dist.destroy_process_group()


def allreduce_us() -> float:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", __file__, "--allreduce"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout
    return json.loads(out.strip().splitlines()[-1])["allreduce_us"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--allreduce", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--procs", default="1,2", help="process counts to compare, the first the baseline (default: 1,2)")
    ap.add_argument("--stream-rows", type=int, default=5_000_000, help="rows of the streamed Parquet file")
    ap.add_argument("--memory-rows", type=int, default=1_000_000, help="rows of the in-memory case (a multiple of 100,000)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = ap.parse_args()
    if args.allreduce:
        return allreduce_child()
    procs = [int(p) for p in args.procs.split(",")]
    cases = {
        "exact-stream": (s1_path(args.stream_rows), ["--solver", "exact", "--stream"]),
        "exact-memory": (memory_path(args.memory_rows, args.stream_rows), ["--solver", "exact"]),
        "gd-memory": (memory_path(args.memory_rows, args.stream_rows), ["--epochs", "3"]),
    }
    results = {}
    print(f"{'case':<14}" + "".join(f"{f'{n} proc (s)':>14}" for n in procs) + "   speed-ups   coef rel. diff")
    for name, (data, extra) in cases.items():
        runs = {n: run(data, n, extra, args.device) for n in procs}
        base = runs[procs[0]]
        diff = max(
            float(np.max(np.abs(r["coef"] - base["coef"]) / np.maximum(np.abs(base["coef"]), 1e-300))) for r in runs.values()
        )
        for key, label in (("epoch", name + " epoch"), ("seconds", name)) if name.startswith("gd") else (("seconds", name),):
            times = [runs[n][key] for n in procs]
            ups = " ".join(f"{times[0] / t:.2f}x" for t in times[1:])
            print(f"{label:<14}" + "".join(f"{t:>14.2f}" for t in times) + f"   {ups:<11} {diff:.1e}")
        results[name] = {str(n): {k: v for k, v in r.items() if k != "coef"} for n, r in runs.items()}
        results[name]["coef_rel_diff"] = diff
    us = allreduce_us()
    print(f"gloo all-reduce of 202 float32 between 2 processes: {us:.0f} us (mean of 500, after 50 warm-up)")
    results["allreduce_us"] = us
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
