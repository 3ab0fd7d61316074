"""Messy real-world files through the CLI (tests/data/messy/): each gives a correct result, or one
'Error:' line on stderr that names the file, line, column and value and says what to do, with exit
status 2, no traceback and nothing written."""

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from .conftest import ols, write

MESSY = Path(__file__).parent / "data" / "messy"
SWAP = "(did you swap MODEL and DATA? gradreg predict, evaluate, plot and report take MODEL first, then DATA)"


def messy(name: str) -> str:
    return str(MESSY / name)


def columns(name: str, delimiter: str = ","):
    """The file's numeric columns by name, read by numpy (the independent reader)."""
    with open(MESSY / name) as f:
        names = [n.strip() for n in f.readline().split(delimiter)]
    values = np.loadtxt(MESSY / name, delimiter=delimiter, skiprows=1, ndmin=2)
    return dict(zip(names, values.T))


def error(r, folder, before=()) -> str:
    """The one error line of a failed command, without 'Error: '; it wrote nothing into ``folder``
    (which held the files ``before``)."""
    assert r.code == 2, (r.code, r.err)
    assert r.out == "" and "Traceback" not in r.err
    # train names its columns before it fits (`features: …`); a data error found while fitting follows
    lines = [ln for ln in r.err.splitlines() if not ln.startswith(("features: ", "note: "))]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and r.err.endswith("\n"), r.err
    assert sorted(os.listdir(folder)) == sorted(before)
    return lines[0][len("Error: ") :]


def fitted(cli, tmp_path, *args):
    """Train (exact solver) and return the model's JSON."""
    out = tmp_path / "m.safetensors"
    r = cli("train", *args, "--solver", "exact", "-q", "-o", out)
    assert r.code == 0, r.err
    return json.loads(cli("inspect", out, "--json").out)


def assert_ols(model, X, y):
    coef, icpt = ols(X, y)
    np.testing.assert_allclose(model["coef"][0], coef[0], rtol=1e-9)
    np.testing.assert_allclose(model["intercept"][0], icpt[0], rtol=1e-9)


@pytest.mark.parametrize("stream", [[], ["--stream"]])
def test_semicolons_and_decimal_commas(cli, tmp_path, stream):
    src = messy("europe.csv")
    for given in ([], ["--delimiter", ";"], ["--delimiter", "semicolon"]):
        r = cli("train", src, "--target", "yield", *given, "-o", tmp_path / "m.safetensors", *stream)
        assert error(r, tmp_path) == (
            f"{src}, line 2, column 'yield': column 'yield' holds no numbers; got '4,1' (a decimal comma? give --decimal ',')"
        )
    r = cli("train", src, "--target", "yield", "--delimiter", ",", "-o", tmp_path / "m.safetensors", *stream)
    assert error(r, tmp_path) == (
        f"{src}, line 2: expected 1 field like the header, got 4; the header is one field holding ';': for a "
        "';'-separated file give --delimiter ';' (its numbers use decimal commas, as in '21,5': give --decimal ',' too)"
    )
    r = cli("train", src, "--target", "yield", "--decimal", ",", "--solver", "exact", "-o", tmp_path / "m.safetensors", *stream)
    assert r.code == 0, r.err
    assert f"note: {src}: read as ';'-separated (detected; give --delimiter to choose)" in r.err
    text = (MESSY / "europe.csv").read_text().replace(",", ".")
    values = np.loadtxt(text.splitlines()[1:], delimiter=";")
    model = json.loads(cli("inspect", tmp_path / "m.safetensors", "--json").out)
    assert_ols(model, values[:, :2], values[:, 2:])


@pytest.mark.parametrize("stream", [[], ["--stream"]])
def test_a_date_column(cli, tmp_path, stream):
    src = messy("dates.csv")
    r = cli("train", src, "--target", "yield", "--solver", "exact", "-o", tmp_path / "m.safetensors", *stream)
    assert r.code == 0 and "note: left out column 'date': it holds dates, not numbers (give --dates date to use it)" in r.err
    model = json.loads(cli("inspect", tmp_path / "m.safetensors", "--json").out)
    values = np.loadtxt(src, delimiter=",", skiprows=1, usecols=(1, 2, 3))  # all but the date
    assert model["features"] == ["temperature", "rainfall"]
    assert_ols(model, values[:, :2], values[:, 2:])
    os.remove(tmp_path / "m.safetensors")

    r = cli("train", src, "--target", "yield", "--features", "date,temperature", "-o", tmp_path / "m.safetensors", *stream)
    assert error(r, tmp_path) == (
        f"{src}, line 2, column 'date': expected a number, got '2024-01-01': dates are not numbers: give --dates date "
        "to use them as days since 1970-01-01 or leave the column out with --features"
    )


@pytest.mark.parametrize("stream", [[], ["--stream"]])
def test_spaces_around_header_names(cli, tmp_path, stream):
    model = fitted(cli, tmp_path, messy("spaces.csv"), "--target", "rain", *stream)
    assert model["features"] == ["temperature", "yield"] and model["targets"] == ["rain"]
    c = columns("spaces.csv")
    assert_ols(model, np.c_[c["temperature"], c["yield"]], c["rain"][:, None])


def test_a_tsv_and_the_ways_to_name_a_tab(cli, tmp_path):
    c = columns("weather.tsv", "\t")
    X, y = np.c_[c["temperature"], c["rain"]], c["yield"][:, None]
    assert_ols(fitted(cli, tmp_path, messy("weather.tsv"), "--target", "yield"), X, y)
    txt = shutil.copy(MESSY / "weather.tsv", tmp_path / "weather.txt")
    for given in ("\\t", "tab", "\t"):
        assert_ols(fitted(cli, tmp_path, txt, "--target", "yield", "--delimiter", given), X, y)
    # not given: detected from the file's head, and said
    r = cli("train", txt, "--target", "yield", "--solver", "exact", "-o", tmp_path / "m.safetensors")
    assert r.code == 0 and f"note: {txt}: read as tab-separated (detected; give --delimiter to choose)" in r.err
    assert_ols(json.loads(cli("inspect", tmp_path / "m.safetensors", "--json").out), X, y)
    os.remove(tmp_path / "m.safetensors")
    r = cli("train", txt, "--target", "yield", "--delimiter", ",", "-o", tmp_path / "m.safetensors")
    assert error(r, tmp_path, ["weather.txt"]) == (
        f"{txt}: no column named 'yield'; columns are temperature\train\tyield; the header is one field holding "
        "'\\t': for a '\\t'-separated file give --delimiter tab"
    )
    r = cli("train", txt, "--target", "yield", "--delimiter", "::", "-o", tmp_path / "m.safetensors")
    assert (
        error(r, tmp_path, ["weather.txt"])
        == "--delimiter must be one character or one of tab, '\\t', comma, semicolon, pipe, space; got --delimiter ::"
    )


@pytest.mark.parametrize("args", [["--solver", "exact"], ["--solver", "gd"], ["--stream"], ["--val-fraction", "0.25"]])
def test_an_outlier_of_1e200_is_named_by_line(cli, tmp_path, args):
    src = messy("outlier.csv")
    r = cli("train", src, "--target", "yield", "-o", tmp_path / "m.safetensors", *args)
    assert error(r, tmp_path) == (
        f"{src}, line 5, column 'rain': 1e+200 overflows float64 when squared (the limit is 1e+150); check it for an "
        "outlier or a data-entry error, or rescale the column, e.g. multiply it by 1e-200"
    )


def test_an_exact_fit(cli, tmp_path):
    out = tmp_path / "m.safetensors"
    assert cli("train", messy("exact.csv"), "--target", "y", "-q", "-o", out).code == 0
    pred = np.array(cli("predict", out, messy("exact.csv")).out.split()[1:], dtype=float)
    np.testing.assert_allclose(pred, [3, 5, 7, 9], atol=1e-6)  # y = 2x + 1


def test_an_exact_fit_with_the_exact_solver(cli, tmp_path):
    model = fitted(cli, tmp_path, messy("exact.csv"), "--target", "y")
    np.testing.assert_allclose([model["coef"][0][0], model["intercept"][0]], [2.0, 1.0], rtol=1e-12)


@pytest.mark.filterwarnings("ignore:underdetermined")  # expected: 21 parameters, 5 rows
def test_more_columns_than_rows(cli, tmp_path):
    c = columns("wide.csv")
    X, y = np.c_[tuple(c[f"x{j}"] for j in range(20))], c["y"]
    model = fitted(cli, tmp_path, messy("wide.csv"), "--target", "y")
    # The minimum-norm solution in standardized units (the documented choice), by numpy.
    mean, std = X.mean(axis=0), X.std(axis=0)
    beta = np.linalg.lstsq((X - mean) / std, y - y.mean(), rcond=None)[0] / std
    np.testing.assert_allclose(model["coef"][0], beta, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(model["intercept"][0], y.mean() - mean @ beta, rtol=1e-8)
    pred = np.array(cli("predict", tmp_path / "m.safetensors", messy("wide.csv")).out.split()[1:], dtype=float)
    np.testing.assert_allclose(pred, y, atol=1e-9)  # 5 rows, 21 parameters: every row is fitted


def test_text_columns(cli, tmp_path):
    src = messy("text.csv")
    r = cli("train", src, "--target", "yield", "--solver", "exact", "-o", tmp_path / "m.safetensors")
    assert r.code == 0
    assert "note: left out column 'field': it holds no numbers (--categorical field one-hot encodes it)" in r.err
    assert "note: left out column 'soil': it holds no numbers (--categorical soil one-hot encodes it)" in r.err
    values = np.loadtxt(src, delimiter=",", skiprows=1, usecols=(2, 3, 4))
    assert_ols(json.loads(cli("inspect", tmp_path / "m.safetensors", "--json").out), values[:, :2], values[:, 2:])
    os.remove(tmp_path / "m.safetensors")
    r = cli("train", src, "--target", "yield", "--features", "soil,rain", "-o", tmp_path / "m.safetensors")
    assert (
        error(r, tmp_path)
        == f"{src}, line 2, column 'soil': column 'soil' holds no numbers; got 'clay' (--categorical soil one-hot encodes it)"
    )


@pytest.fixture
def model(cli, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "m.safetensors"
    assert cli("train", messy("weather.tsv"), "--target", "yield", "-q", "-o", path).code == 0
    return str(path)


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_model_and_data_swapped(cli, tmp_path, model, command):
    data = messy("weather.tsv")
    out = ["-o", tmp_path / "p.csv"] if command == "predict" else []
    r = cli(command, data, model, *out)
    assert error(r, tmp_path) == f"{data}: not a gradreg model file: it looks like CSV text {SWAP}"
    r = cli(command, model, model, *out)
    assert error(r, tmp_path) == f"{model}: a .safetensors model file, not data {SWAP}"


def test_other_files_given_as_a_model(cli, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"temperature": [21.5], "rain": [300.2]}), tmp_path / "new.parquet")
    (tmp_path / "model.pkl").write_bytes(pickle.dumps({"coef": [1.0, 2.0]}, protocol=4))
    (tmp_path / "empty.safetensors").write_bytes(b"")
    expected = {
        "new.parquet": f"it looks like a Parquet file {SWAP}",
        "model.pkl": "it looks like a Python pickle (such as a joblib or scikit-learn model file); gradreg reads only "
        "the .safetensors model files that gradreg writes",
        "empty.safetensors": "the file is empty",
    }
    for name, says in expected.items():
        for command in (
            ["predict", tmp_path / name, messy("weather.tsv"), "-o", tmp_path / "p.csv"],
            ["inspect", tmp_path / name],
        ):
            assert error(cli(*command), tmp_path, expected) == f"{tmp_path / name}: not a gradreg model file: {says}"


def test_thousands_separators_are_not_called_decimal_commas(cli, tmp_path):
    src = write(tmp_path / "thousands.csv", 'x,y\n"1,000",3\n"2,500",5\n"3,250,000",7\n')
    r = cli("train", src, "--target", "y", "--features", "x", "--solver", "exact", "-o", tmp_path / "m.safetensors")
    assert error(r, tmp_path, ["thousands.csv"]) == (
        f"{src}, line 2, column 'x': column 'x' holds no numbers; got '1,000' (thousands separators? give "
        "--thousands ',' (or --decimal ',' if the comma is a decimal comma))"
    )
    r = cli("train", src, "--target", "y", "--solver", "exact", "-o", tmp_path / "m.safetensors")
    assert error(r, tmp_path, ["thousands.csv"]) == (
        f"{src}: no numeric feature columns besides the target(s): column 'x': it holds no numbers (numbers with "
        "thousands separators, as in '1,000'? give --thousands ',')"
    )


def test_predict_that_fails_before_any_row_writes_nothing_to_stdout(cli, tmp_path):
    model = tmp_path / "m.safetensors"
    src = write(tmp_path / "ab.csv", "a,y\n1,2\n2,3.5\n3,4\n")
    assert cli("train", src, "--target", "y", "--solver", "exact", "-q", "-o", model).code == 0
    r = cli("predict", model, "crops")  # a built-in table is read whole, then its columns are checked
    assert r.code == 2 and r.out == "" and "lacks model feature column(s) 'a'" in r.err


def test_the_delimiter_hint_reaches_predict_and_exclude(cli, tmp_path):
    model = tmp_path / "m.safetensors"
    assert cli("train", "crops", "--target", "mangoes", "--exclude", "oranges", "--solver", "exact", "-q", "-o", model).code == 0
    src = write(tmp_path / "semi.csv", "temperature;rainfall;humidity\n73;67;43\n")
    hint = "; the header is one field holding ';': for a ';'-separated file give --delimiter ';'"
    r = cli("predict", model, src)  # detected
    assert r.code == 0 and r.err == f"note: {src}: read as ';'-separated (detected; give --delimiter to choose)\n"
    # given wrong (or not detectable): the hint stays
    r = cli("predict", model, src, "--delimiter", ",")
    assert r.code == 2 and r.out == "" and r.err.rstrip("\n").endswith(hint)
    r = cli("train", src, "--target", "rainfall", "--exclude", "x", "--delimiter", ",", "-o", tmp_path / "n.safetensors")
    assert r.code == 2 and r.err.rstrip("\n").endswith(hint)
