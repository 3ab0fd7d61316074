"""The plain pyarrow + numpy script that ``gradreg predict`` on CSV must keep up with (issue 13).

Reads the CSV with pyarrow (threaded), takes the model's feature columns by name as one float64
matrix, multiplies, and writes the predictions with pyarrow's CSV writer. The harness times the
whole process, start included, and reports MB/s of input.

Usage: python predict_csv.py MODEL.npz IN.csv OUT.csv
MODEL.npz holds features (p,), targets (q,), coef (q, p) and intercept (q,).
Prints one JSON line: seconds (after imports), mb (input), mb_per_s.
"""

import json
import os
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv

t0 = time.perf_counter()
model = np.load(sys.argv[1])
features = [str(f) for f in model["features"]]
table = pcsv.read_csv(sys.argv[2], convert_options=pcsv.ConvertOptions(include_columns=features))
X = np.column_stack([table[f].to_numpy() for f in features])
Yhat = X @ model["coef"].T + model["intercept"]
pcsv.write_csv(pa.table({str(t): Yhat[:, i] for i, t in enumerate(model["targets"])}), sys.argv[3])
seconds = time.perf_counter() - t0
mb = os.path.getsize(sys.argv[2]) / 1e6
print(json.dumps({"seconds": seconds, "mb": mb, "mb_per_s": mb / seconds}))
