"""Readers and validation: every source type, and every bad input named by file, line, column."""

import os

import numpy as np
import pytest

from gradreg.errors import ConfigError, DataError
from gradreg.io import load, read_table

from .conftest import CROPS_X, CROPS_Y, write

HEADER = "region,temperature,rainfall,humidity,mangoes,oranges\n"


def crops_rows():
    return "".join(
        f"{chr(65 + i)},{','.join(str(int(v)) for v in x)},{','.join(str(int(v)) for v in y)}\n"
        for i, (x, y) in enumerate(zip(CROPS_X, CROPS_Y))
    )


def test_builtin_crops_matches_the_tutorial():
    ds = load("crops", ["mangoes", "oranges"])
    assert ds.feature_names == ["temperature", "rainfall", "humidity"]
    assert ds.notices == ["left out column 'region': it holds no numbers (--categorical region one-hot encodes it)"]
    np.testing.assert_array_equal(ds.X, CROPS_X)
    np.testing.assert_array_equal(ds.Y, CROPS_Y)


@pytest.mark.parametrize("kind", ["csv", "tsv", "parquet", "npz", "npy", "dataframe", "dict"])
def test_every_source_gives_the_same_arrays(tmp_path, kind):
    import pandas as pd

    df = pd.DataFrame(np.c_[CROPS_X, CROPS_Y], columns=["temperature", "rainfall", "humidity", "mangoes", "oranges"])
    if kind == "csv":
        src = write(tmp_path / "c.csv", df.to_csv(index=False))
    elif kind == "tsv":
        src = write(tmp_path / "c.tsv", df.to_csv(index=False, sep="\t"))
    elif kind == "parquet":
        src = str(tmp_path / "c.parquet")
        df.to_parquet(src)
    elif kind == "npz":
        src = str(tmp_path / "c.npz")
        np.savez(src, **{c: df[c].to_numpy() for c in df.columns})
    elif kind == "npy":
        src = str(tmp_path / "c.npy")
        np.save(src, df.to_numpy())
    elif kind == "dataframe":
        src = df
    else:
        src = {c: df[c].to_numpy() for c in df.columns}
    if kind == "npy":
        ds = load(src, ["c3", "c4"])
    else:
        ds = load(src, ["mangoes", "oranges"])
    np.testing.assert_array_equal(ds.X, CROPS_X)
    np.testing.assert_array_equal(ds.Y, CROPS_Y)


def test_npz_2d_array_becomes_numbered_columns(tmp_path):
    src = str(tmp_path / "d.npz")
    np.savez(src, X=CROPS_X, y=CROPS_Y[:, 0])
    ds = load(src, "y")
    assert ds.feature_names == ["X0", "X1", "X2"]


def test_features_option_selects_and_orders(tmp_path):
    ds = load("crops", "mangoes", "humidity,temperature")
    assert ds.feature_names == ["humidity", "temperature"]
    np.testing.assert_array_equal(ds.X, CROPS_X[:, [2, 0]])


def test_weight_column(tmp_path):
    src = write(tmp_path / "w.csv", "x,y,w\n1,2,1\n2,3,0.5\n3,5,2\n")
    ds = load(src, "y", weight="w")
    assert ds.feature_names == ["x"]
    np.testing.assert_array_equal(ds.sample_weight, [1, 0.5, 2])


# -- bad input: one message naming file, line and column ----------------------------------------


def bad(tmp_path, text, *, target="y", features=None, **kw):
    src = write(tmp_path / "bad.csv", text)
    with pytest.raises((DataError, ConfigError)) as e:
        load(src, target, features, **kw)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_missing_file():
    with pytest.raises(DataError, match=r"nope\.csv: no such file"):
        load("nope.csv", "y")


def test_unknown_builtin_lists_builtins():
    with pytest.raises(DataError, match="built-in tables: crops"):
        load("crop", "y")


def test_folder_is_not_a_file(tmp_path):
    with pytest.raises(DataError, match="is a folder"):
        load(str(tmp_path), "y")


def test_unreadable_file(tmp_path, monkeypatch):
    import builtins

    src = write(tmp_path / "secret.csv", "x,y\n1,2\n2,3\n")
    os.chmod(src, 0)
    real_open = builtins.open

    def denying_open(file, *a, **k):  # root ignores file modes, so deny like a normal user would see
        if str(file) == src:
            raise PermissionError(13, "Permission denied", src)
        return real_open(file, *a, **k)

    monkeypatch.setattr(builtins, "open", denying_open)
    with pytest.raises(DataError, match="secret.csv: cannot read: permission denied"):
        load(src, "y")


def test_empty_file(tmp_path):
    assert bad(tmp_path, "") == f"{tmp_path / 'bad.csv'}: file is empty; expected a header row and data rows"


def test_header_only(tmp_path):
    assert "need at least 2 data rows; got 0" in bad(tmp_path, "x,y\n")


def test_one_row(tmp_path):
    assert "need at least 2 data rows; got 1" in bad(tmp_path, "x,y\n1,2\n")


def test_unknown_column(tmp_path):
    msg = bad(tmp_path, "x,y\n1,2\n2,3\n", target="z")
    assert msg.endswith("no column named 'z'; columns are x, y")


def test_non_numeric_cell_names_line_and_column(tmp_path):
    msg = bad(tmp_path, "x,y\n1,2\n2,3\n3,oops\n4,5\n")
    assert msg == f"{tmp_path / 'bad.csv'}, line 4, column 'y': expected a number, got 'oops'"


def test_line_numbers_count_blank_and_quoted_lines(tmp_path):
    msg = bad(tmp_path, 'name,x,y\n"a\nb",1,2\n\nc,2,3\nd,3,x\n', features="x")
    assert ", line 6, column 'y'" in msg


def test_missing_value_and_drop_missing(tmp_path):
    text = "x,y\n1,2\n2,\n3,4\n4,5\n"
    msg = bad(tmp_path, text)
    assert msg == f"{tmp_path / 'bad.csv'}, line 3, column 'y': missing value; drop such rows with --drop-missing"
    ds = load(write(tmp_path / "ok.csv", text), "y", drop_missing=True)
    assert len(ds.X) == 3 and "dropped 1 row(s) with missing values (line 3)" in ds.notices
    many = "x,y\n" + "".join(f"{i},{'' if i % 2 else i}\n" for i in range(14))
    ds = load(write(tmp_path / "many.csv", many), "y", drop_missing=True)
    assert "dropped 7 row(s) with missing values (line 3, line 5, line 7, line 9, line 11, …)" in ds.notices


def test_an_unnamed_column_is_not_a_default_feature(tmp_path):
    # pandas' df.to_csv() writes the index first, under an empty name: as a feature it would be silently wrong
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"a": [1.0, 2, 3, 5, 8], "y": [3.0, 5, 7.5, 11, 17]}, index=[10, 11, 12, 13, 14])
    df.to_csv(tmp_path / "idx.csv")
    ds = load(str(tmp_path / "idx.csv"), "y")
    assert ds.feature_names == ["a"]
    assert "left out column 1: it has no name in the header (an index written by to_csv?)" in ds.notices


def test_nan_spelling_is_missing(tmp_path):
    assert "line 3, column 'x': missing value" in bad(tmp_path, "x,y\n1,2\nNaN,3\n3,4\n")


def test_inf_is_refused(tmp_path):
    assert bad(tmp_path, "x,y\n1,2\ninf,3\n3,4\n").endswith("line 3, column 'x': values must be finite; got inf")


def test_target_also_feature(tmp_path):
    assert "column 'y' is given both as a target and as a feature" in bad(tmp_path, "x,y\n1,2\n2,3\n", features="x,y")


def test_duplicate_column_names(tmp_path):
    assert "duplicate column name 'x' (columns 1 and 3)" in bad(tmp_path, "x,y,x\n1,2,3\n2,3,4\n")


def test_ragged_row(tmp_path):
    assert bad(tmp_path, "x,y\n1,2\n3\n4,5\n").endswith("line 3: expected 2 fields like the header, got 1")


def test_text_target_column(tmp_path):
    assert "column 'y' holds no numbers" in bad(tmp_path, "x,y\n1,a\n2,b\n")


def test_no_features_left(tmp_path):
    assert "no numeric feature columns" in bad(tmp_path, "name,y\na,1\nb,2\n")


def test_negative_and_all_zero_weights(tmp_path):
    assert "line 3, column 'w': weights must be >= 0; got -1.0" in bad(tmp_path, "x,y,w\n1,2,1\n2,3,-1\n", weight="w")
    assert "all weights are zero" in bad(tmp_path, "x,y,w\n1,2,0\n2,3,0\n", weight="w")


def test_no_target():
    with pytest.raises(ConfigError, match="^target: name at least one target column"):
        load("crops", [])


def test_parquet_row_numbers(tmp_path):
    import pandas as pd

    src = str(tmp_path / "p.parquet")
    pd.DataFrame({"x": [1.0, 2.0, np.inf], "y": [1.0, 2.0, 3.0]}).to_parquet(src)
    with pytest.raises(DataError, match=r"p\.parquet, row 3, column 'x': values must be finite"):
        load(src, "y")


def test_corrupt_parquet(tmp_path):
    src = write(tmp_path / "p.parquet", "not parquet at all")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        read_table(src)


def test_npy_refuses_pickled_objects(tmp_path):
    src = str(tmp_path / "o.npy")
    np.save(src, np.array([{"a": 1}, {"b": 2}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="not a plain numeric NumPy file"):
        read_table(src)


def test_write_table_csv_parquet_and_stream(tmp_path):
    import io

    import pyarrow.parquet as pq

    from gradreg.io import read_table, write_table

    cols = {"a": np.array([1.5, -2.0, 1e-300]), "b c": np.array([0.1, 0.2, 0.3])}
    write_table(cols, str(tmp_path / "t.csv"))
    back = read_table(str(tmp_path / "t.csv")).data
    assert back.column_names == ["a", "b c"] and back.column("a").to_pylist() == [1.5, -2.0, 1e-300]
    write_table(cols, str(tmp_path / "t.parquet"))
    assert pq.read_table(tmp_path / "t.parquet").column("b c").to_pylist() == [0.1, 0.2, 0.3]
    buf = io.StringIO()
    write_table(cols, buf)
    assert buf.getvalue().splitlines()[0] == "a,b c" and len(buf.getvalue().splitlines()) == 4
    assert sorted(os.listdir(tmp_path)) == ["t.csv", "t.parquet"]  # no temporary files left


def test_a_dataframe_nan_names_the_column_by_name():
    import pandas as pd

    from gradreg import LinearRegressor
    from gradreg.io import as_2d_float

    df = pd.DataFrame({"temp": [20.0, 21, 22, 23, 24], "rain": [1.0, 3, 2, np.nan, 5]})
    with pytest.raises(DataError) as e:
        LinearRegressor().fit(df, [1.0, 2, 3, 4, 5])
    assert str(e.value) == "X, row 4, column 'rain': values must be finite (not NaN or inf); got nan"
    model = LinearRegressor(solver="exact").fit(df.fillna(4.0), [1.0, 2, 3, 4, 5.5])
    with pytest.raises(DataError, match=r"^X, row 1, column 'temp': values must be finite .*got inf$"):
        model.predict(df.assign(temp=[np.inf, 1, 2, 3, 4]))
    with pytest.raises(DataError, match=r"^X, row 2, column 1: "):  # no names: the column's number
        as_2d_float(np.array([[1.0, 2.0], [3.0, np.nan]]), "X")


@pytest.mark.parametrize(
    ("given", "char"),
    [
        (";", ";"),
        ("\t", "\t"),
        ("\\t", "\t"),
        ("\\\\t", "\t"),
        ("tab", "\t"),
        ("TAB", "\t"),
        ("semicolon", ";"),
        ("comma", ","),
        ("pipe", "|"),
        ("space", " "),
        (None, None),
    ],
)
def test_delimiter_names(given, char):
    from gradreg.io import parse_delimiter

    assert parse_delimiter(given) == char


@pytest.mark.parametrize(
    ("given", "rule"),
    [
        ("ab", "must be one character or one of tab, '\\t', comma, semicolon, pipe, space"),
        ("", "must be one character or one of tab, '\\t', comma, semicolon, pipe, space"),
        ("\n", "cannot be a newline or a double quote (the CSV quote character)"),
        ('"', "cannot be a newline or a double quote (the CSV quote character)"),
    ],
)
def test_bad_delimiter_names_the_option(tmp_path, given, rule):
    from gradreg.cli import FLAGS

    src = write(tmp_path / "d.csv", "x;y\n1;2\n2;3\n")
    with pytest.raises(ConfigError) as e:
        read_table(src, delimiter=given)
    assert str(e.value) == f"delimiter {rule}; got delimiter={given!r}"  # Python's words
    assert e.value.render(FLAGS) == f"--delimiter {rule}; got --delimiter {given}"  # the CLI's


def test_tab_given_by_name_reads_a_tsv_named_txt(tmp_path):
    src = write(tmp_path / "d.txt", "x\ty\n1\t2\n2\t3.5\n")
    for given in ("\t", "\\t", "tab"):
        ds = load(src, "y", delimiter=given)
        np.testing.assert_array_equal(ds.Y[:, 0], [2.0, 3.5])


def test_a_header_read_as_one_field_suggests_the_delimiter(tmp_path):
    msg = bad(tmp_path, "a;b;y\n1;2;3\n2;3;4\n", delimiter=",")  # a wrong delimiter given
    assert msg == f"{tmp_path / 'bad.csv'}: no column named 'y'; columns are a;b;y; " + (
        "the header is one field holding ';': for a ';'-separated file give --delimiter ';'"
    )
    msg = bad(tmp_path, "a|b|y\n1,5|2|3\n2|3|4\n", delimiter=",")
    assert msg == f"{tmp_path / 'bad.csv'}, line 2: expected 1 field like the header, got 2; " + (
        "the header is one field holding '|': for a '|'-separated file give --delimiter '|' "
        "(its numbers use decimal commas, as in '1,5': give --decimal ',' too)"
    )
    assert "give --delimiter tab" in bad(tmp_path, "a\tb\ty\n1\t2\t3\n2\t3\t4\n", delimiter=",")
    # not given, a delimiter that splits every line alike is detected: the hint is for what detection cannot tell
    assert "give --delimiter ';'" in bad(tmp_path, "a;b;y\n1;2;3\n2;3\n")  # a ragged line


def test_a_decimal_comma_is_named(tmp_path):
    msg = bad(tmp_path, 'x,y\n1,2\n"2,5",3\n3,4\n')
    assert msg == f"{tmp_path / 'bad.csv'}, line 3, column 'x': expected a number, got '2,5' " + (
        "(a decimal comma? give --decimal ',')"
    )


def test_spaces_around_header_names_are_dropped(tmp_path):
    src = write(tmp_path / "s.csv", " temperature , rain \n1,2\n2,4.5\n3,6\n")
    assert read_table(src).data.column_names == ["temperature", "rain"]
    ds = load(src, "rain")
    assert ds.feature_names == ["temperature"] and ds.Y[:, 0].tolist() == [2.0, 4.5, 6.0]
    msg = bad(tmp_path, "rain , rain,y\n1,2,3\n2,3,4\n")
    assert msg == f"{tmp_path / 'bad.csv'}: column names 'rain ' and ' rain' are both 'rain' without the spaces " + (
        "around them; names must be unique"
    )


def test_date_time_and_timestamp_columns(tmp_path):
    src = write(
        tmp_path / "d.csv",
        "day,at,time,x,y\n2024-01-01,2024-01-01T10:00:00,10:30,1,3\n2024-01-02,2024-01-02T11:00:00,11:00,2,5.5\n",
    )
    ds = load(src, "y")
    assert ds.feature_names == ["x"]
    assert ds.notices == [
        "left out column 'day': it holds dates, not numbers (give --dates day to use it)",
        "left out column 'at': it holds timestamps, not numbers (give --dates at to use it)",
        "left out column 'time': it holds times of day, not numbers",
    ]
    where = f"{src}, line 2, column"
    with pytest.raises(DataError) as e:
        load(src, "y", "day,x")
    assert str(e.value) == f"{where} 'day': expected a number, got '2024-01-01': dates are not numbers: " + (
        "give --dates day to use them as days since 1970-01-01 or leave the column out with --features"
    )
    with pytest.raises(DataError, match=r"'at': expected a number, got '2024-01-01T10:00:00': timestamps are not numbers"):
        load(src, "y", "at")  # as written in the file
    with pytest.raises(DataError, match=r"'time': expected a number, got '10:30': times of day are not numbers.*midnight"):
        load(src, "y", "time")
    with pytest.raises(DataError) as e:
        load(src, "day")  # a target: no --features to leave it out with
    assert str(e.value).endswith("dates are not numbers: give --dates day to use them as days since 1970-01-01")


def test_a_parquet_date_column_shows_its_value_as_text(tmp_path):
    import datetime

    import pyarrow as pa
    import pyarrow.parquet as pq

    src = str(tmp_path / "d.parquet")
    pq.write_table(pa.table({"d": [None, datetime.date(2024, 3, 1)], "y": [1.0, 2.0]}), src)
    with pytest.raises(DataError) as e:
        load(src, "y", "d")
    assert str(e.value).startswith(f"{src}, row 2, column 'd': expected a number, got '2024-03-01': dates are not")


def test_a_model_file_given_as_data_says_so(tmp_path):
    from gradreg.config import TrainConfig
    from gradreg.pipeline import train

    model = str(tmp_path / "m.safetensors")
    train(load("crops", "mangoes"), TrainConfig(solver="exact")).save(model)
    with pytest.raises(DataError) as e:
        read_table(model)
    assert str(e.value) == f"{model}: a .safetensors model file, not data (did you swap MODEL and DATA? " + (
        "gradreg predict, evaluate, plot and report take MODEL first, then DATA)"
    )
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x": [1.0]}), tmp_path / "p.csv")
    with pytest.raises(DataError, match=r"p\.csv: not CSV text: it looks like a Parquet file; name it \*\.parquet"):
        read_table(str(tmp_path / "p.csv"))


def test_the_largest_value_is_found_by_line_after_dropped_rows(tmp_path):
    src = write(tmp_path / "d.csv", "x,y\n1,2\n\n2,\n3,4\n-9e9,5\n5,6\n")
    ds = load(src, "y", drop_missing=True)
    assert ds.largest(0) == (f"{src}, line 6, column 'x'", -9e9)
    assert ds.largest(1) == (f"{src}, line 7, column 'y'", 6.0)
