"""Pictures: each PNG is written, has the expected size, and is not blank."""

import json
import sys

import numpy as np
import pytest

from gradreg import plots

from .conftest import CROPS_Y

pytest.importorskip("matplotlib", reason="matplotlib is the optional 'plots' extra; the dev extra installs it")


def assert_png_drawn(path, min_size=(400, 300)):
    """The file is a PNG of at least min_size pixels with real content: many colours, not mostly blank."""
    from matplotlib.image import imread

    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    img = imread(path)
    h, w = img.shape[:2]
    assert w >= min_size[0] and h >= min_size[1]
    rgb = img[..., :3]
    ink = (rgb < 0.9).any(axis=-1).mean()  # share of pixels that are not (near) white
    assert 0.01 < ink < 0.6, f"{path}: {ink:.1%} of the pixels are drawn"
    assert len(np.unique(rgb.reshape(-1, 3).round(2), axis=0)) > 20  # lines, text and markers, not one flat fill
    return img


def test_loss_curve_with_validation_and_optimum(tmp_path):
    history = [{"epoch": e, "loss": 10.0 / e, "val_loss": 12.0 / e} for e in range(1, 21)]
    path = plots.loss_curve(history, 0.4, str(tmp_path / "loss.png"))
    assert_png_drawn(path)


def test_predicted_vs_actual_and_residuals_one_panel_per_target(tmp_path):
    Yhat = CROPS_Y + np.random.default_rng(0).normal(size=CROPS_Y.shape)
    one = plots.predicted_vs_actual(CROPS_Y[:, :1], Yhat[:, :1], ["mangoes"], str(tmp_path / "p1.png"))
    two = plots.predicted_vs_actual(CROPS_Y, Yhat, ["mangoes", "oranges"], str(tmp_path / "p2.png"))
    w1 = assert_png_drawn(one).shape[1]
    w2 = assert_png_drawn(two).shape[1]
    assert w2 > 1.8 * w1  # a second panel beside the first
    r1 = assert_png_drawn(plots.residuals(CROPS_Y[:, :1], Yhat[:, :1], ["mangoes"], str(tmp_path / "r1.png")))
    r2 = assert_png_drawn(plots.residuals(CROPS_Y, Yhat, ["mangoes", "oranges"], str(tmp_path / "r2.png")))
    assert r2.shape[0] > 1.8 * r1.shape[0]  # a row per target


def test_scatter_of_many_rows_is_sampled(tmp_path):
    rng = np.random.default_rng(1)
    Y = rng.normal(size=(200_000, 1))
    path = plots.predicted_vs_actual(Y, Y + 0.1 * rng.normal(size=Y.shape), ["y"], str(tmp_path / "big.png"))
    assert_png_drawn(path)
    assert len(plots._sample(200_000)) == plots.MAX_POINTS


def test_train_plots_and_plot_command(cli, tmp_path):
    model = tmp_path / "m.safetensors"
    r = cli("train", "crops", "--target", "mangoes,oranges", "--val-fraction", "0.2", "-o", model, "--plots", tmp_path / "train")
    assert r.code == 0, r.err
    names = ["loss.png", "predicted_vs_actual.png", "residuals.png"]
    for name in names:
        assert_png_drawn(tmp_path / "train" / name)
        assert str(tmp_path / "train" / name) in r.out
    r = cli("plot", model, "crops", "-o", tmp_path / "again", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["plots"] == [str(tmp_path / "again" / n) for n in names]
    for name in names:
        assert_png_drawn(tmp_path / "again" / name)


def test_plot_without_data_draws_only_the_loss_curve(cli, tmp_path):
    model = tmp_path / "m.safetensors"
    assert cli("train", "crops", "--target", "mangoes", "-q", "-o", model).code == 0
    r = cli("plot", model, "-o", tmp_path / "p")
    assert r.code == 0 and r.out.strip() == f"wrote {tmp_path / 'p' / 'loss.png'}"
    exact = tmp_path / "e.safetensors"
    assert cli("train", "crops", "--target", "mangoes", "--solver", "exact", "-q", "-o", exact).code == 0
    r = cli("plot", exact, "-o", tmp_path / "q")
    assert r.code == 2 and "an exact-solver model has no loss curve; give DATA" in r.err


def test_missing_matplotlib_says_how_to_install(cli, tmp_path, monkeypatch):
    model = tmp_path / "m.safetensors"
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    r = cli("train", "crops", "--target", "mangoes", "-o", model, "--plots", tmp_path / "p")
    assert r.code == 1
    assert r.err == "Error: " + plots.INSTALL_HINT + "\n"
    assert not model.exists()  # checked before the fit, so nothing was half done
    assert plots.INSTALL_HINT.endswith("pip install 'gradreg[plots]' (or pip install matplotlib)")


def test_unusable_plots_folder_fails_before_training(cli, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    model = tmp_path / "m.safetensors"
    r = cli("train", "crops", "--target", "mangoes", "-o", model, "--plots", blocker / "plots")
    assert r.code == 1 and r.err.startswith("Error: ") and r.err.count("\n") == 1
    assert not model.exists()  # no model without the pictures that were asked for
