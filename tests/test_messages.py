"""Messages that say what happened (issue 12): each audience reads its own option names, ignored
options are pointed out, early stops are explained, and the exact solver shows what it does."""

import io
import json
import warnings
from dataclasses import fields

import numpy as np
import pytest

from gradreg import LinearRegressor
from gradreg.cli import FLAGS, GD_ONLY_FLAGS, SolvePrinter, _names, build_parser
from gradreg.config import GD_ONLY, TrainConfig
from gradreg.errors import ConfigError, DataError, GradregError
from gradreg.io import load

from .conftest import write

XY = (np.arange(40.0).reshape(20, 2) % 7, np.arange(20.0))


# -- 1. Python callers read arguments, the CLI shows flags ------------------------------------
@pytest.mark.parametrize(
    "params, text",
    [
        ({"cov_type": "HC9"}, "cov_type must be one of nonrobust, HC0, HC1, HC2, HC3, cluster, HAC; got cov_type='HC9'"),
        ({"conf_level": 1.5}, "conf_level must be between 0 and 1; got conf_level=1.5"),
        ({"epochs": 0}, "epochs must be a positive integer; got epochs=0"),
        ({"solver": "newton"}, "solver must be one of gd, exact; got solver='newton'"),
    ],
)
def test_python_errors_name_the_argument(params, text):
    with pytest.raises(ConfigError, match="^" + text.replace("(", r"\(").replace(")", r"\)") + "$") as e:
        LinearRegressor(**params).fit(*XY)
    assert "--" not in str(e.value)
    assert e.value.field == next(iter(params))


def test_python_errors_from_the_solver_and_the_split_name_arguments(tmp_path):
    from gradreg.pipeline import train
    from gradreg.solvers.exact import statistics

    with pytest.raises(ConfigError, match=r"^cov_type must be one of .*; got cov_type='HC9'$"):
        statistics(None, cov_type="HC9")
    with pytest.raises(ConfigError, match=r"^conf_level must be between 0 and 1; got conf_level=2$"):
        statistics(None, conf_level=2)
    with pytest.raises(DataError, match=r"^val_fraction=0.9 leaves 1 training row\(s\); at least 2 are needed$"):
        LinearRegressor(val_fraction=0.9).fit(XY[0][:10], XY[1][:10])
    ds = load("crops", "mangoes")
    with pytest.raises(ConfigError, match=r"^resume needs checkpoint_dir \(the folder of the checkpoint\)$"):
        train(ds, TrainConfig(), resume=True)


@pytest.mark.parametrize(
    "args, line",
    [
        (["--conf-level", "1.5"], "Error: --conf-level must be between 0 and 1; got --conf-level 1.5"),
        (["--val-fraction", "0.9"], "Error: --val-fraction 0.9 leaves 1 training row(s); at least 2 are needed"),
        (["--resume"], "Error: --resume needs --checkpoint-dir (the folder of the checkpoint)"),
        (
            ["--delimiter", ";;"],
            "Error: --delimiter must be one character or one of tab, '\\t', comma, semicolon, pipe, space; got --delimiter ;;",
        ),
    ],
)
def test_cli_errors_name_the_flag(cli, tmp_path, args, line):
    out = tmp_path / "m.safetensors"
    data = write(tmp_path / "crops.csv", "a,b,mangoes\n" + "".join(f"{i},{i % 3},{2 * i}\n" for i in range(15)))
    r = cli("train", data, "--target", "mangoes", "-o", out, *args)
    assert r.code == 2 and r.err.splitlines()[-1] == line and r.err.count("Error") == 1 and not out.exists()


def test_render_spells_each_placeholder_for_its_audience():
    e = ConfigError("{fit_intercept=} with {l2=} and {x}; {not_a_value} stays", fit_intercept=False, l2=0.5, x=1)
    assert str(e) == "fit_intercept=False with l2=0.5 and x; {not_a_value} stays"
    assert e.render(FLAGS) == "--no-intercept with --l2 0.5 and x; {not_a_value} stays"
    assert GradregError("plain {text}").render(FLAGS) == "plain {text}"


def test_flag_table_covers_every_config_field_with_a_real_flag():
    train = next(a for a in build_parser()._subparsers._group_actions[0].choices.items() if a[0] == "train")[1]
    options = {s for action in train._actions for s in action.option_strings}
    assert {f.name for f in fields(TrainConfig)} <= set(FLAGS)
    assert set(FLAGS.values()) <= options
    assert set(GD_ONLY) | set(GD_ONLY_FLAGS) <= set(FLAGS)


# -- 2. early stopping says why ------------------------------------------------------------------
def _expected_stop(history, patience, watched):
    losses = [h[watched] for h in history]
    best = int(np.argmin(losses)) + 1
    assert len(history) == best + patience  # it stopped exactly `patience` epochs after the best
    return best


def test_early_stopping_explains_itself_in_the_cli_and_inspect(cli, tmp_path):
    path = tmp_path / "m.safetensors"
    r = cli("train", "crops", "--target", "mangoes", "--early-stopping", "3", "--tol", "0", "--json", "-o", path)
    summary = json.loads(r.out.strip().splitlines()[-1])
    history = [json.loads(ln) for ln in r.out.strip().splitlines()[:-1]]
    best = _expected_stop(history, 3, "loss")
    line = (
        f"stopped early at epoch {best + 3} of 50: the training loss (there is no validation split) did not improve "
        f"for 3 epochs (best at epoch {best}; its weights are kept)"
    )
    assert best + 3 < 50 and summary["info"]["stop_reason"] == line and summary["info"]["stopped_early"]
    r = cli("train", "crops", "--target", "mangoes", "--early-stopping", "3", "--tol", "0", "-o", path)
    assert line + "\n" in r.out
    assert r.out.index(f"epoch {best + 3}/50") < r.out.index(line)  # right after the last epoch
    assert line in cli("inspect", path).out


def test_early_stopping_on_the_validation_loss(cli, tmp_path):
    path = tmp_path / "m.safetensors"
    r = cli(
        "train",
        "crops",
        "--target",
        "mangoes",
        "--early-stopping",
        "3",
        "--tol",
        "0",
        "--val-fraction",
        "0.2",
        "--json",
        "-o",
        path,
    )
    lines = r.out.strip().splitlines()
    best = _expected_stop([json.loads(ln) for ln in lines[:-1]], 3, "val_loss")
    assert json.loads(lines[-1])["info"]["stop_reason"] == (
        f"stopped early at epoch {best + 3} of 50: the validation loss did not improve for 3 epochs "
        f"(best at epoch {best}; its weights are kept)"
    )


def test_early_stopping_in_the_python_api():
    X, Y = load("crops", "mangoes").X, load("crops", "mangoes").Y[:, 0]
    est = LinearRegressor(early_stopping=3, tol=0).fit(X, Y)
    best = _expected_stop(est.history_, 3, "loss")
    assert est.stopped_early_ and est.best_epoch_ == best and est.n_iter_ == best + 3
    assert est.stop_reason_.startswith(f"stopped early at epoch {best + 3} of 50: the training loss")
    assert f"Note: {est.stop_reason_}" in str(est.summary())
    full = LinearRegressor(epochs=5, tol=0).fit(X, Y)
    assert (full.stopped_early_, full.best_epoch_, full.n_iter_, full.stop_reason_) == (False, 5, 5, None)
    assert "Note:" not in str(full.summary())


# -- 3. options the exact solver ignores -------------------------------------------------------
def test_cli_refuses_gradient_descent_options_with_the_exact_solver(cli, tmp_path):
    out = tmp_path / "m.safetensors"
    r = cli("train", "crops", "--target", "mangoes", "--solver", "exact", "--optimizer", "adam", "--epochs", "10", "--lr", "0.1")
    assert r.code == 2
    assert r.err == "Error: --epochs, --lr, --optimizer apply to --solver gd; the exact solver does not use them\n"
    r = cli("train", "crops", "--target", "mangoes", "--solver", "exact", "--checkpoint-dir", tmp_path, "-o", out)
    assert r.err == "Error: --checkpoint-dir applies to --solver gd; the exact solver does not use it\n"
    assert not out.exists()
    # options that the exact solver reads are accepted, and so are the defaults
    r = cli("train", "crops", "--target", "mangoes", "--solver", "exact", "--l2", "0.1", "--val-fraction", "0.2", "-o", out)
    assert r.code == 0, r.err


def test_python_warns_about_arguments_the_exact_solver_ignores():
    with pytest.warns(UserWarning, match=r"^lr=0.1, optimizer='adam' apply to solver='gd'; solver='exact' does not use them$"):
        LinearRegressor(solver="exact", lr=0.1, optimizer="adam").fit(*XY)
    with pytest.warns(UserWarning, match=r"^standardize=False applies to solver='gd'"):
        LinearRegressor(solver="exact", standardize=False).fit(*XY)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LinearRegressor(solver="exact", l2=0.1, cov_type="HC1").fit(*XY)
        LinearRegressor(lr=0.01, epochs=3).fit(*XY)


# -- 4. the exact solver's progress ----------------------------------------------------------
def _tty():
    from rich.console import Console

    buf = io.StringIO()
    return buf, Console(file=buf, force_terminal=True, width=100)


def test_exact_progress_in_memory_says_solving_with_no_epoch_bar():
    from gradreg.pipeline import train

    ds = load("crops", "mangoes")
    buf, console = _tty()
    with SolvePrinter(ds, mode="tty", console=console):
        train(ds, TrainConfig(solver="exact"))
    assert "solving: 15 rows × 4 features" in buf.getvalue() and "epoch" not in buf.getvalue()


def test_exact_progress_counts_streamed_rows_then_solves(tmp_path):
    from gradreg.io import Stream, StreamingDataset
    from gradreg.pipeline import train

    rows = "".join(f"{i},{i % 7},{3 * i + i % 5}\n" for i in range(3000))
    sds = StreamingDataset(Stream(write(tmp_path / "d.csv", "a,b,y\n" + rows), chunk_rows=500), "y")
    shown = []

    class Recording(SolvePrinter):  # every line the spinner was given, whatever rich redrew
        def _text(self):
            shown.append(super()._text())
            return shown[-1]

    buf, console = _tty()
    with Recording(sds, mode="tty", console=console) as printer:
        train(sds, TrainConfig(solver="exact"))
    assert shown[:2] == ["reading rows", "reading rows: 0"]  # then the count runs, at most 10 updates a second
    assert "solving: 3,000 rows × 2 features" in shown and "pass 2 over the rows: 0 of 3,000" in shown
    assert "solving: 3,000 rows × 2 features" in buf.getvalue() and "epoch" not in buf.getvalue()
    assert printer.passes >= 2 and printer.total == 3000  # the factor pass, then the residual pass


def test_exact_progress_is_silent_when_piped(cli, tmp_path):
    r = cli("train", "crops", "--target", "mangoes", "--solver", "exact", "-o", tmp_path / "m.safetensors")
    assert r.code == 0 and "epoch" not in r.out and "solving" not in r.out


# -- 5. what is fitted, and --exclude -------------------------------------------------------------
def test_train_says_which_features_and_targets(cli, tmp_path):
    out = tmp_path / "m.safetensors"
    r = cli("train", "crops", "--target", "mangoes,oranges", "--solver", "exact", "-o", out)
    assert "features: temperature, rainfall, humidity (3) → targets: mangoes, oranges\n" in r.err
    for quiet in ("-q", "--json"):
        assert "features:" not in cli("train", "crops", "--target", "mangoes", "--solver", "exact", "-o", out, quiet).err
    assert _names([f"x{i}" for i in range(100)]) == "x0, x1, …, x99 (100)"
    assert _names(list("abcdefgh")) == "a, b, c, d, e, f, g, h (8)"
    assert _names(["y"], count=False) == "y"


@pytest.fixture
def two_targets(tmp_path):
    return write(
        tmp_path / "d.csv", "a,b,y,y2\n" + "".join(f"{i},{i * i % 7},{2 * i + 1 + i * i % 5 / 3},{i % 3}\n" for i in range(12))
    )


@pytest.mark.parametrize("stream", [[], ["--stream"]])
def test_exclude_leaves_columns_out_of_the_default_features(cli, tmp_path, two_targets, stream):
    out = tmp_path / "m.safetensors"
    r = cli("train", two_targets, "--target", "y", "--solver", "exact", "-o", out, *stream)
    assert "features: a, b, y2 (3) → targets: y\n" in r.err  # without it, y2 is silently a feature
    r = cli("train", two_targets, "--target", "y", "--solver", "exact", "--exclude", "y2", "-o", out, *stream)
    assert r.code == 0 and "features: a, b (2) → targets: y\n" in r.err
    assert json.loads(cli("inspect", out, "--json").out)["features"] == ["a", "b"]
    r = cli("train", two_targets, "--target", "y", "--solver", "exact", "--exclude", "y2,b", "--exclude", "a", *stream)
    assert r.err.endswith(
        f"Error: {two_targets}: no numeric feature columns besides the target(s): "
        "column 'a' is excluded; column 'b' is excluded; column 'y2' is excluded\n"
    )


def test_exclude_errors(cli, two_targets):
    r = cli("train", two_targets, "--target", "y", "--exclude", "y2,zz", "--exclude", "qq")
    assert r.err == f"Error: {two_targets}: --exclude names no column 'zz', 'qq'; columns are a, b, y, y2\n"
    r = cli("train", two_targets, "--target", "y", "--exclude", "y2", "--features", "a")
    assert r.err == (
        "Error: --exclude leaves columns out of the default features; with --features, name only the features wanted\n"
    )
    with pytest.raises(DataError, match=r"^.*d\.csv: exclude names no column 'zz'; columns are a, b, y, y2$"):
        load(two_targets, "y", exclude=["zz"])
    assert load(two_targets, "y", exclude="y2").feature_names == ["a", "b"]
