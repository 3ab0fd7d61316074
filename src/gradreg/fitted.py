"""A fitted model: coefficients in original units plus everything that explains them.

:func:`train` runs a solver on a :class:`~gradreg.data.Dataset` and returns a
:class:`FittedModel`; ``FittedModel.save``/``load`` move it through a .safetensors file.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import math
import platform
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import persist
from ._version import __version__
from .config import TrainConfig
from .data import Dataset, require_numeric_columns
from .errors import ConfigError, DataError, ModelFileError
from .metrics import MetricsAccumulator

CHUNK_ROWS = 65_536  # rows per block of the exact solver's passes over in-memory data
SHUFFLE_BUFFER = 1 << 18  # rows that streamed gradient descent shuffles together (--shuffle-buffer)

__all__ = ["FittedModel", "train"]

STAT_ARRAYS = ("coef", "std_err", "t", "p", "ci_low", "ci_high")
STAT_SCALARS = ("r2", "r2_adj", "f", "f_p", "df_resid", "df_model", "sigma", "llf", "aic", "bic", "nobs")
TENSORS = ("coef", "intercept", "x_mean", "x_scale", "y_mean", "y_scale")


@dataclass(repr=False)
class FittedModel:
    """A fitted linear model: Ŷ = X coefᵀ + intercept, and everything that explains it.

    Parameters
    ----------
    feature_names : list of str, length n_features
    target_names : list of str, length n_targets
    coef : ndarray of shape (n_targets, n_features)
        In original units, float64.
    intercept : ndarray of shape (n_targets,)
    x_mean, x_scale : ndarray of shape (n_features,)
        The standardization the model trained with (zeros and ones without it).
    y_mean, y_scale : ndarray of shape (n_targets,)
    config : dict
        The :class:`~gradreg.config.TrainConfig` as a dict.
    metrics : dict
        Split (``train``, ``val``) → metric (``mse``, ``rmse``, ``mae``, ``r2``) → list per target.
    optimum : dict
        The exact least-squares objective and solution, and the gap of this fit to it.
    stats : dict of str to dict
        Keyed by target name, in the order of ``target_names`` (the shape ``gradreg inspect
        --json`` prints): ``terms`` (``intercept`` first, then the features), the arrays
        ``coef``, ``std_err``, ``t``, ``p``, ``ci_low``, ``ci_high`` over the terms, and
        ``r2``, ``r2_adj``, ``f``, ``f_p``, ``aic``, ``bic``, … (see
        :func:`gradreg.solvers.exact.statistics`). A list in target order is accepted and keyed.
    history : list of dict
        Per epoch of gradient descent: ``epoch``, ``loss``, ``val_loss``, ``lr``, ``seconds``.
    info : dict
        Versions, data source and fingerprint, rows, device, condition number, and the like.
    warnings : list of str
        For example collinear columns, or a gradient-descent fit that ended far from the optimum.
    schema : dict
        The input the model expects: ``features`` and ``targets`` as lists of ``{"name", "dtype"}``
        in the model's order (dtype as read: ``double``, ``int64``, ``float32``, …), and ``named``
        (False when the model was fitted on arrays without column names: x0, x1, … stand in).
    """

    feature_names: list[str]
    target_names: list[str]
    coef: np.ndarray
    intercept: np.ndarray
    x_mean: np.ndarray  # the model's standardization (zeros/ones without it)
    x_scale: np.ndarray
    y_mean: np.ndarray
    y_scale: np.ndarray
    config: dict[str, Any]
    metrics: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # split → metric → per target
    optimum: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)  # by target name, see solvers.exact.statistics
    history: list[dict] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    schema: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.stats, list):  # solvers return one dict per target, in order
            self.stats = dict(zip(self.target_names, self.stats))
        terms = (["intercept"] if self.config.get("fit_intercept", True) else []) + list(self.feature_names)
        for s in self.stats.values():
            s.setdefault("terms", terms)
        if not self.schema:
            self.schema = make_schema(self.feature_names, self.target_names)

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predict from raw features.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), or a table with named columns
            An array's columns are taken in the order of ``feature_names``. A pandas DataFrame,
            a pyarrow Table or a dict of columns is matched by name: extra columns are ignored,
            and a missing feature column is an error (a model fitted on unnamed arrays refuses
            named input whose names are not its x0, x1, …).

        Returns
        -------
        ndarray of shape (n_samples, n_targets)
            float64.

        Raises
        ------
        DataError
            A missing feature column, or an array of the wrong width.
        """
        X = self._by_name(X)
        if X.dtype not in (np.float32, np.float64):
            X = X.astype(np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise DataError(f"X must have {self.n_features} feature columns; got shape {X.shape}")
        out = np.empty((X.shape[0], len(self.target_names)))
        coef_t = self.coef.T.copy()
        for start in range(0, len(X), CHUNK_ROWS):  # blocks: a float32 X is never copied whole to float64
            block = X[start : start + CHUNK_ROWS]
            np.matmul(block.astype(np.float64, copy=False), coef_t, out=out[start : start + CHUNK_ROWS])
        out += self.intercept
        return out

    def _by_name(self, X: Any) -> np.ndarray:
        """A table's feature columns in the model's order, by name; an array as it is."""
        names = getattr(X, "column_names", None)  # pyarrow.Table
        if names is None and hasattr(X, "columns") and not isinstance(X, np.ndarray):
            names = list(X.columns)  # pandas / polars DataFrame
        if names is None and isinstance(X, dict):
            names = list(X)
        if names is None:
            return np.asarray(X)
        names = [str(n) for n in names]
        lacking = [f for f in self.feature_names if f not in names]
        if lacking:
            raise DataError(
                f"X lacks the model's feature column(s) {', '.join(map(repr, lacking))}; it has {', '.join(map(repr, names))}"
            )
        if hasattr(X, "iloc"):  # pandas: the estimator's check, on the columns the model reads
            require_numeric_columns(X[list(self.feature_names)], "X")

        def column(f: str) -> np.ndarray:
            c = X[f] if not hasattr(X, "column_names") else X.column(f)
            c = c.to_numpy() if hasattr(c, "to_numpy") else np.asarray(c)
            try:
                return np.asarray(c, dtype=np.float64)
            except (TypeError, ValueError):
                raise DataError(f"X, column {f!r}: expected numbers; got dtype {c.dtype}") from None

        cols = [column(f) for f in self.feature_names]
        return np.column_stack(cols) if cols else np.empty((len(X), 0))

    def __repr__(self) -> str:
        solver = self.config.get("solver", "?")
        return (
            f"<FittedModel {solver}: {', '.join(self.target_names)} ~ {', '.join(self.feature_names[:6])}"
            f"{', …' if self.n_features > 6 else ''} ({self.info.get('n_rows', '?')} rows)>"
        )

    def _repr_html_(self) -> str:
        from .display import model_html

        return model_html(self, title=repr(self))

    # -- persistence -------------------------------------------------------------------------
    def save(self, path: str) -> None:
        """Write the model to a ``.safetensors`` file, atomically (a temporary file, then a rename).

        Parameters
        ----------
        path : str or path-like
            Ending in ``.safetensors``.

        Raises
        ------
        ConfigError
            A folder, or another suffix (a ``.pkl`` or ``.joblib`` name would promise a pickle).
        """
        import os

        path = os.fspath(path)
        if os.path.isdir(path):
            raise ConfigError(f"{path}: is a folder; give a file name ending in .safetensors")
        if not str(path).lower().endswith(".safetensors"):
            suffix = os.path.splitext(str(path))[1]
            raise ConfigError(
                f"{path}: a model file's name must end in .safetensors; got {suffix or 'no suffix'!r} "
                "(gradreg writes safetensors, never a pickle)"
            )
        tensors = {k: getattr(self, k) for k in TENSORS}
        stats = [self.stats[t] for t in self.target_names] if self.stats else []
        for name in STAT_ARRAYS[1:]:
            if stats:
                tensors[f"stats.{name}"] = np.array([s[name] for s in stats], dtype=np.float64)
        meta = {
            "feature_names": self.feature_names,
            "target_names": self.target_names,
            "schema": self.schema,
            "config": self.config,
            "metrics": self.metrics,
            "optimum": self.optimum,
            "stats": [{k: _infinite_as_text(s[k]) for k in STAT_SCALARS + ("cov_type", "conf_level") if k in s} for s in stats],
            "history": self.history,
            "info": self.info,
            "warnings": self.warnings,
        }
        persist.save(path, tensors, meta)

    @classmethod
    def load(cls, path: str) -> FittedModel:
        """Read a model file; loading cannot run code (no pickle).

        Parameters
        ----------
        path : str

        Returns
        -------
        FittedModel

        Raises
        ------
        ModelFileError
            A missing, truncated or corrupted file, an unknown format version, or tensors whose
            shapes do not match the names in the metadata.
        """
        tensors, meta = persist.load(path)
        try:
            features = [str(f) for f in meta["feature_names"]]
            targets = [str(t) for t in meta["target_names"]]
        except (KeyError, TypeError):
            raise ModelFileError(f"{path}: model metadata lacks feature_names/target_names") from None
        p, q = len(features), len(targets)
        has_intercept = bool((meta.get("config") or {}).get("fit_intercept", True))
        k = p + int(has_intercept)
        expected = {"coef": (q, p), "intercept": (q,), "x_mean": (p,), "x_scale": (p,), "y_mean": (q,), "y_scale": (q,)}
        expected.update({f"stats.{n}": (q, k) for n in STAT_ARRAYS[1:]})
        extra = sorted(set(tensors) - set(expected))
        if extra:
            raise ModelFileError(f"{path}: unexpected tensor {extra[0]!r} in model file")
        for name, shape in expected.items():
            if name in tensors and tensors[name].shape != shape:
                raise ModelFileError(
                    f"{path}: tensor {name!r} has shape {list(tensors[name].shape)}; the metadata implies {list(shape)}"
                )
        missing = [n for n in TENSORS if n not in tensors]
        if missing:
            raise ModelFileError(f"{path}: model file lacks tensor(s) {', '.join(missing)}")
        stats = []
        raw_stats = meta.get("stats") or []
        if raw_stats:
            if len(raw_stats) != q or any(f"stats.{n}" not in tensors for n in STAT_ARRAYS[1:]):
                raise ModelFileError(f"{path}: statistics do not match the {q} target(s)")
            for t, s in enumerate(raw_stats):
                entry = {k: (np.nan if v is None else _text_as_infinite(v)) for k, v in s.items()}
                entry["coef"] = (
                    np.concatenate([[tensors["intercept"][t]], tensors["coef"][t]]) if has_intercept else tensors["coef"][t]
                )
                for n in STAT_ARRAYS[1:]:
                    entry[n] = tensors[f"stats.{n}"][t]
                stats.append(entry)
        return cls(
            feature_names=features,
            target_names=targets,
            coef=tensors["coef"],
            intercept=tensors["intercept"],
            x_mean=tensors["x_mean"],
            x_scale=tensors["x_scale"],
            y_mean=tensors["y_mean"],
            y_scale=tensors["y_scale"],
            config=meta.get("config") or {},
            metrics=meta.get("metrics") or {},
            optimum=meta.get("optimum") or {},
            stats=stats,
            history=meta.get("history") or [],
            info=meta.get("info") or {},
            warnings=meta.get("warnings") or [],
            schema=_read_schema(meta.get("schema"), features, targets, meta.get("info") or {}, path),
        )

    def to_json(self) -> dict[str, Any]:
        """The model as JSON-ready data: what ``gradreg inspect --json`` prints (NaN is None).

        Returns
        -------
        dict
        """
        out: dict[str, Any] = {
            "features": self.feature_names,
            "targets": self.target_names,
            "coef": self.coef.tolist(),
            "intercept": self.intercept.tolist(),
            "metrics": self.metrics,
            "optimum": self.optimum,
            "config": self.config,
            "info": self.info,
            "warnings": self.warnings,
            "schema": self.schema,
        }
        if self.stats:  # the same shape as self.stats; ±inf (an exact fit's t, F) as "inf"/"-inf"
            out["stats"] = {t: {k: _infinite_as_text(v) for k, v in self.stats[t].items()} for t in self.target_names}
        return persist.jsonable(out)


def make_schema(
    feature_names: list[str], target_names: list[str], dtypes: dict[str, str] | None = None, named: bool = True
) -> dict[str, Any]:
    """The input schema a model file carries: names and order, dtypes as read, and whether the
    names are real column names.

    Parameters
    ----------
    feature_names, target_names : list of str
    dtypes : dict of str to str, optional
        Column name → type as read (``"double"``, ``"int64"``, ``"float32"``…); ``"float64"`` if absent.
    named : bool
        False when x0, x1, … stand in for an array's columns.

    Returns
    -------
    dict
    """
    dtypes = dtypes or {}
    return {
        "features": [{"name": f, "dtype": dtypes.get(f, "float64")} for f in feature_names],
        "targets": [{"name": t, "dtype": dtypes.get(t, "float64")} for t in target_names],
        "named": bool(named),
    }


def _read_schema(raw: Any, features: list[str], targets: list[str], info: dict, path: str) -> dict[str, Any]:
    """The schema of a model file, checked against its feature and target names (files written
    before the schema existed get one from those names)."""
    if raw is None:
        return make_schema(features, targets, named=info.get("named_features", True))
    try:
        names = [str(c["name"]) for c in raw["features"]], [str(c["name"]) for c in raw["targets"]]
    except (KeyError, TypeError):
        raise ModelFileError(f"{path}: model schema lacks feature/target names") from None
    if names != (features, targets):
        raise ModelFileError(f"{path}: the model's schema does not match its feature and target names")
    return raw


def _infinite_as_text(v: Any) -> Any:
    """±inf as "inf"/"-inf" (JSON has no infinity; an exact fit's F and t are infinite)."""
    if isinstance(v, (float, np.floating)) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if isinstance(v, np.ndarray) and v.dtype.kind == "f" and np.isinf(v).any():
        return [_infinite_as_text(x) for x in v.tolist()]
    return v


def _text_as_infinite(v: Any) -> Any:
    return {"inf": math.inf, "-inf": -math.inf}.get(v, v) if isinstance(v, str) else v


class Fingerprint:
    """A digest of training data fed chunk by chunk: the CRC-32 and byte count of the values of X,
    Y and w (each as held, float32 or float64, without a converted copy), then sha256 of those
    with the column names and dtypes. Each CRC continues across chunks, so the digest does not
    depend on how the rows were cut into chunks: in memory and streamed agree.

    It tells the same data from other data (reproducibility, checkpoints); it is no defence
    against data forged to collide. CRC-32 reads 400 MB in 0.1 s here, sha256 in 0.25 s.
    """

    def __init__(self) -> None:
        self.crcs = [0, 0, 0]
        self.sizes = [0, 0, 0]

    def add(self, X: np.ndarray, Y: np.ndarray, w: np.ndarray | None) -> None:
        """Hash the next chunk of rows.

        Parameters
        ----------
        X : ndarray of shape (n, n_features)
        Y : ndarray of shape (n, n_targets)
        w : ndarray of shape (n,) or None
        """
        for i, part in enumerate((X, Y, w)):
            if part is not None and part.size:  # an empty chunk (or rank) adds no bytes
                data = memoryview(np.ascontiguousarray(part)).cast("B")
                self.crcs[i] = zlib.crc32(data, self.crcs[i])
                self.sizes[i] += data.nbytes

    def hexdigest(self, feature_names: list[str], target_names: list[str], dtypes: list[str] | None, comm=None) -> str:
        """The digest of everything added, with the column names and dtypes.

        Parameters
        ----------
        feature_names, target_names : list of str
        dtypes : list of str
            The dtypes of X, Y (and w); None on a rank that read no rows.
        comm : gradreg.distributed.Comm, optional
            Combine every rank's digests, in rank order.

        Returns
        -------
        str
            64 hex digits.
        """
        h = hashlib.sha256()
        digests = b"".join(struct.pack("<IQ", c, n) for c, n in zip(self.crcs, self.sizes))
        if comm is None:
            h.update(digests)
        else:
            for rank_digests in comm.gather(np.frombuffer(digests, dtype=np.uint8)):
                h.update(rank_digests.tobytes())
            # the dtypes of the first rank that read rows (a rank without rows has none)
            flags = comm.gather(np.array([dtypes is not None], dtype=np.uint8))
            src = next((r for r, f in enumerate(flags) if f[0]), 0)
            dtypes = comm.broadcast_bytes("\0".join(dtypes or []).encode(), src).decode().split("\0")
        h.update("\0".join(feature_names + ["|"] + target_names + ["|"] + list(dtypes or [])).encode())
        return h.hexdigest()


def fingerprint(ds: Dataset, comm=None) -> str:
    """The :class:`Fingerprint` of the training arrays (values, names, weights): the same table gives
    the same hash. Distributed, of every rank's digest in rank order (so it depends on the number of
    ranks)."""
    fp = Fingerprint()
    fp.add(ds.X, ds.Y, ds.sample_weight)
    parts = [ds.X, ds.Y] + ([ds.sample_weight] if ds.sample_weight is not None else [])
    return fp.hexdigest(ds.feature_names, ds.target_names, [p.dtype.str for p in parts], comm)


def _split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, val) row indices; val takes round(n·fraction) rows, at least one."""
    if fraction <= 0:
        return np.arange(n), np.arange(0)
    import torch

    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1)).numpy()
    n_val = max(1, int(round(n * fraction)))
    if n - n_val < 2:
        raise DataError(f"{{val_fraction=}} leaves {n - n_val} training row(s); at least 2 are needed", val_fraction=fraction)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def train(
    ds: Dataset,
    cfg: TrainConfig,
    *,
    on_epoch: Callable[[dict], None] | None = None,
    shuffle_buffer: int = SHUFFLE_BUFFER,
    checkpoint_dir: str | None = None,
    checkpoint_every: int = 1,
    resume: bool | str = False,
    comm=None,
) -> FittedModel:
    """Fit a dataset: the exact optimum always, gradient descent when asked, then metrics and statistics.

    Parameters
    ----------
    ds : Dataset
        X of shape (n_rows, n_features), Y of shape (n_rows, n_targets).
    cfg : TrainConfig
    on_epoch : callable, optional
        Called with each epoch's record (``epoch``, ``loss``, ``val_loss``, ``rows_per_s``, …).
    shuffle_buffer : int
        For a :class:`~gradreg.stream.StreamingDataset`: rows shuffled together by gradient descent.
    checkpoint_dir : str, optional
        Save gradient descent's state there every ``checkpoint_every`` epochs.
    checkpoint_every : int
    resume : bool or "auto"
        Continue from the checkpoint in ``checkpoint_dir`` (same data and settings); "auto"
        resumes when there is one (a job that torchrun restarted).
    comm : gradreg.distributed.Comm, optional
        ``ds`` is this rank's shard of the rows (in rank order): every rank takes part, and
        every rank returns the same model (see :mod:`gradreg.distributed`).

    Returns
    -------
    FittedModel

    Raises
    ------
    DivergenceError
        When gradient descent's loss becomes NaN/inf or grows 1000-fold.
    """

    from .solvers import exact
    from .solvers.gd import fit_gd

    cfg.validate()
    if resume and not checkpoint_dir:
        raise ConfigError("{resume} needs {checkpoint_dir} (the folder of the checkpoint)", resume=resume, checkpoint_dir=None)
    ckpt = {"folder": checkpoint_dir, "every": checkpoint_every, "resume": resume} if checkpoint_dir else None
    if not isinstance(ds, Dataset):  # a StreamingDataset: chunks read again for every pass
        return _train_stream(ds, cfg, on_epoch, shuffle_buffer, ckpt, comm)
    from .config import resolve_device

    device = resolve_device(cfg.device)
    n_here = len(ds.X)
    n_all, first = (n_here, 0) if comm is None else comm.offsets(n_here)  # rows on all ranks, on lower ranks
    tr, va = _split(n_all, cfg.val_fraction, cfg.seed)  # the single-process split of all rows
    n_train, n_val = len(tr), len(va)
    train_first = int(np.searchsorted(tr, first))  # training rows on lower ranks
    if comm is not None:  # this rank's rows of each
        tr = tr[(tr >= first) & (tr < first + n_here)] - first
        va = va[(va >= first) & (va < first + n_here)] - first
    if n_val:
        X, Y = ds.X[tr], ds.Y[tr]
        w = ds.sample_weight[tr] if ds.sample_weight is not None else None
    else:  # no copies of (possibly very large) arrays
        X, Y, w = ds.X, ds.Y, ds.sample_weight
    if n_all < 2:
        raise DataError(f"{ds.source}: need at least 2 rows; got {n_all}")
    if w is not None and not _any_rank(comm, bool((w > 0).any())):
        raise DataError(f"{ds.source}: all training weights are zero")

    def chunks():
        for start in range(0, len(X), CHUNK_ROWS):  # views, processed in cache-sized float64 blocks
            stop = start + CHUNK_ROWS
            yield X[start:stop], Y[start:stop], None if w is None else w[start:stop]

    p, q = X.shape[1], Y.shape[1]
    fp = Fingerprint() if not n_val else None  # without a split, the first pass reads every row: it hashes them
    first = exact.first_pass(
        chunks(),
        fit_intercept=cfg.fit_intercept,
        device=device,
        comm=comm,
        width=p + q,
        observe=fp.add if fp else None,
        float32=cfg.l2 == 0,
    )
    check_magnitudes(first.peak, list(ds.feature_names) + list(ds.target_names), ds.source, cfg, None if comm else ds.largest)
    opt_sol, factor = exact.fit_exact(
        chunks, p, fit_intercept=cfg.fit_intercept, l2=cfg.l2, device=device, comm=comm, n_targets=q, first=first
    )
    warn = _rank_warnings(opt_sol, ds.feature_names, speak=comm is None or comm.rank == 0)
    dtypes = [a.dtype.str for a in (ds.X, ds.Y, ds.sample_weight) if a is not None]
    sha = fp.hexdigest(ds.feature_names, ds.target_names, dtypes, comm) if fp else fingerprint(ds, comm)
    info = _info(ds.source, sha, n_all, n_train, n_val, device, opt_sol, ds.notices, comm)
    res = None
    if cfg.solver == "gd":
        with_val = len(va) > 0 or comm is not None  # distributed, a rank without validation rows still takes part
        res = fit_gd(
            X,
            Y,
            w,
            cfg,
            X_val=ds.X[va] if with_val else None,
            Y_val=ds.Y[va] if with_val else None,
            w_val=ds.sample_weight[va] if (with_val and ds.sample_weight is not None) else None,
            on_epoch=on_epoch,
            checkpoint=_checkpoint(ckpt, cfg, info["data_sha256"]),
            comm=comm,
            n_total=n_train,
            offset=train_first,
            **_gd_hints(factor, p, precondition=True),
        )

    def val_metrics(coef, intercept):
        if not n_val:
            return None
        acc = MetricsAccumulator(q)
        Xv, Yv = ds.X[va], ds.Y[va]
        acc.add(Yv, Yv - (Xv @ coef.T + intercept), ds.sample_weight[va] if ds.sample_weight is not None else None)
        if comm is not None:
            acc.merge_ranks(comm)
        return {k: v.tolist() for k, v in acc.result().items()}

    model = _finish(
        cfg, device, ds.feature_names, ds.target_names, opt_sol, chunks, res, val_metrics, info, warn, comm, ds.dtypes
    )
    model._factor = factor  # not saved: LinearRegressor.partial_fit can merge more rows into it
    return model


def _any_rank(comm, flag: bool) -> bool:
    """``flag`` on any rank."""
    return flag if comm is None else bool(comm.max([float(flag)])[0])


def _rank_warnings(sol, feature_names: list[str], speak: bool = True) -> list[str]:
    """warn_rank's messages (collinear columns), issued as a RankWarning only when ``speak``
    (distributed: rank 0 alone)."""
    import warnings as _w

    from .solvers import exact

    with _w.catch_warnings():
        if not speak:
            _w.simplefilter("ignore", exact.RankWarning)
        return exact.warn_rank(sol, feature_names)


def stop_reason(config: dict[str, Any], info: dict[str, Any], history: list[dict]) -> str | None:
    """Why gradient descent stopped before its last epoch, in one line; None when it ran them all.

    Parameters
    ----------
    config : dict
        The model's :class:`~gradreg.config.TrainConfig` as a dict (``epochs``, ``early_stopping``).
    info : dict
        With ``stopped_early``, ``epochs_run`` and ``best_epoch``.
    history : list of dict
        Per epoch; a ``val_loss`` in it means early stopping watched the validation loss.

    Returns
    -------
    str or None
    """
    if not info.get("stopped_early"):
        return None
    # the loop watches the validation loss when there is one, else the training loss
    watched = "validation loss" if history and "val_loss" in history[-1] else "training loss (there is no validation split)"
    return (
        f"stopped early at epoch {info.get('epochs_run', len(history))} of {config.get('epochs')}: the {watched} "
        f"did not improve for {config.get('early_stopping')} epochs (best at epoch {info.get('best_epoch')}; its weights are kept)"
    )


def _finish(
    cfg, device, feature_names, target_names, opt_sol, chunks, res, val_metrics, info, warn, comm=None, dtypes=None
) -> FittedModel:
    """After the solvers: the residual pass, statistics, metrics and the gap, as a FittedModel."""
    from .solvers import exact

    q = len(target_names)
    history: list[dict] = []
    if res is not None:
        coef_t, icpt_t = res.model.original_units()
        coef, intercept = coef_t.cpu().numpy(), icpt_t.cpu().numpy()
        scaling = [
            b.detach().double().cpu().numpy() for b in (res.model.x_mean, res.model.x_scale, res.model.y_mean, res.model.y_scale)
        ]
        history = res.history
        info.update(
            lr=res.lr,
            batch_size=res.batch_size,
            epochs_run=len(res.history),
            best_epoch=res.best_epoch,
            stopped_early=res.stopped_early,
        )
        info["stop_reason"] = stop_reason(cfg.to_dict(), info, history)
        if res.resumed_from is not None:
            info["resumed_from_epoch"] = res.resumed_from
        sol = exact.ExactSolution(**{**opt_sol.__dict__, "coef": coef, "intercept": intercept})
    else:
        sol = opt_sol
        coef, intercept = sol.coef, sol.intercept
        scaling = [sol.x_mean, np.where(sol.x_std > 0, sol.x_std, 1.0), np.zeros(q), np.ones(q)]
    acc = MetricsAccumulator(q)
    # gradient descent: the optimum's own RSS, from the data as well, in the same pass
    reference = opt_sol if sol is not opt_sol else None
    rss, meat = exact.residual_pass(sol, chunks, cfg.cov_type, device=device, metrics=acc, reference=reference, comm=comm)
    sol.rss = rss
    optimum_obj = opt_sol.objective()
    stats = exact.statistics(sol, cov_type=cfg.cov_type, conf_level=cfg.conf_level, meat=meat)
    objective = sol.objective()
    metrics = {"train": {k: v.tolist() for k, v in acc.result().items()}}
    val = val_metrics(coef, intercept)
    if val is not None:
        metrics["val"] = val
    optimum = {
        "objective": optimum_obj.tolist(),
        "mean_objective": float(optimum_obj.mean()),
        "train_objective": objective.tolist(),
        "mean_train_objective": float(objective.mean()),
        **gap_to_optimum(float(objective.mean()), float(optimum_obj.mean()), _mean_square(opt_sol)),
        "coef": opt_sol.coef.tolist(),
        "intercept": opt_sol.intercept.tolist(),
        "kind": "ridge objective" if cfg.l2 > 0 else "MSE",
    }
    if res is not None:
        info["converged"] = optimum["within_tolerance"]
        if not optimum["within_tolerance"]:
            message = _convergence_message(cfg, optimum, res, opt_sol)
            warn = [*warn, message]
            if comm is None or comm.rank == 0:  # distributed, rank 0 alone speaks
                from .errors import warn_user

                warning = _convergence_warning()(message)
                warning.cli = _convergence_message(cfg, optimum, res, opt_sol, cli=True)  # the CLI's words
                warn_user(warning)
    return FittedModel(
        feature_names=list(feature_names),
        target_names=list(target_names),
        coef=coef,
        intercept=intercept,
        x_mean=scaling[0],
        x_scale=scaling[1],
        y_mean=scaling[2],
        y_scale=scaling[3],
        config=cfg.to_dict(),
        metrics=metrics,
        optimum=optimum,
        stats=stats,
        history=history,
        info=info,
        warnings=warn,
        schema=make_schema(list(feature_names), list(target_names), dtypes),
    )


GAP_TOLERANCE = 0.01  # a gradient-descent fit more than 1% above the exact optimum has not converged
# Below this fraction of the target's mean square the optimum counts as 0 (an exact fit): the
# relative gap is then meaningless, and the absolute one is judged instead. Float32 descent ends
# about 1e-14 of it above an exact fit; 1e-10 leaves room without hiding a real gap.
NEAR_ZERO = 1e-10


def gap_to_optimum(objective: float, optimum: float, y_square: float) -> dict[str, Any]:
    """How far a fit's objective is above the exact optimum, and whether that is within tolerance.

    Parameters
    ----------
    objective, optimum : float
        Mean over targets of the fit's and the optimum's objective (MSE, + ridge penalty).
    y_square : float
        Mean over targets of the target's (weighted) mean square: the scale against which an
        optimum of about 0 is judged.

    Returns
    -------
    dict
        ``gap`` (relative; NaN when the optimum is about 0), ``gap_abs``, ``optimum_near_zero``
        and ``within_tolerance`` (gap ≤ 1%, or an absolute gap ≤ 1e-10 of ``y_square`` when the
        optimum is about 0).
    """
    excess = objective - optimum
    floor = NEAR_ZERO * max(y_square, 0.0)
    near_zero = optimum <= floor
    gap = math.nan if near_zero else excess / optimum
    within = excess <= floor if near_zero else excess <= GAP_TOLERANCE * optimum + floor
    return {"gap": gap, "gap_abs": excess, "optimum_near_zero": bool(near_zero), "within_tolerance": bool(within)}


def _mean_square(sol) -> float:
    """Mean over targets of the weighted mean square of the target (about 0, offset included)."""
    ss = sol.tss + (sol.sum_w * sol.y_mean**2 if sol.fit_intercept and sol.y_mean is not None else 0.0)
    return float((ss / sol.sum_w).mean())


def _convergence_warning() -> type:
    """scikit-learn's ConvergenceWarning (imported only when needed: it costs the CLI's start)."""
    from sklearn.exceptions import ConvergenceWarning

    return ConvergenceWarning


def _convergence_message(cfg: TrainConfig, optimum: dict, res, opt_sol, cli: bool = False) -> str:
    """The warning for a gradient-descent fit that ended short of the optimum, with its remedies,
    naming options as Python arguments (``epochs=``) or, with ``cli``, as flags (``--epochs``)."""
    kind = "MSE" if cfg.l2 == 0 else "objective"
    ours, best = optimum["mean_train_objective"], optimum["mean_objective"]
    if optimum["optimum_near_zero"]:
        how = f"{kind} {ours:.4g} where the exact fit has {best:.3g} (about 0)"
    else:
        ratio = ours / best
        times = f"{ratio:,.0f}×" if ratio >= 100 else f"{ratio:.3g}×"
        above = f"{times} the" if optimum["gap"] >= 1 else f"{optimum['gap']:+.1%} above the"
        how = f"{kind} {ours:.6g}, {above} exact optimum {best:.6g}"

    def say(flag: str, argument: str) -> str:
        return flag if cli else argument

    remedies = []
    if not cfg.standardize:
        remedies.append(f"{say('drop --no-standardize', 'set standardize=True')} (standardized, whitened features converge)")
    if cfg.lr is not None:
        remedies.append(f"{say('leave out --lr', 'set lr=None')} (now {cfg.lr:g}) for the automatic learning rate")
    if cfg.optimizer == "adam":
        remedies.append(f"use the default optimizer ({say('--optimizer sgd', 'optimizer=' + repr('sgd'))})")
    if res.stopped_early:
        remedies.append(f"raise {say('--early-stopping', 'early_stopping')}")
    if cfg.dtype == "float32" and opt_sol.condition_number > 1e5:
        remedies.append(
            f"use {say('--dtype float64', 'dtype=' + repr('float64'))}: float32 cannot hold this design well "
            f"(condition number {opt_sol.condition_number:.2g})"
        )
    remedies.append(
        f"train longer ({say('--epochs', 'epochs=')}), or take the exact solution "
        f"({say('--solver exact', 'solver=' + repr('exact'))})"
    )
    return f"gradient descent did not converge: train {how}; " + "; or ".join(remedies)


def _info(source, sha, n_rows, n_train, n_val, device, opt_sol, notices, comm=None) -> dict[str, Any]:
    import torch

    extra = {} if comm is None else {"world_size": comm.world, "backend": comm.backend}
    return {
        **extra,
        "gradreg_version": __version__,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source": source,
        "data_sha256": sha,
        "n_rows": int(n_rows),
        "n_train": int(n_train),
        "n_val": int(n_val),
        "device": str(device),
        "condition_number": opt_sol.condition_number,
        "rank": opt_sol.rank,
        "notices": notices,
    }


def _checkpoint(ckpt: dict | None, cfg: TrainConfig, sha: str):
    """The Checkpoint for these settings and data, or None."""
    if ckpt is None:
        return None
    from .checkpoint import Checkpoint

    return Checkpoint(ckpt["folder"], every=ckpt["every"], resume=ckpt["resume"], identity={"config": cfg.to_dict(), "data": sha})


def _train_stream(sds, cfg: TrainConfig, on_epoch, shuffle_buffer: int, ckpt: dict | None = None, comm=None) -> FittedModel:
    """:func:`train` for a StreamingDataset: every pass reads the chunks again; memory stays bounded."""
    import zlib

    from .config import resolve_device
    from .solvers import exact
    from .solvers.gd import fit_gd_stream

    device = resolve_device(cfg.device)
    frac = cfg.val_fraction
    p, q = sds.n_features, len(sds.target_names)

    def split(units=None, part="train", held_out=None):
        # A seeded mask per chunk, keyed by file and first row: the same rows every pass and epoch.
        for key, (X, Y, w) in sds.keyed_chunks(units):
            if frac > 0:
                mask = np.random.default_rng([cfg.seed, zlib.crc32(key[0].encode()), *key[1:]]).random(len(X)) < frac
                if held_out is not None:
                    held_out["n_val"] += int(mask.sum())
                keep = mask if part == "val" else ~mask
                X, Y, w = X[keep], Y[keep], None if w is None else w[keep]
            elif part == "val":
                continue
            yield X, Y, w

    seen = {"n": 0, "n_val": 0, "lo": None, "hi": None, "y_peak": 0.0, "w_max": 0.0, "dtypes": None}
    digest = Fingerprint()
    calls = [0]

    def first_pass():
        for X, Y, w in split(held_out=seen):
            digest.add(X, Y, w)
            if len(X):
                seen["dtypes"] = [a.dtype.str for a in (X, Y, w) if a is not None]
                lo, hi = X.min(axis=0), X.max(axis=0)
                seen["lo"] = lo if seen["lo"] is None else np.minimum(seen["lo"], lo)
                seen["hi"] = hi if seen["hi"] is None else np.maximum(seen["hi"], hi)
                y_peak = np.abs(Y).max(axis=0)
                seen["y_peak"] = np.maximum(seen["y_peak"], y_peak)
                big = np.concatenate([np.maximum(np.abs(lo), np.abs(hi)), y_peak])
                if big.max() > SQUARE_SAFE[1]:  # now: the fit of this pass would fail on its squares
                    names = list(sds.feature_names) + list(sds.target_names)
                    check_magnitudes(
                        np.where(big > SQUARE_SAFE[1], big, 0), names, sds.source, cfg, None if comm else sds.largest
                    )
                if w is not None:
                    seen["w_max"] = max(seen["w_max"], float(w.max()))
            seen["n"] += len(X)
            yield X, Y, w

    def chunks():
        calls[0] += 1
        return first_pass() if calls[0] == 1 else split()

    opt_sol, factor = exact.fit_exact(
        chunks, p, fit_intercept=cfg.fit_intercept, l2=cfg.l2, device=device, comm=comm, n_targets=q
    )
    n_here = seen["n"]
    n, n_val = n_here, seen["n_val"]  # counted in the first pass
    if seen["lo"] is None:  # a rank whose shard holds no rows
        seen["lo"], seen["hi"] = np.full(p, np.inf), np.full(p, -np.inf)
        seen["y_peak"] = np.zeros(q)
    if comm is not None:
        counts = comm.counts(n_here)
        n, n_val = sum(counts), int(comm.sum([n_val])[0])
        seen["lo"], seen["hi"] = -comm.max(-seen["lo"]), comm.max(seen["hi"])
        seen["y_peak"], seen["w_max"] = comm.max(seen["y_peak"]), float(comm.max([seen["w_max"]])[0])
    if n < 2:
        raise DataError(f"{sds.source}: need at least 2 training rows; got {n}")
    check_magnitudes(
        np.concatenate([np.maximum(np.abs(seen["lo"]), np.abs(seen["hi"])), seen["y_peak"]]),
        list(sds.feature_names) + list(sds.target_names),
        sds.source,
        cfg,
    )
    if factor.sum_w <= 0:
        raise DataError(f"{sds.source}: all training weights are zero")
    warn = _rank_warnings(opt_sol, sds.feature_names, speak=comm is None or comm.rank == 0)
    sha = digest.hexdigest(sds.feature_names, sds.target_names, seen["dtypes"], comm)
    info = _info(sds.source, sha, n + n_val, n, n_val, device, opt_sol, sds.notices, comm)
    info["streamed"] = True
    info["chunk_rows"] = sds.stream.chunk_rows
    res = None
    if cfg.solver == "gd":
        whiten = cfg.standardize and cfg.l2 == 0
        hints = _gd_hints(factor, p, precondition=whiten)
        xm, xs = hints["moments"][0], hints["moments"][1]
        dev = np.maximum((seen["hi"] - xm) ** 2, (seen["lo"] - xm) ** 2) / xs**2
        w_mean = factor.sum_w / n
        w_ratio = seen["w_max"] / w_mean if seen["w_max"] else 1.0
        one = 1.0 if cfg.fit_intercept else 0.0
        row_max = (float(dev.sum()) + one) * w_ratio
        if "precondition" in hints:
            # Whitened rows u = z P: ‖u‖² ≤ ‖z‖² ‖P‖², and a row's leverage wᵢ‖uᵢ‖²/Σw is at most 1,
            # so with weights of mean 1, wᵢ‖uᵢ‖² ≤ n. The smaller bound sets a stable step.
            P = hints["precondition"]
            p_norm2 = float(np.linalg.norm(P, 2) ** 2) if P.size else 0.0
            row_max = min((float(dev.sum()) * p_norm2 + one) * w_ratio, n + one * w_ratio)
            hints["gram_max_eig"] = 1.0
        units = sds.units()

        def epoch_chunks(epoch: int):
            order = np.random.default_rng([cfg.seed, epoch]).permutation(len(units))
            return split([units[i] for i in order])

        res = fit_gd_stream(
            epoch_chunks,
            n,
            cfg,
            moments=hints["moments"],
            gram_max_eig=hints["gram_max_eig"],
            row_norm_max=row_max,
            sum_w=factor.sum_w,
            precondition=hints.get("precondition"),
            val_chunks=(lambda: split(part="val")) if frac > 0 else None,
            on_epoch=on_epoch,
            shuffle_buffer=shuffle_buffer,
            checkpoint=_checkpoint(ckpt, cfg, info["data_sha256"]),
            comm=comm,
            counts=None if comm is None else counts,
        )

    def val_metrics(coef, intercept):
        if frac <= 0:
            return None
        acc = MetricsAccumulator(q)
        for X, Y, w in split(part="val"):
            acc.add(Y, Y - (X @ coef.T + intercept), w)
        if comm is not None:
            acc.merge_ranks(comm)
        return {k: v.tolist() for k, v in acc.result().items()}

    return _finish(cfg, device, sds.feature_names, sds.target_names, opt_sol, split, res, val_metrics, info, warn, comm)


def from_factor(factor, feature_names: list[str], target_names: list[str], cfg: TrainConfig) -> FittedModel:
    """The exact model of everything merged into ``factor`` (``partial_fit``): no data pass.

    The RSS comes from the factor, so the metrics are MSE, RMSE and R² (MAE would need the rows
    again and is NaN) and the statistics are the nonrobust ones.

    Parameters
    ----------
    factor : Factor
    feature_names : list of str
    target_names : list of str
    cfg : TrainConfig

    Returns
    -------
    FittedModel
    """
    from .solvers import exact

    p, q = len(feature_names), len(target_names)
    with np.errstate(all="ignore"):
        sol = exact.solve(factor, p, l2=cfg.l2)
    warn = _rank_warnings(sol, feature_names, speak=False)
    stats = exact.statistics(sol, cov_type="nonrobust", conf_level=cfg.conf_level) if factor.n_rows > p + 1 else []
    mse = sol.rss / sol.sum_w
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(sol.tss > 0, 1 - sol.rss / sol.tss, np.nan) if cfg.fit_intercept else np.full(q, np.nan)
    obj = sol.objective()
    model = FittedModel(
        feature_names=list(feature_names),
        target_names=list(target_names),
        coef=sol.coef,
        intercept=sol.intercept,
        x_mean=sol.x_mean,
        x_scale=np.where(sol.x_std > 0, sol.x_std, 1.0),
        y_mean=np.zeros(q),
        y_scale=np.ones(q),
        config=cfg.to_dict(),
        metrics={"train": {"mse": mse.tolist(), "rmse": np.sqrt(mse).tolist(), "mae": [math.nan] * q, "r2": r2.tolist()}},
        optimum={
            "objective": obj.tolist(),
            "mean_objective": float(obj.mean()),
            "train_objective": obj.tolist(),
            "mean_train_objective": float(obj.mean()),
            "gap": 0.0,
            "coef": sol.coef.tolist(),
            "intercept": sol.intercept.tolist(),
            "kind": "ridge objective" if cfg.l2 > 0 else "MSE",
        },
        stats=stats,
        info={
            "gradreg_version": __version__,
            "source": "<partial_fit>",
            "n_rows": int(factor.n_rows),
            "n_train": int(factor.n_rows),
            "n_val": 0,
            "condition_number": sol.condition_number,
            "rank": sol.rank,
            "incremental": True,
        },
        warnings=warn,
    )
    model._factor = factor  # not saved: partial_fit merges the next batch into it
    return model


def from_incremental(inc, feature_names: list[str], target_names: list[str], cfg: TrainConfig) -> FittedModel:
    """The current model of an :class:`~gradreg.solvers.gd.IncrementalGD` (``partial_fit``).

    Parameters
    ----------
    inc : IncrementalGD
    feature_names : list of str
    target_names : list of str
    cfg : TrainConfig

    Returns
    -------
    FittedModel
        Coefficients and history; no statistics (they need every row again: use ``fit``).
    """
    coef, intercept = (t.cpu().numpy() for t in inc.model.original_units())
    return FittedModel(
        feature_names=list(feature_names),
        target_names=list(target_names),
        coef=coef,
        intercept=intercept,
        x_mean=np.asarray(inc.xm, dtype=np.float64),
        x_scale=np.asarray(inc.xs, dtype=np.float64),
        y_mean=np.asarray(inc.ym, dtype=np.float64),
        y_scale=np.asarray(inc.ys, dtype=np.float64),
        config=cfg.to_dict(),
        history=list(inc.history),
        info={
            "gradreg_version": __version__,
            "source": "<partial_fit>",
            "lr": inc.lr,
            "batch_size": inc.B,
            "epochs_run": len(inc.history),
            "incremental": True,
        },
    )


SQUARE_SAFE = (1e-150, 1e150)  # column magnitudes whose squares stay normal float64 numbers


def check_magnitudes(
    peak: np.ndarray, names: list[str], source: str, cfg: TrainConfig, largest: Callable[[int], tuple[str, float]] | None = None
) -> None:
    """Refuse columns whose squares leave float64 (or float32, where gradient descent squares raw
    values), instead of returning a silently wrong fit.

    Parameters
    ----------
    peak : ndarray of shape (n_columns,)
        The largest |value| of each feature and target column.
    names : list of str
    source : str
    cfg : TrainConfig
    largest : callable, optional
        Column index to (where its largest magnitude is, that value): ``("data.csv, line 7,
        column 'x'", 1e200)``; the message then names that cell (an outlier, often).

    Raises
    ------
    DataError
        Naming the column, its magnitude and the factor that would bring it into range.
    """
    lo, hi = SQUARE_SAFE
    peak = np.asarray(peak, dtype=np.float64)  # float32 data: compare in float64 (1e150 is not a float32)
    for j, (name, m) in enumerate(zip(names, peak)):
        if m > hi and largest is not None:
            place, v = largest(j)
            raise DataError(
                f"{place}: {v:.3g} overflows float64 when squared (the limit is {hi:.0e}); check it for an outlier or "
                f"a data-entry error, or rescale the column, e.g. multiply it by 1e-{math.ceil(math.log10(abs(v)))}"
            )
        if m > hi:
            raise DataError(
                f"{source}, column {name!r}: values up to {m:.3g} overflow float64 when squared (the limit is {hi:.0e}); "
                f"rescale the column, e.g. multiply it by 1e-{math.ceil(math.log10(m))}"
            )
        if 0 < m < lo:
            raise DataError(
                f"{source}, column {name!r}: all values are below {m:.3g} in magnitude and underflow when squared "
                f"(the limit is {lo:.0e}); rescale the column, e.g. multiply it by 1e{math.ceil(-math.log10(m))}"
            )
    if cfg.solver == "gd" and cfg.dtype == "float32" and not cfg.standardize and len(peak) and peak.max() > 1e19:
        raise ConfigError(
            f"{source}: values up to {peak.max():.3g} overflow float32 when squared (above 1.8e19); "
            "use {dtype=}, or drop {standardize=}",
            dtype="float64",  # the advice, not the value given
            standardize=False,
        )


def _gd_hints(factor, p: int, precondition: bool = False) -> dict[str, Any]:
    """What gradient descent would otherwise make passes over the data for: the weighted means and
    standard deviations of every column, and the top eigenvalue of the standardized Gram; with
    ``precondition``, also P that whitens the standardized design (``fit_gd(precondition=)``)."""
    from .solvers.exact import RCOND, _square

    R = _square(factor.R)
    std = np.linalg.norm(R, axis=0) / np.sqrt(factor.sum_w)
    std = np.where(std > 0, std, 1.0)  # a constant column stays as it is, as weighted_moments does
    Rs = R[:, :p] / std[:p]
    lam = float(np.linalg.eigvalsh(Rs.T @ Rs / factor.sum_w)[-1]) if p else 0.0
    if factor.fit_intercept:
        lam = max(lam, 1.0)  # the intercept's column of ones, uncorrelated with centered features
    mean = factor.mean
    hints = {"moments": (mean[:p], std[:p], mean[p:], std[p:]), "gram_max_eig": lam}
    if precondition and p:
        # Rs = U S Vᵀ is the R factor of √w·Z (Z the standardized design), so Z P with
        # P = √Σw · V S⁻¹ has orthonormal columns (times √Σw). Directions with a negligible
        # singular value (collinear or constant columns) get a zero column: descent leaves them
        # at 0, which is the minimum-norm solution the exact solver reports.
        constant = std[:p] <= 1e-12 * np.abs(factor.mean[:p])  # centered to rounding, as solve() judges
        _, s, Vt = np.linalg.svd(np.where(constant[None, :], 0.0, Rs), full_matrices=False)
        keep = s > RCOND * s[0] if s[0] > 0 else np.zeros_like(s, dtype=bool)
        inv = np.where(keep, 1.0 / np.where(keep, s, 1.0), 0.0)
        hints["precondition"] = math.sqrt(factor.sum_w) * Vt.T * inv[None, :]
    return hints
