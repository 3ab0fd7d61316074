"""From a source of chunks to a fitted model: one path for every source, one process or many.

:func:`train` takes any source (in-memory arrays or files, streamed) through the same steps:

1. the source splits its rows into training and validation rows (:meth:`split`);
2. one pass over the training chunks counts them, checks their magnitudes, fingerprints them and
   builds the exact solver's factor;
3. the exact solve (always: it is the optimum every fit is measured against);
4. gradient descent when asked: one set-up and one epoch loop, fed by rows held in memory or by
   chunks read again each epoch;
5. the residual pass, statistics, metrics and the gap to the optimum, as a :class:`FittedModel`.

A single process is a :class:`~gradreg.distributed.Comm` of world 1, so every step is written once
for one process and many. :func:`update` is ``partial_fit``'s step: one more batch merged into a
running exact factor, or one more epoch of gradient descent.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import math
import platform
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ._version import __version__
from .config import TrainConfig
from .distributed import SINGLE, Comm
from .errors import ConfigError, DataError
from .fitted import NEAR_ZERO, FittedModel, Optimum, make_schema, stop_reason
from .io.partition import Split
from .metrics import MetricsAccumulator

__all__ = ["train", "update", "evaluate", "Fit", "SOLVERS", "Fingerprint", "check_magnitudes"]

SHUFFLE_BUFFER = 1 << 18  # rows that streamed gradient descent shuffles together (--shuffle-buffer)
SQUARE_SAFE = (1e-150, 1e150)  # column magnitudes whose squares stay normal float64 numbers


class _FirstPass:
    """What one pass over the training chunks learns beside the factor (whose pass also takes each
    column's peak): the row count, the column ranges, the largest weight, the dtypes and the
    fingerprint."""

    def __init__(self, source, cfg: TrainConfig, comm: Comm, ranges: bool) -> None:
        self.source, self.cfg, self.comm, self.ranges = source, cfg, comm, ranges
        self.names = list(source.feature_names) + list(source.target_names)
        p = len(source.feature_names)
        self.n, self.w_max, self.dtypes = 0, 0.0, None
        self.lo, self.hi = np.full(p, np.inf), np.full(p, -np.inf)
        self.digest = Fingerprint()

    def observe(self, X: np.ndarray, Y: np.ndarray, w: np.ndarray | None) -> None:
        """Take in one block of rows; :func:`~gradreg.solvers.exact.first_pass` calls it with each
        block, in order, while the block is in cache for its Gram."""
        self.digest.add(X, Y, w)
        if len(X):
            self.dtypes = [a.dtype.str for a in (X, Y, w) if a is not None]
            if self.ranges:  # streamed gradient descent bounds its rows' norms with them
                self.lo, self.hi = np.minimum(self.lo, X.min(axis=0)), np.maximum(self.hi, X.max(axis=0))
            if w is not None:
                self.w_max = max(self.w_max, float(w.max()))
        self.n += len(X)

    @property
    def where(self):
        # one process can find the cell that holds a column's largest value; across ranks no one can
        return self.source.largest if self.comm.world == 1 else None

    def merge_ranks(self) -> list[int]:
        """Combine every rank's findings (the same on all ranks); returns each rank's row count."""
        comm = self.comm
        counts = comm.counts(self.n)
        self.lo, self.hi = -comm.max(-self.lo), comm.max(self.hi)
        self.w_max = float(comm.max([self.w_max])[0])
        return counts


def train(
    source,
    cfg: TrainConfig,
    comm: Comm = SINGLE,
    *,
    on_epoch: Callable[[dict], None] | None = None,
    shuffle_buffer: int = SHUFFLE_BUFFER,
    checkpoint_dir: str | None = None,
    checkpoint_every: int = 1,
    resume: bool | str = False,
) -> FittedModel:
    """Fit a source: the exact optimum always, gradient descent when asked, then metrics and statistics.

    Parameters
    ----------
    source : Dataset or StreamingDataset
        Rows in memory (X of shape (n_rows, n_features), Y of shape (n_rows, n_targets)) or
        files read chunk by chunk (see :mod:`gradreg.io`). On several ranks, this rank's share.
    cfg : TrainConfig
    comm : gradreg.distributed.Comm
        The job: :data:`~gradreg.distributed.SINGLE` for one process. On several ranks every rank
        takes part, and every rank returns the same model (see :mod:`gradreg.distributed`).
    on_epoch : callable, optional
        Called with each epoch's record (``epoch``, ``loss``, ``val_loss``, ``rows_per_s``, …).
    shuffle_buffer : int
        Streamed: rows shuffled together by gradient descent.
    checkpoint_dir : str, optional
        Save gradient descent's state there every ``checkpoint_every`` epochs.
    checkpoint_every : int
    resume : bool or "auto"
        Continue from the checkpoint in ``checkpoint_dir`` (same data and settings); "auto"
        resumes when there is one (a job that torchrun restarted).

    Returns
    -------
    FittedModel

    Raises
    ------
    DataError
        Fewer than 2 training rows, all weights zero, or values whose squares overflow.
    DivergenceError
        When gradient descent's loss becomes NaN/inf or grows 1000-fold.
    """
    from .config import resolve_device
    from .solvers import exact

    cfg.validate()
    design = getattr(source, "design", None)
    if design is not None and design.fit_intercept != cfg.fit_intercept:  # a formula says: '- 1' or not
        cfg = replace(cfg, fit_intercept=design.fit_intercept)
    if resume and not checkpoint_dir:
        raise ConfigError("{resume} needs {checkpoint_dir} (the folder of the checkpoint)", resume=resume, checkpoint_dir=None)
    device = resolve_device(cfg.device)
    split = source.split(cfg.val_fraction, cfg.seed, comm)
    if cfg.cov_type == "cluster" and split.grouped_chunks is None:
        raise ConfigError(
            "{cov_type=} needs the rows' groups: {groups} (a column) with files, groups= (an array) with arrays",
            cov_type=cfg.cov_type,
            groups=cfg.groups,
        )
    p, q = len(source.feature_names), len(source.target_names)
    seen = _FirstPass(source, cfg, comm, ranges=cfg.solver == "gd" and split.resident is None)
    # One read for the Gram (float32 blocks refined in float64 later, unless ridge), each column's
    # peak, the counts and the fingerprint; the peaks are checked before anything is solved.
    first = exact.first_pass(
        split.chunks(),
        fit_intercept=cfg.fit_intercept,
        device=device,
        comm=comm,
        width=p + q,
        observe=seen.observe,
        float32=cfg.l2 == 0,
    )
    check_magnitudes(first.peak, seen.names, source.source, cfg, seen.where)
    try:
        opt_sol, factor = exact.fit_exact(
            split.chunks, p, fit_intercept=cfg.fit_intercept, l2=cfg.l2, device=device, comm=comm, n_targets=q, first=first
        )
    except exact.NoRowsError:
        raise DataError(f"{source.source}: need at least 2 rows; got 0") from None
    counts = seen.merge_ranks()
    n = sum(counts)
    n_val = int(comm.sum([split.n_val()])[0])
    if n < 2:
        raise DataError(f"{source.source}: need at least 2 rows; got {n}")
    if factor.sum_w <= 0:
        raise DataError(f"{source.source}: all training weights are zero")
    warn = _rank_warnings(opt_sol, source.feature_names, speak=comm.lead)
    sha = seen.digest.hexdigest(source.feature_names, source.target_names, seen.dtypes, comm)
    info = _info(source.source, sha, n + n_val, n, n_val, device, opt_sol, source.notices, comm)
    if split.streamed:
        info["streamed"] = True
        info["chunk_rows"] = source.stream.chunk_rows
    fit = Fit(split, cfg, opt_sol, factor, seen, counts, comm, on_epoch, shuffle_buffer)
    fit.checkpoint = _checkpoint(checkpoint_dir, checkpoint_every, resume, cfg, sha)
    res = SOLVERS[cfg.solver](fit)

    def val_metrics(coef, intercept):
        if split.val_chunks is None:
            return None
        acc = MetricsAccumulator(q)
        for X, Y, w in split.val_chunks():
            acc.add(Y, Y - (X @ coef.T + intercept), w)
        acc.merge_ranks(comm)
        return {k: v.tolist() for k, v in acc.result().items()}

    model = _finish(
        cfg,
        device,
        source.feature_names,
        source.target_names,
        opt_sol,
        split.grouped_chunks if cfg.cov_type == "cluster" else split.chunks,
        res,
        val_metrics,
        info,
        warn,
        comm,
        getattr(source, "dtypes", None),
        design,
    )
    model._factor = factor  # not saved: LinearRegressor.partial_fit can merge more rows into it
    if getattr(source, "dates", None):  # date columns read as numbers: predict converts them alike
        model.schema["dates"] = dict(source.dates)
    return model


@dataclass
class Fit:
    """What a solver's step gets from :func:`train`: the rows, the settings, and what the first pass
    and the exact solve found (the optimum every fit is measured against).

    Parameters
    ----------
    split : Split
    cfg : TrainConfig
    optimum : ExactSolution
    factor : Factor
    seen : _FirstPass
        Row counts, column ranges and peaks, largest weight.
    counts : list of int
        Training rows of every rank.
    comm : gradreg.distributed.Comm
    on_epoch : callable, optional
    shuffle_buffer : int
    checkpoint : Checkpoint, optional
    """

    split: Split
    cfg: TrainConfig
    optimum: Any  # ExactSolution
    factor: Any  # Factor
    seen: _FirstPass
    counts: list[int]  # training rows of every rank
    comm: Comm
    on_epoch: Callable[[dict], None] | None = None
    shuffle_buffer: int = SHUFFLE_BUFFER
    checkpoint: Any = None


def _exact(fit: Fit) -> None:
    """The exact solver's step: nothing more to do; its solution is the optimum already found."""
    return None


def _descend(fit: Fit):
    """Gradient descent on the split's training rows, set up from the exact factor."""
    from .solvers import gd

    split, cfg, factor, seen, counts, comm = fit.split, fit.cfg, fit.factor, fit.seen, fit.counts, fit.comm
    optimum = (float(fit.optimum.objective().mean()), NEAR_ZERO * _mean_square(fit.optimum))
    p = len(seen.lo)
    n = sum(counts)
    whiten = cfg.standardize and cfg.l2 == 0
    hints = gd_hints(factor, p, precondition=whiten)
    d = gd.setup(p, len(seen.names) - p, n, cfg, hints["moments"], precondition=hints.get("precondition"), comm=comm)
    w_mean = factor.sum_w / n
    if split.resident is not None:
        X, Y, w, Xv, Yv, wv, offset = split.resident
        batches = gd.Resident(*d.prepare(X, Y, w, w_mean), n=n, offset=offset)
        d.start(lambda: batches.curvature_lr(d, hints["gram_max_eig"], comm))
        held = [(*d.prepare(Xv, Yv, None)[:2], wv)] if split.val_chunks is not None else None
        val = (lambda: held) if held is not None else None
    else:
        xm, xs = hints["moments"][0], hints["moments"][1]
        dev = np.maximum((seen.hi - xm) ** 2, (seen.lo - xm) ** 2) / xs**2
        w_ratio = seen.w_max / w_mean if seen.w_max else 1.0
        one = 1.0 if cfg.fit_intercept else 0.0
        row_max = (float(dev.sum()) + one) * w_ratio
        lam = hints["gram_max_eig"]
        if d.rotation is not None:
            # Whitened rows u = z P: ‖u‖² ≤ ‖z‖² ‖P‖², and a row's leverage wᵢ‖uᵢ‖²/Σw is at most 1,
            # so with weights of mean 1, wᵢ‖uᵢ‖² ≤ n. The smaller bound sets a stable step.
            p_norm2 = float(np.linalg.norm(d.rotation, 2) ** 2) if d.rotation.size else 0.0
            row_max = min((float(dev.sum()) * p_norm2 + one) * w_ratio, n + one * w_ratio)
            lam = 1.0
        batches = gd.Streamed(split.epoch_chunks, counts, w_mean, fit.shuffle_buffer, comm.rank)
        d.start(lambda: batches.curvature_lr(d, lam, row_max))
        val_chunks = split.val_chunks
        val = (lambda: ((*d.prepare(X, Y, None)[:2], w) for X, Y, w in val_chunks())) if val_chunks is not None else None
        with gd.half_threads():  # the chunks' reader has the other cores
            return gd.fit_gd(d, batches, val=val, on_epoch=fit.on_epoch, checkpoint=fit.checkpoint, optimum=optimum, comm=comm)
    return gd.fit_gd(d, batches, val=val, on_epoch=fit.on_epoch, checkpoint=fit.checkpoint, optimum=optimum, comm=comm)


# One signature for every solver: each takes the Fit and returns its result (None: the exact
# solution is the fit). TrainConfig's solver choices are the keys.
SOLVERS: dict[str, Callable[[Fit], Any]] = {"exact": _exact, "gd": _descend}


def evaluate(
    model: FittedModel,
    data: str,
    *,
    delimiter: str | None = None,
    drop_missing: bool = False,
    stream=None,
    options=None,
    design=None,
) -> tuple[int, dict]:
    """A model's metrics on a table that has its target columns, read chunk by chunk.

    Parameters
    ----------
    model : FittedModel
    data : str
        A file, folder or glob (or a built-in table), with the model's feature and target columns.
    delimiter : str, optional
    drop_missing : bool
    stream : Stream, optional
        Read in chunks from this :class:`~gradreg.io.Stream` (of ``data``); None reads the table whole.
    options : ReadOptions, optional
        How to read numbers (see :class:`~gradreg.io.ReadOptions`); the model's date columns are
        converted as it records.
    design : gradreg.io.design.Design, optional
        The model's design to apply, such as a copy that ignores unseen levels
        (``model.design.with_unknown("ignore")``, whose ``ignored`` then counts them); default:
        the model's own.

    Returns
    -------
    n_rows : int
    metrics : dict
        Metric (``mse``, ``rmse``, ``mae``, ``r2``) → list per target.
    """
    from .io import prefetch, read_table, select

    if stream is None:
        tables = iter([read_table(data, delimiter=delimiter, options=model_read_options(model, options))])
    else:
        text = model.design.text_columns() if model.design else ()
        tables = stream.tables([c for c in model.read_names() if c in stream.columns], text=text)
    acc = MetricsAccumulator(len(model.target_names))
    n_rows = 0
    design = design if design is not None else model.design
    selected = (
        select(t, model.target_names, model.feature_names, drop_missing=drop_missing, min_rows=0, design=design) for t in tables
    )
    for ds in prefetch(selected):  # chunk by chunk, the next one parsed while this one is scored
        acc.add(ds.Y, ds.Y - model.predict_matrix(ds.X))
        n_rows += len(ds.X)
    if n_rows == 0:
        raise DataError(f"{data}: no data rows to evaluate")
    return n_rows, {k: v.tolist() for k, v in acc.result().items()}


def model_read_options(model: FittedModel, options=None):
    """``options`` (or the defaults) with the date conversions that ``model`` records.

    Parameters
    ----------
    model : FittedModel
    options : ReadOptions, optional

    Returns
    -------
    ReadOptions
    """
    from dataclasses import replace

    from .io import ReadOptions

    options = options or ReadOptions()
    dates = model.schema.get("dates") or {}
    if dates:
        options = replace(options, dates={**dict(dates), **options.dates})
    design = model.design
    if design is not None and design.levels:  # categorical columns read as text: see Design.text_columns
        options = replace(options, text=tuple(dict.fromkeys(options.text + tuple(design.text_columns()))))
    return options


def update(model: FittedModel | None, state: Any, X: np.ndarray, Y: np.ndarray, w, feature_names, target_names, cfg: TrainConfig):
    """``partial_fit``'s step: merge one more batch into the running fit.

    Exact: the batch's factor is merged into the running one (``state``, or the factor that
    ``model`` was fitted with) and solved, with no pass over earlier rows. Gradient descent: one
    shuffled epoch over the batch, through the same set-up and loop as :func:`train`, continuing
    ``state`` (an :class:`~gradreg.solvers.gd.IncrementalGD`) or ``model``.

    Parameters
    ----------
    model : FittedModel or None
        The current model (None before the first batch).
    state : Factor, IncrementalGD or None
        What the previous call returned as its second value.
    X, Y : ndarray
    w : ndarray or None
    feature_names, target_names : list of str
    cfg : TrainConfig

    Returns
    -------
    (FittedModel, state)
    """
    if cfg.solver == "exact":
        from .solvers.exact import Factor

        part = Factor.of_chunk(X, Y, w, fit_intercept=cfg.fit_intercept)
        if state is None and model is not None:
            state = getattr(model, "_factor", None)
        factor = part if state is None else state.merge(part)
        return from_factor(factor, feature_names, target_names, cfg), factor
    from .solvers.gd import IncrementalGD

    if state is None:
        state = IncrementalGD(X, Y, w, cfg) if model is None else IncrementalGD.resume(model, X, Y, w, cfg)
    state.step(X, Y, w)
    return from_incremental(state, feature_names, target_names, cfg), state


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


def gd_hints(factor, p: int, precondition: bool = False) -> dict[str, Any]:
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


def _rank_warnings(sol, feature_names: list[str], speak: bool = True) -> list[str]:
    """warn_rank's messages (collinear columns), issued as a RankWarning only when ``speak``
    (distributed: rank 0 alone)."""
    import warnings as _w

    from .solvers import exact

    with _w.catch_warnings():
        if not speak:
            _w.simplefilter("ignore", exact.RankWarning)
        return exact.warn_rank(sol, feature_names)


def _finish(
    cfg,
    device,
    feature_names,
    target_names,
    opt_sol,
    chunks,
    res,
    val_metrics,
    info,
    warn,
    comm: Comm = SINGLE,
    dtypes=None,
    design=None,
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
            stopped_by=res.stopped_by,
        )
        if res.floor_epoch is not None:
            info["noise_floor_epoch"] = res.floor_epoch
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
    from .solvers.dependence import scores_for

    p = len(feature_names)
    scores = scores_for(cfg.cov_type, q, p + 1, n_ways=len(cfg.groups or []), maxlags=cfg.maxlags)
    rss, meat = exact.residual_pass(
        sol, chunks, cfg.cov_type, device=device, metrics=acc, reference=reference, comm=comm, scores=scores
    )
    sol.rss = rss
    detail = _cov_detail(cfg, scores)
    if detail is not None:
        info["cov"] = detail
    stats = exact.statistics(
        sol,
        cov_type=cfg.cov_type,
        conf_level=cfg.conf_level,
        meat=meat,
        df_inference=None if scores is None else scores.df_inference,
        cov_detail=None if detail is None else detail["text"],
        # '- 1' with every level of a categorical: R² and F about the mean, as statsmodels
        centered_tss=acc.m2.copy() if design is not None and design.implicit_constant and not cfg.fit_intercept else None,
    )
    metrics = {"train": {k: v.tolist() for k, v in acc.result().items()}}
    val = val_metrics(coef, intercept)
    if val is not None:
        metrics["val"] = val
    optimum = Optimum.of(opt_sol, sol, _mean_square(opt_sol), cfg.l2)
    if res is not None:
        info["converged"] = optimum.within_tolerance
        if not optimum.within_tolerance:
            message = _convergence_message(cfg, optimum, res, opt_sol)
            warn = [*warn, message]
            if comm.lead:  # distributed, rank 0 alone speaks
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
        schema=make_schema(list(feature_names), list(target_names), dtypes, design=design),
    )


def _cov_detail(cfg: TrainConfig, scores) -> dict[str, Any] | None:
    """The cluster or HAC covariance's settings for the model's info and summary, with its text
    (``"cluster (firm, 10 groups)"``, ``"HAC (Newey-West, 4 lags)"``); None for the others."""
    if cfg.cov_type == "cluster":
        groups = list(cfg.groups or [])
        counts = list(scores.n_groups)
        text = "; ".join(f"{g}, {n} groups" for g, n in zip(groups, counts))
        return {"type": "cluster", "groups": groups, "n_groups": counts, "text": f"cluster ({text})"}
    if cfg.cov_type == "HAC":
        lags = f"{cfg.maxlags} lag{'s' if cfg.maxlags != 1 else ''}"
        return {"type": "HAC", "maxlags": cfg.maxlags, "text": f"HAC (Newey-West, {lags})"}
    return None


def _mean_square(sol) -> float:
    """Mean over targets of the weighted mean square of the target (about 0, offset included)."""
    ss = sol.tss + (sol.sum_w * sol.y_mean**2 if sol.fit_intercept and sol.y_mean is not None else 0.0)
    return float((ss / sol.sum_w).mean())


def _convergence_warning() -> type:
    """scikit-learn's ConvergenceWarning (imported only when needed: it costs the CLI's start)."""
    from sklearn.exceptions import ConvergenceWarning

    return ConvergenceWarning


def _convergence_message(cfg: TrainConfig, optimum: Optimum, res, opt_sol, cli: bool = False) -> str:
    """The warning for a gradient-descent fit that ended short of the optimum, with its remedies,
    naming options as Python arguments (``epochs=``) or, with ``cli``, as flags (``--epochs``)."""
    kind = "MSE" if cfg.l2 == 0 else "objective"
    ours, best = optimum.mean_train_objective, optimum.mean_objective
    if optimum.optimum_near_zero:
        how = f"{kind} {ours:.4g} where the exact fit has {best:.3g} (about 0)"
    else:
        ratio = ours / best
        times = f"{ratio:,.0f}×" if ratio >= 100 else f"{ratio:.3g}×"
        above = f"{times} the" if optimum.gap >= 1 else f"{optimum.gap:+.1%} above the"
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
    if res.stopped_by == "early_stopping":
        remedies.append(f"raise {say('--early-stopping', 'early_stopping')}")
    if res.stopped_by == "tol":
        remedies.append(f"lower {say('--tol', 'tol')} (now {cfg.tol:g})")
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


def _info(source, sha, n_rows, n_train, n_val, device, opt_sol, notices, comm: Comm = SINGLE) -> dict[str, Any]:
    import torch

    extra = {"world_size": comm.world, "backend": comm.backend} if comm.world > 1 else {}
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


def _checkpoint(folder: str | None, every: int, resume: bool | str, cfg: TrainConfig, sha: str):
    """The Checkpoint for these settings and data, or None without a folder."""
    if folder is None:
        return None
    from .checkpoint import Checkpoint

    return Checkpoint(folder, every=every, resume=resume, identity={"config": cfg.to_dict(), "data": sha})


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
        optimum=Optimum.of(sol, sol, _mean_square(sol), cfg.l2),
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
        x_mean=np.asarray(inc.moments[0], dtype=np.float64),
        x_scale=np.asarray(inc.moments[1], dtype=np.float64),
        y_mean=np.asarray(inc.moments[2], dtype=np.float64),
        y_scale=np.asarray(inc.moments[3], dtype=np.float64),
        config=cfg.to_dict(),
        history=list(inc.history),
        info={
            "gradreg_version": __version__,
            "source": "<partial_fit>",
            "lr": inc.lr,
            "batch_size": inc.batch_size,
            "epochs_run": len(inc.history),
            "incremental": True,
        },
    )


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

    def hexdigest(self, feature_names: list[str], target_names: list[str], dtypes: list[str] | None, comm: Comm = SINGLE) -> str:
        """The digest of everything added, with the column names and dtypes.

        Parameters
        ----------
        feature_names, target_names : list of str
        dtypes : list of str
            The dtypes of X, Y (and w); None on a rank that read no rows.
        comm : gradreg.distributed.Comm
            Combine every rank's digests, in rank order.

        Returns
        -------
        str
        """
        h = hashlib.sha256()
        digests = b"".join(struct.pack("<IQ", c, n) for c, n in zip(self.crcs, self.sizes))
        for rank_digests in comm.gather(np.frombuffer(digests, dtype=np.uint8)):
            h.update(rank_digests.tobytes())
        # the dtypes of the first rank that read rows (a rank without rows has none)
        flags = comm.gather(np.array([dtypes is not None], dtype=np.uint8))
        src = next((r for r, f in enumerate(flags) if f[0]), 0)
        shared = comm.broadcast_bytes("\0".join(dtypes or []).encode(), src).decode()
        dtypes = shared.split("\0") if shared else []
        h.update("\0".join(feature_names + ["|"] + target_names + ["|"] + list(dtypes or [])).encode())
        return h.hexdigest()
