"""The command line: thin commands over the library.

Exit status: 0 success, 1 failure at run time (e.g. divergence), 2 usage or input error.
Errors are one line on stderr ("Error: ..."), never a traceback unless --debug.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections.abc import Sequence
from typing import Any

from ._version import __version__
from .config import GD_ONLY
from .errors import ConfigError, GradregError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
OUT_OF_MEMORY = "out of memory; train from CSV/Parquet files with --stream (bounded memory), or use a larger machine"

EXAMPLES = {
    "train": "examples:\n  gradreg train crops --target mangoes --target oranges -o crops.safetensors\n"
    "  gradreg train data.parquet --target y --features a,b,c --solver exact\n"
    "  gradreg train data.csv --target y --epochs 100 --val-fraction 0.2 --early-stopping 5 --json\n"
    "  gradreg train data/ --target y --nproc 4 --checkpoint-dir ckpt --max-restarts 2",
    "predict": "examples:\n  gradreg predict crops.safetensors crops > predictions.csv\n"
    "  gradreg predict model.safetensors new.parquet -o predictions.parquet\n"
    "  gradreg predict model.safetensors new.csv --interval prediction --level 0.9 -o predictions.csv",
    "evaluate": "examples:\n  gradreg evaluate crops.safetensors crops\n  gradreg evaluate model.safetensors test.csv --json",
    "inspect": "examples:\n  gradreg inspect crops.safetensors\n  gradreg inspect crops.safetensors --json",
    "plot": "examples:\n  gradreg plot crops.safetensors crops -o plots/\n"
    "  gradreg plot model.safetensors test.parquet -o test-plots --json",
    "report": "examples:\n  gradreg report crops.safetensors crops -o report.html\n"
    "  gradreg report model.safetensors -o - > report.html",
    "demo": "examples:\n  gradreg demo\n  gradreg demo --out demo-output",
    "datasets": "examples:\n  gradreg datasets\n  gradreg datasets --json",
    "completion": "examples:\n  gradreg completion bash > ~/.local/share/bash-completion/completions/gradreg\n"
    "  gradreg completion zsh > ~/.zfunc/_gradreg   # with fpath+=~/.zfunc before compinit\n"
    "  gradreg completion fish > ~/.config/fish/completions/gradreg.fish",
}

# The train flag of each option the library names in its messages ({cov_type} in an error's
# template): TrainConfig's fields one to one, then the other arguments of load/train/Stream.
FLAGS = {
    "solver": "--solver",
    "epochs": "--epochs",
    "batch_size": "--batch-size",
    "lr": "--lr",
    "optimizer": "--optimizer",
    "lr_schedule": "--lr-schedule",
    "l2": "--l2",
    "fit_intercept": "--no-intercept",
    "standardize": "--no-standardize",
    "val_fraction": "--val-fraction",
    "early_stopping": "--early-stopping",
    "tol": "--tol",
    "seed": "--seed",
    "device": "--device",
    "dtype": "--dtype",
    "cov_type": "--cov",
    "conf_level": "--conf-level",
    "groups": "--groups",
    "maxlags": "--maxlags",
    "target": "--target",
    "features": "--features",
    "formula": "--formula",
    "categorical": "--categorical",
    "reference": "--reference",
    "max_levels": "--max-levels",
    "exclude": "--exclude",
    "weight": "--weight",
    "delimiter": "--delimiter",
    "decimal": "--decimal",
    "thousands": "--thousands",
    "dates": "--dates",
    "dates_as": "--dates-as",
    "chunk_rows": "--chunk-rows",
    "shuffle_buffer": "--shuffle-buffer",
    "checkpoint_dir": "--checkpoint-dir",
    "checkpoint_every": "--checkpoint-every",
    "resume": "--resume",
    "backend": "--backend",
    "timeout": "--timeout",
}
# train flags that are not TrainConfig fields and that only gradient descent reads, with their
# defaults (the parser's, and what --solver exact accepts)
GD_ONLY_FLAGS = {"shuffle_buffer": 1 << 18, "checkpoint_dir": None, "checkpoint_every": 1, "resume": False}

# shtab's completers, spelled out so that parsing never imports shtab
FILE = {"bash": "_shtab_compgen_files", "zsh": "_files", "tcsh": "f", "fish": "(__fish_complete_path (commandline -ct))"}
DIRECTORY = {"bash": "_shtab_compgen_dirs", "zsh": "_files -/", "tcsh": "d", "fish": "(__fish_complete_directories)"}


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with one 'Error:' line, like every other input error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"Error: {self.prog}: {message} (see --help)\n")
        raise SystemExit(EXIT_USAGE)


def _int(s: str) -> int:
    """An integer, as typed; its range is TrainConfig's to check (once, for the CLI and Python alike)."""
    try:
        return int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer; got {s!r}") from None


def _float(s: str) -> float:
    """A number, as typed; its range is TrainConfig's to check."""
    try:
        return float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number; got {s!r}") from None


def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {s!r}")
    return v


def _positive_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number; got {s!r}") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number; got {s!r}")
    return v


def _nonneg_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0; got {s!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0; got {s!r}")
    return v


def build_parser() -> argparse.ArgumentParser:
    from .config import COV_TYPES, DEVICES, DTYPES, INTERVALS, MAX_LEVELS, OPTIMIZERS, SCHEDULES, SOLVERS, TrainConfig

    D = TrainConfig  # each flag's default is the config field's, written once there (a class attribute)
    fmt = argparse.RawDescriptionHelpFormatter
    p = _Parser(
        prog="gradreg",
        description="Linear regression with PyTorch: minibatch gradient descent or exact least squares.",
        epilog="examples:\n  gradreg demo\n  gradreg train crops --target mangoes --target oranges -o crops.safetensors\n"
        "  gradreg inspect crops.safetensors\n\nexit status: 0 success, 1 failure at run time, 2 usage or input error",
        formatter_class=fmt,
    )
    p.add_argument("--version", action="version", version=f"gradreg {__version__}")
    p.add_argument("--debug", action="store_true", help="show a traceback on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, epilog=EXAMPLES[name], formatter_class=fmt)

    def data_options(c: argparse.ArgumentParser, chunks: bool = False, stream: bool = False) -> None:
        c.add_argument(
            "--delimiter",
            help="CSV separator: a character, or tab, semicolon... (default: detected from the file's head among "
            "',' ';' tab '|'; ',' or tab for .tsv when it cannot tell)",
        )
        c.add_argument("--decimal", metavar="MARK", help="decimal mark of numbers: '.' (default) or ',' (21,5)")
        c.add_argument(
            "--thousands",
            metavar="SEP",
            help="thousands separator to read in numbers: ',' (25,750), '.' (1.234,5 with --decimal ','), \"'\" or space",
        )
        c.add_argument("--drop-missing", action="store_true", help="drop rows with a missing value instead of failing")
        if chunks:
            c.add_argument(
                "--chunk-rows",
                type=_positive_int,
                default=65_536,
                metavar="N",
                help="rows read at a time from CSV/Parquet files, folders and globs (default: %(default)s)",
            )
        if stream:
            c.add_argument(
                "--stream",
                action="store_true",
                help="read in chunks even if the data would fit in memory (automatic above ~1 GiB)",
            )

    def unknown_option(c: argparse.ArgumentParser) -> None:
        c.add_argument(
            "--unknown",
            choices=("error", "ignore"),
            default="error",
            help="a categorical level not seen in training: an error, or all its dummies 0 (default: %(default)s)",
        )

    def model_arg(c: argparse.ArgumentParser) -> None:
        c.add_argument("model", metavar="MODEL", help="a .safetensors model file written by gradreg").complete = FILE

    def data_arg(c: argparse.ArgumentParser, optional: bool = False, help: str = "") -> None:
        c.add_argument(
            "data",
            metavar="DATA",
            nargs="?" if optional else None,
            help=help
            or "CSV/TSV or Parquet file, folder or glob ('data/*.parquet'), .npy/.npz, a built-in table, or - for stdin",
        ).complete = FILE

    t = command("train", "Fit a linear model and write it to a .safetensors file.")
    data_arg(t)
    t.add_argument("--target", action="append", help="target column (repeat or comma-separate for several)")
    t.add_argument("--features", help="comma-separated feature columns (default: every other numeric column)")
    t.add_argument(
        "--formula",
        help="a Wilkinson formula instead of --target/--features: 'y ~ x1 + np.log(x2) + C(region) + x1:x3' "
        "(several targets: 'y1 + y2 ~ ...'; no intercept: '... - 1')",
    )
    t.add_argument(
        "--categorical",
        action="append",
        metavar="COLS",
        help="one-hot encode these columns (comma-separated or repeated); the first level is the reference",
    )
    t.add_argument(
        "--reference",
        action="append",
        metavar="COL=LEVEL",
        help="the reference level of a categorical column, dropped when there is an intercept (default: the first, sorted)",
    )
    t.add_argument(
        "--max-levels",
        type=_int,
        default=MAX_LEVELS,
        metavar="N",
        help="refuse a categorical column with more levels than this (default: %(default)s)",
    )
    t.add_argument(
        "--exclude",
        action="append",
        metavar="COLS",
        help="leave these columns out of the default features (comma-separated or repeated; not with --features)",
    )
    t.add_argument("--weight", help="column of sample weights (>= 0)")
    t.add_argument(
        "--dates",
        action="append",
        metavar="COLS",
        help="date/datetime columns (2024-01-31, 2024-01-31T10:00) to use as numbers: days since 1970-01-01, "
        "fractional for times, in UTC for times with a zone (comma-separated or repeated); predict and evaluate "
        "convert them alike",
    )
    t.add_argument(
        "--dates-as",
        choices=["days", "parts"],
        default="days",
        help="what each --dates column becomes: days, or parts: COL.year, COL.month, COL.day, COL.dayofweek "
        "(Monday 0) (default: %(default)s)",
    )
    data_options(t, chunks=True, stream=True)
    t.add_argument(
        "-o", "--output", default="model.safetensors", help="model file to write, ending in .safetensors (default: %(default)s)"
    ).complete = FILE
    t.add_argument(
        "--plots", metavar="DIR", help="also write the loss curve, predicted-vs-actual and residual PNGs here"
    ).complete = DIRECTORY
    t.add_argument(
        "--checkpoint-dir", metavar="DIR", help="save the training state here (atomically) every --checkpoint-every epochs"
    ).complete = DIRECTORY
    t.add_argument(
        "--checkpoint-every",
        type=_positive_int,
        default=GD_ONLY_FLAGS["checkpoint_every"],
        metavar="N",
        help="epochs between checkpoints (default: %(default)s)",
    )
    t.add_argument("--resume", action="store_true", help="continue from the checkpoint in --checkpoint-dir")
    t.add_argument(
        "--shuffle-buffer",
        type=_positive_int,
        default=GD_ONLY_FLAGS["shuffle_buffer"],
        metavar="ROWS",
        help="streamed data: rows shuffled together by gradient descent (default: %(default)s)",
    )
    t.add_argument(
        "--solver",
        choices=SOLVERS,
        default=D.solver,
        help="gd: minibatch gradient descent; exact: least squares, which refuses the options of gradient descent "
        f"({', '.join(FLAGS[n] for n in (*GD_ONLY, *GD_ONLY_FLAGS))}) (default: %(default)s)",
    )
    t.add_argument("--epochs", type=_int, default=D.epochs, help="passes over the data (default: %(default)s)")
    t.add_argument("--batch-size", type=_int, help="rows per step (default: auto, about n/64, at most 65536)")
    t.add_argument("--lr", type=_float, help="learning rate (default: auto from the data's curvature)")
    t.add_argument("--optimizer", choices=OPTIMIZERS, default=D.optimizer, help="torch.optim optimizer (default: %(default)s)")
    t.add_argument(
        "--lr-schedule",
        choices=SCHEDULES,
        default=D.lr_schedule,
        help="learning-rate schedule over all steps (default: %(default)s)",
    )
    t.add_argument("--l2", type=_float, default=D.l2, help="ridge penalty in the standardized scale (default: %(default)g)")
    t.add_argument("--no-intercept", dest="fit_intercept", action="store_false", help="fit without the bias b")
    t.add_argument(
        "--no-standardize",
        dest="standardize",
        action="store_false",
        help="train in raw units from a random start, as the tutorial does",
    )
    t.add_argument("--val-fraction", type=_float, default=D.val_fraction, help="hold out this fraction of rows for validation")
    t.add_argument(
        "--early-stopping",
        type=_int,
        metavar="N",
        help="stop after N epochs without a better validation loss (the training loss without --val-fraction); "
        "keep the best epoch's weights and say why it stopped",
    )
    t.add_argument(
        "--tol",
        type=_float,
        default=D.tol,
        help="stop once an epoch's training loss is within this fraction of the exact optimum; 0 runs every epoch "
        "(default: %(default)g)",
    )
    t.add_argument("--seed", type=_int, default=D.seed, help="random seed (default: %(default)s)")
    t.add_argument("--device", choices=DEVICES, default=D.device, help="where to compute (default: %(default)s)")
    t.add_argument("--dtype", choices=DTYPES, default=D.dtype, help="gradient-descent precision (default: %(default)s)")
    t.add_argument(
        "--cov",
        dest="cov_type",
        choices=COV_TYPES,
        default=D.cov_type,
        help="covariance for standard errors: cluster needs --groups, HAC (Newey-West) needs --maxlags",
    )
    t.add_argument(
        "--groups",
        metavar="COL[,COL2]",
        help="with --cov cluster: the column naming each row's cluster (text or numbers; two for two-way "
        "clustering); it is not a feature",
    )
    t.add_argument(
        "--maxlags", type=_int, metavar="L", help="with --cov HAC: lags of the Newey-West covariance, rows in file order"
    )
    t.add_argument(
        "--conf-level", type=float, default=D.conf_level, help="confidence level of the intervals (default: %(default)s)"
    )
    t.add_argument(
        "--quiet", "-q", action="store_true", help="print nothing but errors (no warnings: `inspect` shows the model's)"
    )
    dist = t.add_argument_group("distributed (torchrun)")
    dist.add_argument(
        "--nproc",
        type=_positive_int,
        metavar="N",
        help="run N processes on this machine through torchrun's launcher (elsewhere: torchrun ... -m gradreg train)",
    )
    dist.add_argument(
        "--max-restarts",
        type=_nonneg_int,
        default=0,
        metavar="N",
        help="with --nproc: restart the job up to N times after a failure; with --checkpoint-dir it resumes",
    )
    dist.add_argument(
        "--backend",
        choices=["auto", "gloo", "nccl"],
        default="auto",
        help="torch.distributed backend: auto is nccl with a GPU per rank, else gloo (default: %(default)s)",
    )
    dist.add_argument(
        "--timeout",
        type=_positive_float,
        default=600.0,
        metavar="SECONDS",
        help="how long a rank waits for the others before the job fails (default: %(default)g)",
    )
    dist.add_argument("--verbose", action="store_true", help="let every rank print, not only rank 0")
    t.add_argument("--json", action="store_true", help="one JSON object per epoch, then a summary object")

    pr = command("predict", "Predict with a model; columns are matched by name.")
    model_arg(pr)
    data_arg(pr)
    pr.add_argument(
        "-o", "--output", default="-", help="a .csv, .parquet/.pq or .jsonl/.ndjson file (by suffix); '-' is stdout (default)"
    ).complete = FILE
    pr.add_argument("--json", action="store_true", help="write JSON lines (one object per row) instead of CSV")
    pr.add_argument(
        "--interval",
        choices=INTERVALS,
        help="also write TARGET_lower and TARGET_upper: a confidence interval for the mean, or a prediction "
        "interval for a new observation (statsmodels' mean_ci / obs_ci; not for ridge models)",
    )
    pr.add_argument("--level", type=_float, metavar="LEVEL", help="the intervals' level, in (0, 1) (default: 0.95)")
    pr.add_argument(
        "--keep",
        action="append",
        metavar="COLS",
        help="copy these input columns (IDs, any type, as written; a model feature as the number read) beside "
        "the predictions, row for row (comma-separated or repeated)",
    )
    data_options(pr, chunks=True)
    unknown_option(pr)
    for action in pr._actions:
        if action.dest == "drop_missing":  # predict keeps every row, aligned with the input
            action.help = "give a row with a missing feature value an empty prediction instead of failing"

    ev = command("evaluate", "Metrics of a model on a table that has the target columns.")
    model_arg(ev)
    data_arg(ev)
    ev.add_argument("--json", action="store_true", help="print JSON instead of a table")
    data_options(ev, chunks=True)
    unknown_option(ev)

    ins = command("inspect", "Show a model's coefficients, statistics and metadata.")
    model_arg(ins)
    ins.add_argument("--json", action="store_true", help="print JSON instead of tables")

    pl = command("plot", "Draw a model's pictures: loss curve, predicted vs actual, residuals (PNG).")
    model_arg(pl)
    data_arg(pl, optional=True, help="table with the model's feature and target columns (without it: only the loss curve)")
    pl.add_argument(
        "-o", "--output", metavar="DIR", default="plots", help="folder for the PNGs (default: %(default)s)"
    ).complete = DIRECTORY
    pl.add_argument("--json", action="store_true", help="print the written paths as JSON")
    data_options(pl)
    unknown_option(pl)

    rp = command("report", "Write one self-contained HTML page: metrics, coefficients and statistics, plots.")
    model_arg(rp)
    data_arg(rp, optional=True, help="table to evaluate and plot (needs the target columns); default: the training metrics only")
    rp.add_argument(
        "-o", "--output", default="report.html", help="a .html/.htm file to write; '-' is stdout (default: %(default)s)"
    ).complete = FILE
    rp.add_argument("--json", action="store_true", help="print what was written as JSON")
    data_options(rp)
    unknown_option(rp)

    de = command("demo", "Train on the tutorial's crops table with its settings and show the result.")
    de.add_argument("--out", default="gradreg-demo", help="folder for the model and loss-curve PNG (default: %(default)s)")
    de.add_argument("--seed", type=_int, default=D.seed, help="random seed (default: %(default)s)")
    de.add_argument("--device", choices=DEVICES, default=D.device)
    de.add_argument("--json", action="store_true", help="one JSON object per epoch, then a summary object")

    ds = command("datasets", "List the built-in tables.")
    ds.add_argument("--json", action="store_true", help="print JSON instead of lines")

    co = command("completion", "Print a shell completion script for gradreg.")
    co.add_argument("shell", choices=["bash", "zsh", "tcsh", "fish"], help="the shell to complete in")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a usage error already printed
        return int(e.code or 0)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    _WARNINGS.reset(show=not getattr(args, "quiet", False))
    # Commands that write files and only report on them keep going when the reader of their
    # output leaves (`gradreg train ... | head`): a closed pipe must not cost the model.
    guard = args.command in ("train", "demo", "plot") or (args.command == "report" and args.output != "-")
    streams = sys.stdout, sys.stderr
    if guard:
        sys.stdout, sys.stderr = _ReaderMayLeave(sys.stdout), _ReaderMayLeave(sys.stderr)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _WARNINGS
            code = int(COMMANDS[args.command](args) or 0)
            sys.stdout.flush()  # a reader that left shows here, not as "Exception ignored" at exit
            return code
    except BrokenPipeError:
        # `gradreg predict ... | head`: output that IS stdout was closed by its reader, who had
        # what they wanted; that is not an error of ours (exit 0, as ripgrep does; see README).
        _to_devnull(sys.stdout)
        if guard:  # not expected: the guarded streams absorb it; the work may be cut short, so say so
            sys.stderr.write("Error: the output's reader left before the work was done\n")
            return EXIT_FAILURE
        return EXIT_OK
    except (Exception, KeyboardInterrupt) as e:
        text, code = _error_text(e, args)
        if text is None or (args.debug and not isinstance(e, (KeyboardInterrupt, MemoryError))):
            raise  # a bug shows its traceback; --debug shows every traceback
        sys.stderr.write(f"Error: {text}\n")
        return code
    finally:
        if guard:
            sys.stdout.flush()
            sys.stdout, sys.stderr = streams


def _to_devnull(stream) -> None:
    """Point ``stream``'s file descriptor at /dev/null: what is still buffered, and anything
    printed later, is dropped instead of failing again (at exit, as "Exception ignored")."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a real file (a test's capture): nothing is buffered for a descriptor
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


class _ReaderMayLeave:
    """stdout or stderr of a command whose work is a file (a model, plots): if the reader of the
    pipe leaves, the rest of the output goes to /dev/null and the work goes on."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._left()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._left()

    def _left(self) -> None:
        _to_devnull(self._stream)
        try:
            self._stream.flush()  # what was buffered goes to /dev/null now
        except (BrokenPipeError, ValueError):
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _WarningLines:
    """warnings.showwarning for the CLI: one `warning: …` line on stderr, once per message, instead
    of Python's file:line, category and source line (and the model's own list repeating it)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self, show: bool = True) -> None:
        self.seen: list[str] = []  # every warning of this run, shown or not, once each
        self.python: set[str] = set()  # the same, as Python words them (a model's `warnings` list)
        self.show = show  # False under -q ("nothing but errors"), and under train's --json (its summary has them)

    def __call__(self, message, category, filename, lineno, file=None, line=None) -> None:
        def one_line(m) -> str:
            return " ".join(part.strip() for part in str(m).splitlines() if part.strip())

        # a warning that names options says them as flags for the CLI (`--epochs`, not `epochs=`)
        self.python.add(one_line(message))
        text = one_line(getattr(message, "cli", message))
        if text in self.seen:
            return
        self.seen.append(text)
        if self.show:
            sys.stderr.write(f"warning: {text}\n")


_WARNINGS = _WarningLines()


def _console(stderr: bool = False):
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            # rich's own exits with status 1; main() treats a reader that left as it should
            raise BrokenPipeError

    # markup off: a name such as C(g)[a] or price[usd] is text, not a rich style tag
    return _Console(stderr=stderr, highlight=False, soft_wrap=True, markup=False)  # long paths stay on one line


def _config(args: argparse.Namespace):
    from dataclasses import fields

    from .config import TrainConfig

    # every train flag's dest is its TrainConfig field: the flags map onto the config one to one
    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)}).validate()
    _refuse_unused(args, cfg)
    return cfg


def _refuse_unused(args: argparse.Namespace, cfg) -> None:
    """An error naming the flags given (away from their defaults) that the chosen solver ignores.

    An error here, where the Python API warns: a flag typed on a command line that changes nothing
    is a mistake to point out, not a grid of parameters to run through.
    """
    unused = cfg.unused()
    if cfg.solver == "exact":
        unused += [n for n, default in GD_ONLY_FLAGS.items() if getattr(args, n, default) != default]
    if unused:
        flags = ", ".join(FLAGS[n] for n in unused)
        verb, them = ("applies", "it") if len(unused) == 1 else ("apply", "them")
        raise ConfigError(f"{flags} {verb} to --solver gd; the exact solver does not use {them}")


class EpochPrinter:
    """Progress: a live bar on a TTY, plain lines when piped, JSON lines with --json, or nothing."""

    def __init__(self, epochs: int, *, mode: str, stream=None, prefix: str = ""):
        self.epochs, self.mode, self.prefix = epochs, mode, prefix
        self.stream = stream or sys.stdout
        self.progress = None
        self.task = None

    def __enter__(self) -> EpochPrinter:
        if self.mode == "tty":
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("epoch {task.completed}/{task.total}"),
                BarColumn(),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
                console=_console(),
                transient=False,
            )
            self.progress.__enter__()
            self.task = self.progress.add_task("train", total=self.epochs, info="")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def __call__(self, rec: dict) -> None:
        if self.mode == "json":
            self.stream.write(json.dumps({"event": "epoch", **_clean(rec)}) + "\n")
            self.stream.flush()
        elif self.mode == "tty":
            info = (
                f"loss {rec['loss']:.4g}"
                + (f"  val {rec['val_loss']:.4g}" if "val_loss" in rec else "")
                + f"  {rec['rows_per_s']:,.0f} rows/s"
            )
            self.progress.update(self.task, completed=rec["epoch"], info=info)
        elif self.mode == "lines":
            val = f"  val_loss {rec['val_loss']:.6g}" if "val_loss" in rec else ""
            self.stream.write(f"{self.prefix}epoch {rec['epoch']}/{self.epochs}  loss {rec['loss']:.6g}{val}\n")
            self.stream.flush()


class SolvePrinter:
    """The exact solver's progress on a TTY: a running count of the rows read (streamed data),
    then "solving"; it has no epochs, so no bar. Other modes print nothing until the result.

    Parameters
    ----------
    ds : Dataset or StreamingDataset
        In memory, the rows are already read: the line says "solving" at once. Streamed (and
        ``count``), every pass over the chunks is counted as it goes.
    mode : {"tty", "lines", "json", "quiet"}
    console : rich.console.Console, optional
        Where a TTY display goes (default stdout).
    count : bool
        Count a streamed dataset's rows (False for a rank of a job: its count is only its shard).
    """

    def __init__(self, ds, *, mode: str, console=None, count: bool = True) -> None:
        self.mode, self.console, self.status = mode, console, None
        self.n_features = ds.n_features if hasattr(ds, "n_features") else ds.X.shape[1]
        self.total = len(ds.X) if hasattr(ds, "X") else None  # streamed: known after the first pass
        self.passes, self.rows, self.shown, self.reading = 0, 0, 0.0, False
        if mode == "tty" and count and self.total is None:
            read = ds.keyed_chunks

            def keyed_chunks(units=None, **kw):  # every pass of the solver over the rows goes through here
                self.start_pass()
                for key, arrays in read(units, **kw):
                    self.add_rows(len(arrays[0]))
                    yield key, arrays
                self.end_pass()

            ds.keyed_chunks = keyed_chunks

    def __enter__(self) -> SolvePrinter:
        if self.mode == "tty":
            self.status = (self.console or _console()).status(self._text())
            self.status.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.status is not None:
            self.status.__exit__(*exc)  # the spinner goes; the result tables follow

    def _text(self) -> str:
        if not self.reading:
            return "reading rows" if self.total is None else f"solving: {self.total:,} rows × {self.n_features} features"
        if self.passes == 1:
            return f"reading rows: {self.rows:,}"
        return f"pass {self.passes} over the rows: {self.rows:,} of {self.total:,}"

    def _show(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.status is not None and (force or now - self.shown > 0.1):  # at most 10 updates a second
            self.status.update(self._text())
            self.shown = now

    def start_pass(self) -> None:
        self.passes, self.rows, self.reading = self.passes + 1, 0, True
        self._show(force=True)

    def add_rows(self, n: int) -> None:
        self.rows += n
        self._show()

    def end_pass(self) -> None:
        self.reading = False
        if self.total is None:
            self.total = self.rows
        self._show(force=True)


def _clean(d: dict) -> dict:
    from .persist import jsonable

    return jsonable(d)


def _mode(args: argparse.Namespace) -> str:
    if getattr(args, "quiet", False):
        return "quiet"
    if getattr(args, "json", False):
        return "json"
    return "tty" if sys.stdout.isatty() else "lines"


def _read_options(args: argparse.Namespace, model=None):
    """How DATA is read: --delimiter, --decimal, --thousands, train's --dates and predict's --keep;
    with a model, the date columns it records."""
    from .io import ReadOptions

    opts = ReadOptions.of(
        args.delimiter,
        getattr(args, "decimal", None),
        getattr(args, "thousands", None),
        getattr(args, "dates", None),
        getattr(args, "dates_as", "days"),
        getattr(args, "keep", None),
    )
    if model is None:
        return opts
    from .pipeline import model_read_options

    return model_read_options(model, opts)


def _stream(args: argparse.Namespace, data: str, model=None, options=None):
    """A Stream over DATA when it is CSV/Parquet file(s) on disk and the command reads in chunks."""
    from .io import stream_of

    if not hasattr(args, "chunk_rows"):
        return None
    return stream_of(data, chunk_rows=args.chunk_rows, options=options or _read_options(args, model))


def _load_dataset(args: argparse.Namespace, data: str, targets: Any, features: Any = None, weight: Any = None, comm=None):
    """The training source of DATA (see :func:`gradreg.io.open_source`)."""
    from .distributed import SINGLE
    from .io import open_source

    return open_source(
        data,
        targets,
        features,
        weight=weight,
        exclude=getattr(args, "exclude", None),
        groups=getattr(args, "groups", None),
        drop_missing=args.drop_missing,
        stream=True if args.stream else None,
        chunk_rows=args.chunk_rows,
        comm=comm or SINGLE,
        design=_design_request(args),
        fit_intercept=getattr(args, "fit_intercept", True),
        options=_read_options(args),
    )


def _design_request(args: argparse.Namespace):
    """--formula, --categorical, --reference and --max-levels as a DesignRequest (None: none given)."""
    from .io.design import DesignRequest, has_targets, parse_reference

    formula = getattr(args, "formula", None)
    categorical = [c.strip() for item in getattr(args, "categorical", None) or [] for c in item.split(",") if c.strip()]
    lhs = formula is not None and has_targets(formula)
    if formula is not None and ((lhs and args.target) or args.features or categorical or getattr(args, "exclude", None)):
        given = [
            f for f, v in (("--target", lhs and args.target), ("--features", args.features), ("--categorical", categorical)) if v
        ]
        given += ["--exclude"] if getattr(args, "exclude", None) else []
        raise ConfigError(
            f"--formula names the {'targets and ' if lhs else ''}features itself; leave out {', '.join(given)} "
            "(a categorical column in a formula is C(col), or any text column; the targets go left of '~' "
            "or, for a formula without '~', in --target)"
        )
    if formula is not None and not lhs and not args.target:
        raise ConfigError(
            f"--formula {formula!r} names no target: write it as 'y ~ x1 + x2', or name the target(s) with --target"
        )
    if formula is None and not args.target:
        raise ConfigError("name the target column(s) with --target, or give --formula 'y ~ x1 + x2'")
    reference = parse_reference(getattr(args, "reference", None), categorical)
    if reference and formula is None and not categorical:
        raise ConfigError("--reference goes with --categorical (or, in a formula, C(col, contr.treatment('level')))")
    return DesignRequest(formula=formula, categorical=categorical, reference=reference, max_levels=args.max_levels)


def cmd_train(args: argparse.Namespace) -> int:
    from . import distributed

    if args.max_restarts and not args.nproc:
        raise ConfigError("--max-restarts goes with --nproc; under torchrun, give torchrun its own --max-restarts")
    _config(args)  # bad or ignored options fail here, before any process starts
    if args.nproc and not distributed.launched():
        return _launch(args)
    try:
        comm = distributed.init(args.backend, args.timeout, args.device)
    except GradregError as e:  # every rank finds it alike (--backend nccl without GPUs): rank 0 says so
        if os.environ.get("RANK", "0") != "0" and not args.verbose:
            return e.exit_code
        raise
    if comm.world == 1:
        return _train(args, comm)
    try:
        code = distributed.run_rank(lambda: _train(args, comm), comm, lambda e: _error_text(e, args), verbose=args.verbose)
    finally:
        comm.close()
    # The work is done and written. Leave now: gloo's and pyarrow's threads torn down by the
    # interpreter's exit have ended a finished rank with SIGABRT (std::terminate) about 1 run in 12.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _error_text(e: BaseException, args: argparse.Namespace) -> tuple[str | None, int | None]:
    """The one-line message and exit status of an error; (None, None) for a bug."""
    if isinstance(e, GradregError):
        return e.render(FLAGS), e.exit_code  # options named as the flags the user typed
    if isinstance(e, KeyboardInterrupt):
        return "interrupted", 130
    if isinstance(e, MemoryError) or (  # torch reports a failed allocation as a RuntimeError
        isinstance(e, RuntimeError) and ("can't allocate memory" in str(e) or "out of memory" in str(e))
    ):
        return OUT_OF_MEMORY, EXIT_FAILURE
    from .distributed import communication_error, launched

    if launched() and communication_error(e):
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return f"lost contact with the other ranks (a rank died, or --timeout {args.timeout:g} s passed): {first}", EXIT_FAILURE
    if isinstance(e, OSError):
        return f"{e.filename or ''}{': ' if e.filename else ''}{e.strerror or e}", EXIT_FAILURE
    return None, None


def _check_job(args: argparse.Namespace) -> None:
    """What every rank would refuse at once, refused once here before N ranks start (seconds
    each): the outputs, the data's columns (from the header and first chunk), and the options."""
    _check_output(args.output)
    if args.plots:
        from .plots import require_matplotlib

        _check_folder("--plots", args.plots)
        require_matplotlib()
    if args.data == "-":
        raise ConfigError("distributed training reads files: stdin (-) cannot be shared between ranks")
    stream = _stream(args, args.data)
    if stream is not None:  # files: Parquet footers and the first chunk, as every rank reads them
        from .io import StreamingDataset

        StreamingDataset(
            stream, args.target, args.features, weight=args.weight, drop_missing=args.drop_missing, design=_design_request(args)
        )
    elif not os.path.exists(args.data) or os.path.getsize(args.data) < 1 << 20:
        _load_dataset(args, args.data, args.target, args.features, args.weight)  # built-in, small or missing: cheap
    _config(args)  # last: it imports torch (seconds), which a wrong column name should not wait for


def _launch(args: argparse.Namespace) -> int:
    """``--nproc N``: start N copies of this command (without --nproc) and wait; say how it failed."""
    from .distributed import launch

    _check_job(args)
    argv, skip = [], False
    for a in args.argv:  # the same command without --nproc/--max-restarts
        if skip:
            skip = False
            continue
        if a in ("--nproc", "--max-restarts"):
            skip = True
            continue
        if a.startswith(("--nproc=", "--max-restarts=")):
            continue
        argv.append(a)
    started = time.time()
    failed = launch(["-m", "gradreg", *argv], args.nproc, args.max_restarts)
    if failed is None:
        return EXIT_OK
    rank, exitcode, signal_name = failed
    if exitcode == EXIT_USAGE:
        return EXIT_USAGE  # bad input: the rank that found it said so in one Error line, as one process does
    how = f"signal {signal_name}" if exitcode < 0 else f"status {exitcode}"
    written = os.path.exists(args.output) and os.path.getmtime(args.output) >= started
    result = f"{args.output} was written before it" if written else "no model was written"
    sys.stderr.write(f"Error: the job failed (first exit: rank {rank}, {how}); {result}\n")
    return EXIT_FAILURE


def _train(args: argparse.Namespace, comm) -> int:
    from .pipeline import train

    cfg = _config(args)
    _check_output(args.output)
    if args.plots:
        from .plots import require_matplotlib

        _check_folder("--plots", args.plots)
        require_matplotlib()  # before the fit, not after it
        os.makedirs(args.plots, exist_ok=True)  # an unusable folder fails now, before any work
    ds = _load_dataset(args, args.data, args.target, args.features, args.weight, comm)
    lead = comm.lead  # only rank 0 writes and speaks (others with --verbose)
    mode = _mode(args) if lead else ("lines" if args.verbose else "quiet")
    _WARNINGS.show = mode in ("tty", "lines")  # -q: nothing but errors; --json: in the summary object
    err = _console(stderr=True)
    if mode in ("tty", "lines"):
        for n in ds.notices:
            err.print(f"note: {n}")
        # what the model will fit, before the work: a stray target-like feature shows here
        err.print(f"features: {_names(ds.feature_names)} → targets: {_names(ds.target_names, count=False)}")
    resume = args.resume
    if comm.world > 1 and not resume and args.checkpoint_dir and int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0):
        resume = "auto"  # torchrun restarted the job: go on from the last checkpoint, if any
    prefix = "" if lead else f"rank {comm.rank}: "
    if cfg.solver == "gd":
        printer = EpochPrinter(cfg.epochs, mode=mode, stream=None if lead else sys.stderr, prefix=prefix)
    else:
        printer = SolvePrinter(ds, mode=mode, count=comm.world == 1)
    with printer:
        model = train(
            ds,
            cfg,
            on_epoch=printer if cfg.solver == "gd" else None,
            shuffle_buffer=args.shuffle_buffer,
            checkpoint_dir=args.checkpoint_dir,
            checkpoint_every=args.checkpoint_every,
            resume=resume,
            comm=comm,
        )
    if lead and mode in ("tty", "lines") and model.info.get("stop_reason"):
        _console().print(model.info["stop_reason"])  # after the last epoch line: why there are no more
    comm.check()  # every rank finished: only now may the model file appear
    plots = []
    if lead:
        model.save(args.output)
        if args.plots:
            from .plots import model_plots

            X, Y = (ds.X, ds.Y) if hasattr(ds, "X") else _sample_rows(ds)
            plots = model_plots(model, args.plots, X, Y, title=_data_label(args.data))
    comm.check()  # rank 0 wrote it; if it could not, every rank exits non-zero
    if lead:
        _report_trained(model, args.output, mode, err, plots)
    return EXIT_OK


def _names(names: Sequence[str], count: bool = True, shown: int = 8) -> str:
    """'a, b, c (3)'; a long list keeps its ends, and always its count: 'x0, x1, …, x99 (100)'."""
    listed = list(names) if len(names) <= shown else [*names[:2], "…", names[-1]]
    return ", ".join(listed) + (f" ({len(names)})" if count or len(names) > shown else "")


def _sample_rows(sds, limit: int = 200_000):
    """Up to ``limit`` rows of a streamed dataset, for pictures (spread over its chunks)."""
    import numpy as np

    from .plots import MAX_POINTS

    Xs, Ys, kept = [], [], 0
    for X, Y, _ in sds.chunks():
        take = max(1, min(len(X), MAX_POINTS // 8))
        Xs.append(X[:take])
        Ys.append(Y[:take])
        kept += take
        if kept >= limit:
            break
    return np.concatenate(Xs), np.concatenate(Ys)


def _data_label(data: str) -> str:
    return "<stdin>" if data == "-" else os.path.basename(str(data))


MODEL_SUFFIXES = (".safetensors",)
PREDICTION_SUFFIXES = (".csv", ".parquet", ".pq", ".jsonl", ".ndjson")  # what io.ColumnWriter writes
JSON_LINES_SUFFIXES = (".jsonl", ".ndjson")
REPORT_SUFFIXES = (".html", ".htm")


def _check_output(path: str, suffixes: Sequence[str] = MODEL_SUFFIXES, what: str = "a model", stdout: bool = False) -> None:
    """Refuse, before any work, an -o that would not give the file asked for: a folder, an unknown
    suffix (predictions as CSV text in out.xlsx), '-' where stdout makes no sense, a missing folder."""
    accepted = ", ".join(suffixes[:-1]) + f" or {suffixes[-1]}" if len(suffixes) > 1 else suffixes[0]
    accepted += ", or - for stdout" if stdout else ""
    if path == "-":
        if stdout:
            return
        raise ConfigError(f"-o -: {what} is binary and is not written to stdout; give a file name ending in {accepted}")
    if os.path.isdir(path):
        raise ConfigError(f"-o {path}: is a folder; give a file name ending in {accepted}")
    suffix = os.path.splitext(path)[1]
    if suffix.lower() not in suffixes:
        got = f"unknown suffix {suffix!r}" if suffix else "no suffix"
        raise ConfigError(f"-o {path}: {got} for {what}; expected {accepted}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ConfigError(f"-o {path}: folder {folder} does not exist")


def _check_folder(option: str, path: str) -> None:
    """Refuse a folder option (plot -o, --plots) that names stdout or an existing file."""
    if path == "-":
        raise ConfigError(f"{option} -: pictures are PNG files written into a folder, not to stdout; give a folder name")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"{option} {path}: exists and is not a folder; give a folder for the PNG files")


def _report_trained(model, output: str, mode: str, err, plots: Sequence[str] = ()) -> None:
    from .display import coef_table, gap_line, metrics_table

    if mode == "json":
        summary = {"event": "summary", "model": output, "plots": list(plots), **model.to_json()}
        kept = [w for w in model.warnings if w not in _WARNINGS.seen and w not in _WARNINGS.python]
        summary["warnings"] = _WARNINGS.seen + kept  # each once, in the CLI's words where it has its own
        print(json.dumps(summary))
        return
    if mode == "quiet":
        return
    for w in model.warnings:
        if w not in _WARNINGS.seen and w not in _WARNINGS.python:  # shown once already, when the library raised it
            err.print(f"warning: {w}", markup=False)
    out = _console()
    if model.config.get("solver") == "gd":
        out.print(gap_line(model))
    out.print(coef_table(model))
    out.print(metrics_table(model.metrics, model.target_names))
    out.print(f"wrote {output}" + "".join(f", {p}" for p in plots))


def _load_model(path: str):
    from .fitted import FittedModel

    return FittedModel.load(path)


PREDICT_CSV_ROWS = 8192  # rows per chunk of CSV that predict reads at most: with 100 features, 6.5 MB fits the cache


def _predicted(model, tables, drop_missing: bool, design=None, interval: str | None = None, level: float = 0.95):
    """(table, predictions, kept) of each chunk; kept is None when every row was predicted.
    --drop-missing keeps the output aligned with the input: a row it drops gets NaN (an empty cell).
    With an interval, each target's prediction is followed by its lower and upper bound."""
    import numpy as np

    from .io import feature_matrix

    width = len(model.target_names) * (1 if interval is None else 3)
    if interval is not None:
        model = _IntervalPredictor(model, interval, level)
    buf = None  # one Fortran-ordered float64 block, refilled chunk after chunk
    for table in tables:
        if buf is None or len(buf) < table.data.num_rows:
            buf = np.empty((table.data.num_rows, len(model.feature_names)), order="F")
        X, kept = feature_matrix(table, model.feature_names, drop_missing=drop_missing, out=buf, design=design)
        if len(X) == len(kept):
            yield table, model.predict_matrix(X), None
            continue
        Yhat = np.full((len(kept), width), np.nan)
        Yhat[kept] = model.predict_matrix(X)
        yield table, Yhat, kept


class _IntervalPredictor:
    """A model whose predict gives, per target, the prediction, its lower and its upper bound."""

    def __init__(self, model, interval: str, level: float) -> None:
        self.model, self.interval, self.level = model, interval, level
        self.feature_names, self.target_names = model.feature_names, model.target_names

    def predict_matrix(self, X):
        import numpy as np

        return np.stack(self.model.interval_matrix(X, self.interval, self.level), axis=2).reshape(len(X), -1)


def _prediction_names(targets: Sequence[str], interval: str | None) -> list[str]:
    """The output columns: each target, followed by its bounds with an interval."""
    return [n for t in targets for n in ([t] if interval is None else [t, f"{t}_lower", f"{t}_upper"])]


def _interval_options(args: argparse.Namespace) -> tuple[str | None, float]:
    """--interval and --level, checked: a level needs an interval, and lies in (0, 1)."""
    if args.level is None:
        return args.interval, 0.95
    if args.interval is None:
        raise ConfigError(f"--level goes with --interval confidence|prediction; got --level {args.level:g} alone")
    if not 0 < args.level < 1:
        raise ConfigError(f"--level must be between 0 and 1; got --level {args.level:g}")
    return args.interval, args.level


def cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from .io import ColumnWriter, prefetch, read_table, require_features

    suffixes = JSON_LINES_SUFFIXES if args.json else PREDICTION_SUFFIXES
    _check_output(args.output, suffixes, "JSON lines (--json)" if args.json else "predictions", stdout=True)
    interval, level = _interval_options(args)
    model = _load_model(args.model)
    opts = _read_options(args, model)
    keep = list(opts.keep)
    inputs = model.input_names  # the columns the model reads (a design's, before encoding)
    if any(k in inputs for k in keep):  # read as the model reads it, and copied as read
        from dataclasses import replace

        opts = replace(opts, keep=tuple(k for k in keep if k not in inputs))
    clash = [k for k in keep if k in model.target_names]
    if clash:
        raise ConfigError(
            f"--keep {clash[0]}: the predictions are written in a column of that name (the model's target); "
            "keep another column, or rename it in the input"
        )
    if interval is not None:
        model._require_covariance()  # before any output: a ridge model or an old file says so at once
    stream = _stream(args, args.data, options=opts)
    if stream is None:
        table = read_table(args.data, options=opts)
        _require_keep(table.source, [str(c) for c in table.data.column_names] + list(opts.dates), keep)
        tables = iter([table])
    else:
        require_features(stream.files[0].path, stream.columns, model.input_names)
        _require_keep(stream.files[0].path, stream.files[0].columns, keep)
        if all(f.kind == "csv" for f in stream.files):
            # CSV is parsed in 1 MiB blocks whatever the chunk; a chunk of 65,536 B1 rows held 52 MB
            # that mimalloc gave back and faulted in again chunk after chunk (0.1 CPU-s per 200 MB)
            stream.chunk_rows = min(stream.chunk_rows, PREDICT_CSV_ROWS)
        from .io.reading import kept_name

        extra = [kept_name(k) if k in opts.dates and k in opts.keep else k for k in keep]
        tables = stream.tables(inputs + [k for k in extra if k not in inputs])  # categorical as text: opts.text
    # chunk by chunk: memory stays bounded whatever the input's size; the next chunk is parsed in a
    # background thread (the longest step) while this one is predicted and written
    for n in table.notices if stream is None else stream.notices:  # a delimiter detected
        _console(stderr=True).print(f"note: {n}", markup=False)
    design = _design_for(args, model)
    chunks = _predicted(model, prefetch(tables), args.drop_missing, design, interval, level)
    skipped, where = 0, []
    json_lines = args.json or args.output.lower().endswith(JSON_LINES_SUFFIXES)
    names = _prediction_names(model.target_names, interval)
    with ColumnWriter(args.output, names, json_lines=json_lines, keep=keep) as out:
        for table, Yhat, kept in chunks:
            out.write(Yhat, _kept(table.data, keep))
            if kept is not None:
                missing = np.flatnonzero(~kept)
                where += [table.where(int(r)) for r in missing[: max(0, 5 - len(where))]]
                skipped += len(missing)
    _say_ignored(design)
    if skipped:
        lines = ", ".join(w.rsplit(", ", 1)[-1] for w in where) + (", …" if skipped > len(where) else "")
        _console(stderr=True).print(
            f"note: {skipped} row(s) with a missing feature value got empty predictions ({lines}); "
            "every input row has its output row",
            markup=False,
        )
    return EXIT_OK


def _design_for(args: argparse.Namespace, model):
    """The model's design with --unknown applied (unseen levels are counted as they are met), or None."""
    design = model.design
    return None if design is None else design.with_unknown(args.unknown)


def _say_ignored(design) -> None:
    """A note per categorical column whose unseen levels --unknown ignore predicted at the reference."""
    for col, count in (design.ignored if design is not None else {}).items():
        _console(stderr=True).print(
            f"note: {count} row(s) had a level of {col!r} not seen in training; --unknown ignore predicted them "
            f"with every {col!r} dummy 0 (at the reference level)"
        )


def _kept(data, keep: Sequence[str]):
    """The --keep columns of a chunk as read, or None."""
    if not keep:
        return None
    import pyarrow as pa

    from .io.reading import kept_column

    return pa.table({k: kept_column(data, k) for k in keep})


def _require_keep(source: str, columns: Sequence[str], keep: Sequence[str]) -> None:
    """Refuse --keep columns that the data lacks, listing its columns."""
    lacking = [k for k in keep if k not in columns]
    if lacking:
        from .errors import DataError

        raise DataError(f"{source}: no column named {', '.join(map(repr, lacking))} to --keep; columns are {', '.join(columns)}")


def _write_text(path: str, text: str) -> None:
    """Write text to a file atomically, or to stdout for '-'."""
    if path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    from .persist import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .display import metrics_table
    from .pipeline import evaluate

    model = _load_model(args.model)
    opts = _read_options(args, model)
    stream = _stream(args, args.data, model)
    for n in stream.notices if stream is not None else []:  # a delimiter detected
        _console(stderr=True).print(f"note: {n}", markup=False)
    design = _design_for(args, model)
    n_rows, metrics = evaluate(model, args.data, drop_missing=args.drop_missing, stream=stream, options=opts, design=design)
    _say_ignored(design)
    if args.json:
        print(json.dumps(_clean({"targets": model.target_names, "n_rows": n_rows, "metrics": metrics})))
    else:
        _console().print(metrics_table({"data": metrics}, model.target_names))
    return EXIT_OK


def cmd_inspect(args: argparse.Namespace) -> int:
    from .display import coef_table, gap_line, metrics_table, summary_text

    model = _load_model(args.model)
    if args.json:
        print(json.dumps(model.to_json()))
        return EXIT_OK
    out = _console()
    info, cfg = model.info, model.config
    out.print(f"model: {args.model}")
    out.print(
        f"solver {cfg.get('solver')}  rows {info.get('n_rows')}  features {len(model.feature_names)}  "
        f"targets {len(model.target_names)}  seed {cfg.get('seed')}"
    )
    out.print(f"data {info.get('source')}  sha256 {str(info.get('data_sha256', ''))[:16]}…")
    ranks = f", {info['world_size']} processes ({info.get('backend')})" if info.get("world_size") else ""
    resumed = f", resumed from epoch {info['resumed_from_epoch']}" if info.get("resumed_from_epoch") else ""
    out.print(
        f"made by gradreg {info.get('gradreg_version')}, torch {info.get('torch_version')} on {info.get('created')}"
        f"{ranks}{resumed}"
    )
    if cfg.get("solver") == "gd":
        out.print(
            gap_line(model)
            + f"  after {info.get('epochs_run')} epoch{'' if info.get('epochs_run') == 1 else 's'}, lr {info.get('lr', 0):.4g}, batch {info.get('batch_size')}"
        )
        from .fitted import stop_reason

        reason = info.get("stop_reason") or stop_reason(cfg, info, model.history)  # older files lack it
        if reason:
            out.print(reason)
    out.print(coef_table(model))
    out.print(metrics_table(model.metrics, model.target_names))
    for t in range(len(model.stats)):
        out.print(summary_text(model, t), markup=False)
    return EXIT_OK


def cmd_datasets(args: argparse.Namespace) -> int:
    from .io import BUILTIN_DESCRIPTIONS, builtin_names

    if args.json:
        print(json.dumps([{"name": n, "description": BUILTIN_DESCRIPTIONS[n]} for n in builtin_names()]))
        return EXIT_OK
    for name in builtin_names():
        print(f"{name}\t{BUILTIN_DESCRIPTIONS[name]}")
    return EXIT_OK


def _data_for_model(args: argparse.Namespace, model):
    """(X, Y) of DATA in the model's column order, or (None, None) without DATA."""
    if args.data is None:
        return None, None
    from .io import read_table, select

    table = read_table(args.data, options=_read_options(args, model))
    for n in table.notices:  # a delimiter detected
        _console(stderr=True).print(f"note: {n}", markup=False)
    design = _design_for(args, model)
    ds = select(table, model.target_names, model.feature_names, drop_missing=args.drop_missing, min_rows=1, design=design)
    _say_ignored(design)
    return ds.X, ds.Y


def cmd_plot(args: argparse.Namespace) -> int:
    from .plots import model_plots, require_matplotlib

    _check_folder("-o", args.output)
    require_matplotlib()
    model = _load_model(args.model)
    X, Y = _data_for_model(args, model)
    if X is None and not model.history:
        raise ConfigError(f"{args.model}: an exact-solver model has no loss curve; give DATA to plot predictions and residuals")
    paths = model_plots(model, args.output, X, Y, title=_data_label(args.data) if X is not None else "")
    if args.json:
        print(json.dumps({"plots": paths}))
    else:
        for path in paths:
            print(f"wrote {path}")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from .plots import require_matplotlib
    from .report import html_report

    require_matplotlib()
    _check_output(args.output, REPORT_SUFFIXES, "an HTML report", stdout=True)
    model = _load_model(args.model)
    X, Y = _data_for_model(args, model)
    page = html_report(model, args.model, X, Y, data_label=_data_label(args.data) if X is not None else None)
    _write_text(args.output, page)
    if args.output != "-":
        if args.json:
            print(json.dumps({"report": args.output, "bytes": len(page.encode())}))
        else:
            print(f"wrote {args.output}")
    return EXIT_OK


def cmd_completion(args: argparse.Namespace) -> int:
    import shtab

    sys.stdout.write(shtab.complete(build_parser(), shell=args.shell))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """The tutorial, done right: crops, batch size 3, shuffled, 50 epochs, seeded."""
    t0 = time.perf_counter()
    _check_folder("--out", args.out)
    os.makedirs(args.out, exist_ok=True)
    from .plots import BackgroundPlotter

    plotter = BackgroundPlotter()  # matplotlib loads on the other core while torch loads here
    try:
        return _demo(args, plotter, t0)
    finally:
        plotter.close()


def _demo(args: argparse.Namespace, plotter, t0: float) -> int:
    from .config import TrainConfig
    from .display import coef_table, gap_line, predictions_table
    from .io import load
    from .pipeline import train

    ds = load("crops", ["mangoes", "oranges"])
    # the tutorial's settings: all 50 epochs, however soon its table is fitted
    cfg = TrainConfig(epochs=50, batch_size=3, tol=None, seed=args.seed, device=args.device).validate()
    out = _console()
    mode = "json" if args.json else ("tty" if sys.stdout.isatty() else "lines")
    if mode != "json":
        out.print("gradreg demo: the PyTorch tutorial's crop table (15 rows), mangoes and oranges from")
        out.print("temperature, rainfall and humidity; minibatch SGD, batch size 3, shuffled, 50 epochs.\n")
    with EpochPrinter(cfg.epochs, mode=mode) as printer:
        model = train(ds, cfg, on_epoch=printer)
    path = os.path.join(args.out, "crops.safetensors")
    model.save(path)
    Yhat = model.predict_matrix(ds.X)
    pngs = plotter.draw(
        [
            (
                "loss_curve",
                dict(
                    history=model.history,
                    optimum=model.optimum["mean_objective"],
                    path=os.path.join(args.out, "loss.png"),
                    title="gradreg demo: crops",
                ),
            ),
            (
                "predicted_vs_actual",
                dict(
                    Y=ds.Y,
                    Yhat=Yhat,
                    target_names=ds.target_names,
                    path=os.path.join(args.out, "predicted_vs_actual.png"),
                    title="crops",
                ),
            ),
            (
                "residuals",
                dict(
                    Y=ds.Y, Yhat=Yhat, target_names=ds.target_names, path=os.path.join(args.out, "residuals.png"), title="crops"
                ),
            ),
        ]
    )
    if mode == "json":
        print(json.dumps({"event": "summary", "model": path, "plots": pngs, **model.to_json()}))
        return EXIT_OK
    from .io import read_table

    regions = [str(r) for r in read_table("crops").data.column("region").to_pylist()]
    out.print(predictions_table(ds.X, ds.Y, Yhat, ds.target_names, regions))
    out.print(coef_table(model))
    out.print(gap_line(model))
    out.print(f"exact optimum (least squares): MSE {model.optimum['mean_objective']:.4f}")
    out.print(f"wrote {path}, {', '.join(pngs)} in {time.perf_counter() - t0:.1f} s")
    return EXIT_OK


COMMANDS = {
    "train": cmd_train,
    "predict": cmd_predict,
    "evaluate": cmd_evaluate,
    "inspect": cmd_inspect,
    "demo": cmd_demo,
    "datasets": cmd_datasets,
    "plot": cmd_plot,
    "report": cmd_report,
    "completion": cmd_completion,
}
