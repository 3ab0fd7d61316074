"""Files as people write them (tests/data/messy/): a delimiter detected when not given, decimal
commas and thousands separators, date columns as numbers, and ``predict --keep``.

Every fit is compared with numpy's least squares on the same numbers read independently (the csv
module and plain string handling, dates by the datetime module), from the CLI and from Python, in
memory and streamed (``--stream --chunk-rows 3``), and once on 2 ranks.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from gradreg import LinearRegressor
from gradreg.errors import ConfigError, DataError
from gradreg.fitted import FittedModel
from gradreg.io import ReadOptions, Stream, StreamingDataset, load, read_table
from gradreg.io.reading import sniff_delimiter

from .conftest import ols, run_subprocess, write

MESSY = Path(__file__).parent / "data" / "messy"
STREAMED = [[], ["--stream", "--chunk-rows", "3"]]
EPOCH = dt.datetime(1970, 1, 1)


def messy(name: str) -> str:
    return str(MESSY / name)


def cells(path, delimiter: str) -> dict[str, list[str]]:
    """The file's columns as text, read by the csv module (the independent reader)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.reader(f, delimiter=delimiter) if r]
    return {name.strip(): [r[j] for r in rows[1:]] for j, name in enumerate(rows[0])}


def number(text: str, decimal: str = ".", thousands: str | None = None) -> float:
    if thousands:
        text = text.replace(thousands, "")
    return float(text.replace(decimal, ".")) if text.strip() else np.nan


def numbers(values, decimal=".", thousands=None) -> np.ndarray:
    return np.array([number(v, decimal, thousands) for v in values])


def days(text: str) -> float:
    """Days since 1970-01-01 by the datetime module."""
    return (dt.datetime.fromisoformat(text) - EPOCH).total_seconds() / 86400


def fitted(cli, tmp_path, *args) -> dict:
    out = tmp_path / "m.safetensors"
    r = cli("train", *args, "--solver", "exact", "-o", out)
    assert r.code == 0, r.err
    return {"err": r.err, **json.loads(cli("inspect", out, "--json").out)}


def assert_ols(model: dict, X, y):
    coef, icpt = ols(np.asarray(X, dtype=float), np.asarray(y, dtype=float).reshape(len(y), -1))
    np.testing.assert_allclose(model["coef"][0], coef[0], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(model["intercept"][0], icpt[0], rtol=1e-9)


def error(r) -> str:
    assert r.code == 2 and "Traceback" not in r.err, (r.code, r.err)
    lines = [ln for ln in r.err.splitlines() if not ln.startswith(("features: ", "note: "))]
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.err
    return lines[0][len("Error: ") :]


# -- the delimiter ---------------------------------------------------------------------------------


def test_sniffing_prefers_the_suffix_default_and_needs_consistent_lines():
    assert sniff_delimiter(b"a;b;c\n1,5;2,5;3\n4;5;6\n", ",") == ";"
    assert sniff_delimiter(b"a,b\n1,2\n", "\t") == ","
    assert sniff_delimiter(b'a|b\n"x|y"|2\n3|4\n', ",") == "|"  # quote-aware
    assert sniff_delimiter(b"a,b;c\n1,2;3\n", ",") == ","  # both consistent: the suffix's wins
    assert sniff_delimiter(b"a,b;c\n1,2;3\n", "\t") == ","  # neither is the default: the most fields, then the order
    assert sniff_delimiter(b"y\n1\n2\n", ",") == ","  # one column: nothing to detect
    assert sniff_delimiter(b"a;b\n1;2\n3\n", ",") == ","  # ragged: reading says what is wrong
    assert sniff_delimiter(b"a;b\n1;2\n3;4\n5", ",", truncated=True) == ";"  # a cut last line is not counted


@pytest.mark.parametrize("stream", STREAMED)
@pytest.mark.parametrize(
    "name, delimiter, shown, target",
    [("pipes.csv", "|", "'|'", "y"), ("tabs.csv", "\t", "tab", "yield")],
)
def test_a_detected_delimiter_is_said_once_and_fits(cli, tmp_path, stream, name, delimiter, shown, target):
    c = cells(messy(name), delimiter)
    features = [n for n in c if n not in (target, "name")]
    model = fitted(cli, tmp_path, messy(name), "--target", target, *stream)
    assert model["err"].count(f"note: {messy(name)}: read as {shown}-separated (detected; give --delimiter to choose)") == 1
    assert model["features"] == features
    assert_ols(model, np.c_[tuple(numbers(c[f]) for f in features)], numbers(c[target]))
    # predict and evaluate detect it too
    r = cli("predict", tmp_path / "m.safetensors", messy(name), "--chunk-rows", "3")
    assert r.code == 0 and "read as" in r.err and len(r.out.splitlines()) == len(c[target]) + 1


def test_stdin_is_sniffed_from_what_it_holds(tmp_path):
    text = (MESSY / "pipes.csv").read_text()
    out = tmp_path / "m.safetensors"
    r = run_subprocess("train", "-", "--target", "y", "--solver", "exact", "-o", out, input=text)
    assert r.returncode == 0 and "note: <stdin>: read as '|'-separated (detected; give --delimiter to choose)" in r.stderr
    c = cells(messy("pipes.csv"), "|")
    model = FittedModel.load(str(out))
    coef, icpt = ols(np.c_[numbers(c["x1"]), numbers(c["x2"])], numbers(c["y"])[:, None])
    np.testing.assert_allclose(model.coef, coef, rtol=1e-9)


# -- decimal commas and thousands separators ----------------------------------------------------------


@pytest.mark.parametrize("stream", STREAMED)
def test_european_numbers(cli, tmp_path, stream):
    src = messy("europe_thousands.csv")
    r = cli("train", src, "--target", "sales", "--decimal", ",", "-o", tmp_path / "m.safetensors", *stream)
    assert error(r) == (
        f"{src}, line 2, column 'sales': column 'sales' holds no numbers; got '1.551,96' (thousands separators? "
        "give --thousands '.' --decimal ',')"
    )
    model = fitted(cli, tmp_path, src, "--target", "sales", "--decimal", ",", "--thousands", ".", *stream)
    c = cells(src, ";")
    assert model["features"] == ["area", "price"] and "read as ';'-separated" in model["err"]
    X = np.c_[numbers(c["area"], ",", "."), numbers(c["price"], ",", ".")]
    assert_ols(model, X, numbers(c["sales"], ",", "."))
    r = cli("evaluate", tmp_path / "m.safetensors", src, "--decimal", ",", "--thousands", ".", "--json")
    assert r.code == 0 and json.loads(r.out)["n_rows"] == len(X)


@pytest.mark.parametrize("stream", STREAMED)
def test_thousands_commas_in_quoted_numbers(cli, tmp_path, stream):
    src = messy("thousands.csv")
    r = cli("train", src, "--target", "spend", "-o", tmp_path / "m.safetensors", *stream)
    assert error(r).endswith(
        "column 'income': it holds no numbers (numbers with thousands separators, as in '34,809.2'? give --thousands ',')"
    )
    model = fitted(cli, tmp_path, src, "--target", "spend", "--thousands", ",", *stream)
    c = cells(src, ",")
    assert model["features"] == ["population", "income"]
    assert_ols(model, np.c_[numbers(c["population"], ".", ","), numbers(c["income"], ".", ",")], numbers(c["spend"]))


@pytest.mark.parametrize("stream", STREAMED)
def test_a_value_that_is_still_not_a_number_is_named(cli, tmp_path, stream):
    src = write(tmp_path / "t.csv", 'x,y\n"1,234",1\n"12,34",2\n"2,000",3\n5,4\n')
    r = cli("train", src, "--target", "y", "--thousands", ",", "-o", tmp_path / "m.safetensors", *stream)
    assert error(r) == (
        f"{src}, line 3, column 'x': expected a number with ',' between groups of three digits (--thousands ,); got '12,34'"
    )
    assert not os.path.exists(tmp_path / "m.safetensors")


@pytest.mark.parametrize("stream", STREAMED)
def test_a_decimal_comma_file_never_reads_a_point_as_a_decimal_point(cli, tmp_path, stream):
    src = write(tmp_path / "d.csv", "a;b;y\n1.234;1;2\n2.500;2;3\n3,5;3;1\n4;4;4\n")
    r = cli("train", src, "--target", "y", "--decimal", ",", "-o", tmp_path / "m.safetensors", *stream)
    assert error(r) == (
        f"{src}, line 2, column 'a': expected a number with ',' as decimal mark (--decimal ,); got '1.234' "
        "(thousands separators? give --thousands '.')"
    )
    model = fitted(cli, tmp_path, src, "--target", "y", "--decimal", ",", "--thousands", ".", *stream)
    assert_ols(model, np.c_[[1234, 2500, 3.5, 4], [1, 2, 3, 4]], np.array([2.0, 3, 1, 4]))


def test_read_options_are_checked():
    with pytest.raises(ConfigError, match=r"thousands and decimal must differ; got thousands=',' and decimal=','"):
        ReadOptions.of(decimal=",", thousands=",")
    with pytest.raises(ConfigError, match=r"decimal must be '\.' or ','; got decimal=';'"):
        ReadOptions.of(decimal=";")
    assert ReadOptions.of(decimal="comma", thousands="space") == ReadOptions(None, ",", " ")


def test_the_cli_refuses_thousands_equal_to_decimal(cli, tmp_path):
    r = cli(
        "train", messy("europe.csv"), "--target", "yield", "--decimal", ",", "--thousands", ",", "-o", tmp_path / "m.safetensors"
    )
    assert error(r) == "--thousands and --decimal must differ; got --thousands , and --decimal ,"


# -- dates ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", STREAMED)
def test_dates_as_days_since_the_epoch(cli, tmp_path, stream):
    src = messy("dated.csv")
    r = cli("train", src, "--target", "yield", "--features", "day,temperature", "-o", tmp_path / "m.safetensors", *stream)
    assert "give --dates day to use them as days since 1970-01-01" in error(r)
    model = fitted(cli, tmp_path, src, "--target", "yield", "--exclude", "id", "--dates", "day", *stream)
    c = cells(src, ",")
    X = np.c_[[days(d) for d in c["day"]], numbers(c["temperature"])]
    assert model["features"] == ["day", "temperature"] and model["schema"]["dates"] == {"day": "days"}
    assert_ols(model, X, numbers(c["yield"]))
    # predict converts the column as the model file says, without --dates
    r = cli("predict", tmp_path / "m.safetensors", src, "--chunk-rows", "3")
    expected = X @ np.array(model["coef"][0]) + model["intercept"][0]
    np.testing.assert_allclose(np.loadtxt(r.out.splitlines()[1:]), expected, rtol=1e-10)


@pytest.mark.parametrize("stream", STREAMED)
def test_dates_as_parts(cli, tmp_path, stream):
    src = messy("dated.csv")
    model = fitted(cli, tmp_path, src, "--target", "yield", "--features", "day.year,day.month,day.day,day.dayofweek,temperature",
                   "--dates", "day", "--dates-as", "parts", *stream)  # fmt: skip
    c = cells(src, ",")
    stamps = [dt.datetime.fromisoformat(d) for d in c["day"]]
    X = np.c_[[[s.year, s.month, s.day, s.weekday()] for s in stamps], numbers(c["temperature"])]
    assert model["schema"]["dates"] == {"day": "parts"}
    assert_ols(model, X, numbers(c["yield"]))
    r = cli("evaluate", tmp_path / "m.safetensors", src, "--json")
    assert r.code == 0 and json.loads(r.out)["n_rows"] == len(X)


def test_dates_of_every_kind_and_what_is_not_a_date(tmp_path):
    src = write(
        tmp_path / "d.csv",
        "when,x,y\n2024-01-31,1,2\n2024-01-31T12:00,2,3\n1970-01-02T00:00Z,3,5\n2024-03-01 06:00:00,4,4\n,5,6\n",
    )
    table = read_table(src, options=ReadOptions.of(dates="when"))
    got = table.data.column("when").to_pylist()
    assert got[:4] == [days("2024-01-31"), days("2024-01-31T12:00"), 1.0, days("2024-03-01T06:00")] and got[4] is None
    ds = load(src, "y", options=ReadOptions.of(dates="when"), drop_missing=True)
    assert ds.dates == {"when": "days"} and len(ds.X) == 4
    with pytest.raises(
        DataError,
        match=r"d\.csv, line 2, column 'x': --dates x: expected a date such as 2024-01-31 or 2024-01-31T10:00; got '1'$",
    ):
        load(src, "y", options=ReadOptions.of(dates="x"))
    bad = write(tmp_path / "b.csv", "when,y\n2024-01-31,1\nsoon,2\n")
    with pytest.raises(DataError, match=r"b\.csv, line 3, column 'when': --dates when: expected a date .*; got 'soon'$"):
        load(bad, "y", options=ReadOptions.of(dates="when"))
    with pytest.raises(DataError, match=r"no column named 'day', a date column \(--dates\); columns are when, x, y"):
        load(src, "y", options=ReadOptions.of(dates="day"))
    with pytest.raises(DataError, match=r"no column named 'day', a date column"):
        Stream(src, options=ReadOptions.of(dates="day"))


def test_a_model_file_with_bad_dates_is_refused(tmp_path):
    model = LinearRegressor(solver="exact").fit(messy("dated.csv"), target="yield", read={"dates": "day"}).model_
    model.schema["dates"] = {"day": "weeks"}
    model.save(str(tmp_path / "m.safetensors"))
    with pytest.raises(Exception, match=r"date columns must map names to days or parts"):
        FittedModel.load(str(tmp_path / "m.safetensors"))


# -- predict --keep --------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunks", [[], ["--chunk-rows", "3"]])
def test_keep_copies_ids_beside_the_predictions(cli, tmp_path, chunks):
    src = messy("ids.csv")
    model = tmp_path / "m.safetensors"
    assert (
        cli("train", src, "--target", "y", "--features", "x", "--drop-missing", "--solver", "exact", "-q", "-o", model).code == 0
    )
    c = cells(src, ",")
    x = numbers(c["x"])
    m = json.loads(cli("inspect", model, "--json").out)
    expected = x * m["coef"][0][0] + m["intercept"][0]  # NaN where x is missing
    r = cli("predict", model, src, "--keep", "id,code", "--keep", "when", "--drop-missing", *chunks)
    assert r.code == 0, r.err
    rows = list(csv.reader(r.out.splitlines()))
    assert rows[0] == ["id", "code", "when", "y"]
    assert [row[:3] for row in rows[1:]] == [list(t) for t in zip(c["id"], c["code"], c["when"])]  # as written: 0007
    np.testing.assert_allclose([float(row[3]) if row[3] else np.nan for row in rows[1:]], expected, rtol=1e-12)
    r = cli("predict", model, src, "--keep", "id,when", "--drop-missing", "--json", *chunks)
    lines = [json.loads(line) for line in r.out.splitlines()]
    assert [(d["id"], d["when"]) for d in lines] == list(zip(c["id"], c["when"]))
    assert [d["y"] is None for d in lines] == list(np.isnan(expected))
    r = cli("predict", model, src, "--keep", "id", "--drop-missing", "-o", tmp_path / "p.parquet", *chunks)
    table = pq.read_table(tmp_path / "p.parquet")
    assert table.column_names == ["id", "y"] and table.column("id").to_pylist() == c["id"]


def test_keep_a_date_the_model_reads_as_numbers(cli, tmp_path):
    src = messy("dated.csv")
    model = tmp_path / "m.safetensors"
    args = ("--target", "yield", "--exclude", "id", "--dates", "day", "--dates-as", "parts", "--solver", "exact", "-q")
    assert cli("train", src, *args, "-o", model).code == 0
    for chunks in ([], ["--chunk-rows", "3"]):
        r = cli("predict", model, src, "--keep", "day,id", *chunks)
        assert r.code == 0, r.err
        rows = list(csv.reader(r.out.splitlines()))
        c = cells(src, ",")
        assert rows[0] == ["day", "id", "yield"]
        assert [row[:2] for row in rows[1:]] == [[d, i] for d, i in zip(c["day"], c["id"])]  # as written


def test_keep_errors(cli, tmp_path):
    src = messy("ids.csv")
    model = tmp_path / "m.safetensors"
    assert (
        cli("train", src, "--target", "y", "--features", "x", "--drop-missing", "--solver", "exact", "-q", "-o", model).code == 0
    )
    for chunks in ([], ["--chunk-rows", "3"]):
        r = cli("predict", model, src, "--keep", "y", "--drop-missing", *chunks)
        assert error(r).startswith("--keep y: the predictions are written in a column of that name")
        r = cli("predict", model, src, "--keep", "id,nope", "--drop-missing", *chunks)
        assert error(r) == f"{src}: no column named 'nope' to --keep; columns are id, code, when, x, y"
        assert r.out == ""


# -- Python, and two ranks ---------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_python_reads_the_same_files(stream):
    src = messy("europe_thousands.csv")
    est = LinearRegressor(solver="exact").fit(src, target="sales", stream=stream, read={"decimal": ",", "thousands": "."})
    c = cells(src, ";")
    X = np.c_[numbers(c["area"], ",", "."), numbers(c["price"], ",", ".")]
    coef, icpt = ols(X, numbers(c["sales"], ",", ".")[:, None])
    np.testing.assert_allclose(est.coef_, coef[0], rtol=1e-9)
    frame = pd.DataFrame(X, columns=["area", "price"])
    np.testing.assert_allclose(est.predict(frame), X @ coef[0] + icpt[0], rtol=1e-9)  # in-memory rows: as before
    est = LinearRegressor(solver="exact").fit(
        messy("dated.csv"), target="yield", features=["day", "temperature"], stream=stream, read=ReadOptions.of(dates="day")
    )
    assert est.model_.schema["dates"] == {"day": "days"}
    sds = StreamingDataset(Stream(messy("dated.csv"), chunk_rows=3, options=ReadOptions.of(dates="day")), "yield")
    assert sds.dates == {"day": "days"} and "day" in sds.feature_names


def test_two_ranks_read_a_european_file_with_dates(tmp_path):
    rng = np.random.default_rng(14)
    n = 400
    start = np.datetime64("2020-01-01T00:00")
    when = start + rng.integers(0, 2000 * 24, n).astype("timedelta64[h]")
    x = rng.uniform(500, 50_000, n)
    y = 3 + 0.002 * x + 0.01 * (when - start).astype(float) / 24 + rng.normal(size=n)

    def eu(v: float) -> str:
        return f"{v:,.2f}".replace(",", "_").replace(".", ",").replace("_", ".")

    lines = ["when;x;y"] + [f"{str(w).replace('T', ' ')};{eu(a)};{eu(b)}" for w, a, b in zip(when, x, y)]
    src = write(tmp_path / "eu.csv", "\n".join(lines) + "\n")
    c = cells(src, ";")
    X = np.c_[[days(w) for w in c["when"]], numbers(c["x"], ",", ".")]
    coef, icpt = ols(X, numbers(c["y"], ",", ".")[:, None])
    out = tmp_path / "m.safetensors"
    args = ["train", src, "--target", "y", "--dates", "when", "--decimal", ",", "--thousands", ".", "--solver", "exact"]
    r = run_subprocess(*args, "--stream", "--chunk-rows", "50", "--nproc", "2", "-q", "-o", out)
    assert r.returncode == 0, r.stderr
    model = FittedModel.load(str(out))
    assert model.info["world_size"] == 2 and model.schema["dates"] == {"when": "days"}
    np.testing.assert_allclose(model.coef, coef, rtol=1e-9)
    np.testing.assert_allclose(model.intercept, icpt, rtol=1e-9)


@pytest.mark.parametrize("chunks", [[], ["--chunk-rows", "3"]])
def test_keep_a_feature_of_a_european_file(cli, tmp_path, chunks):
    src = messy("europe_thousands.csv")
    model = tmp_path / "m.safetensors"
    read = ("--decimal", ",", "--thousands", ".")
    assert cli("train", src, "--target", "sales", *read, "--solver", "exact", "-q", "-o", model).code == 0
    r = cli("predict", model, src, *read, "--keep", "region,area", *chunks)
    assert r.code == 0, r.err
    rows = list(csv.reader(r.out.splitlines()))
    c = cells(src, ";")
    assert rows[0] == ["region", "area", "sales"] and [row[0] for row in rows[1:]] == c["region"]
    np.testing.assert_array_equal([float(row[1]) for row in rows[1:]], numbers(c["area"], ",", "."))  # as the model reads it
