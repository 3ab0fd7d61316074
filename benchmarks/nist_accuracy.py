"""Correct significant digits (LRE) of the worst coefficient on the NIST StRD linear regression sets.

gradreg (through its CLI's library path) beside numpy lstsq, scikit-learn and statsmodels, in one
run; then the MSE of default gradient descent (float32 and float64) beside the exact optimum's.
Usage: python benchmarks/nist_accuracy.py
"""

from __future__ import annotations

import json
import os
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
NIST = os.path.join(HERE, "..", "tests", "data", "nist")


def lre(est, cert) -> float:
    est, cert = np.asarray(est, float), np.asarray(cert, float)
    with np.errstate(divide="ignore"):
        return float(np.clip(np.min(-np.log10(np.abs(est - cert) / np.abs(cert))), 0, 15))


def main() -> None:
    import statsmodels.api as sm
    from sklearn.linear_model import LinearRegression

    from gradreg.config import TrainConfig
    from gradreg.io import load
    from gradreg.pipeline import train

    cert = json.load(open(os.path.join(NIST, "certified.json")))
    print(f"{'set':10}{'gradreg':>9}{'numpy':>9}{'sklearn':>9}{'statsmodels':>13}")
    for name, c in cert.items():
        if name.startswith("_"):
            continue
        ds = load(os.path.join(NIST, f"{name}.csv"), "y")
        X, y, icpt = ds.X, ds.Y[:, 0], c["intercept"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = train(ds, TrainConfig(solver="exact", fit_intercept=icpt))
            ours = ([m.intercept[0]] if icpt else []) + list(m.coef[0])
            A = np.c_[np.ones(len(X)), X] if icpt else X
            npy = np.linalg.lstsq(A, y, rcond=None)[0]
            sk = LinearRegression(fit_intercept=icpt).fit(X, y)
            skc = ([sk.intercept_] if icpt else []) + list(sk.coef_)
            smc = sm.OLS(y, A).fit().params
        row = [lre(v, c["coef"]) for v in (ours, npy, skc, smc)]
        print(f"{name:10}{row[0]:9.1f}{row[1]:9.1f}{row[2]:9.1f}{row[3]:13.1f}")
    print("\ngradient descent with default settings: its train MSE against the exact optimum's")
    print(f"{'set':10}{'float32':>24}{'float64':>24}")
    for name, c in cert.items():
        if name.startswith("_"):
            continue
        ds = load(os.path.join(NIST, f"{name}.csv"), "y")
        cells = []
        for dtype in ("float32", "float64"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m = train(ds, TrainConfig(fit_intercept=c["intercept"], dtype=dtype))
            o = m.optimum
            if o["optimum_near_zero"]:  # an exact fit: the absolute gap, against the target's scale
                cells.append(f"{o['gap_abs'] / float((ds.Y**2).mean()):+.1e} of mean y²")
            else:
                cells.append(f"{o['gap']:+.4%}")
        print(f"{name:10}{cells[0]:>24}{cells[1]:>24}")


if __name__ == "__main__":
    main()
