"""Fuzzing (hypothesis, derandomized, bounded): generated CSVs through the readers and the CLI, and
broken model files through the loader. Every case ends in a correct result or a GradregError /
one 'Error:' line with exit status 2: never another exception, a traceback or a hang."""

import json
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradreg.cli import main
from gradreg.errors import GradregError, ModelFileError
from gradreg.fitted import FittedModel
from gradreg.io import load

FUZZ = settings(derandomize=True, max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))

NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(10**30), 10**30).map(str),
    st.sampled_from(["1e308", "-1e-320", "4.9e-324", "1e400", "0x10", "1_000", " 7 ", "+3", "-0", ".5", "5.", "1e5e5"]),
)
CELLS = st.one_of(
    NUMBERS,
    st.sampled_from(["", "NA", "NaN", "nan", "null", "N/A", "#N/A", "inf", "-Infinity", "None", "?", "-"]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8),
    st.just('"1,5"'),
    st.just('"quoted ""x"" cell"'),
)


@st.composite
def csv_texts(draw):
    """A CSV-ish text: header, rows of cells (sometimes ragged), odd delimiters, BOM, blank lines."""
    if draw(st.integers(0, 9)) == 0:  # pure noise now and then
        return draw(st.binary(max_size=300)).decode("latin-1")
    delim = draw(st.sampled_from([",", ",", ",", ";", "\t", "|"]))
    ncol = draw(st.integers(1, 6))
    names = ["y"] + [f"x{j}" for j in range(ncol - 1)]
    if draw(st.booleans()):
        names = draw(st.lists(st.sampled_from(["y", "x0", "x1", "", "y", "a b", '"q"']), min_size=1, max_size=6))
    rows = []
    for _ in range(draw(st.integers(0, 12))):
        width = ncol if draw(st.integers(0, 7)) else draw(st.integers(0, ncol + 2))
        if draw(st.integers(0, 3)):  # mostly numbers
            rows.append([draw(NUMBERS) if draw(st.integers(0, 5)) else draw(CELLS) for _ in range(width)])
        else:
            rows.append([draw(CELLS) for _ in range(width)])
    lines = [delim.join(names)] + [delim.join(r) for r in rows]
    if draw(st.booleans()):
        lines.insert(draw(st.integers(0, len(lines))), "")
    text = "\n".join(lines) + draw(st.sampled_from(["\n", "", "\r\n", "\n\n"]))
    if draw(st.integers(0, 5)) == 0:
        text = "\ufeff" + text
    if draw(st.integers(0, 9)) == 0:
        text = text.replace("\n", "\r\n")
    return text


def _cli(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@FUZZ
@given(text=csv_texts(), stream=st.booleans())
def test_generated_csv_gives_a_result_or_one_clear_error(tmp_path_factory, capsys, text, stream):
    folder = tmp_path_factory.mktemp("fuzz")
    src = folder / "d.csv"
    src.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:  # the library: a Dataset or a GradregError, nothing else
        ds = load(str(src), "y")
        assert ds.X.shape[0] == ds.Y.shape[0] and np.isfinite(ds.X).all() and np.isfinite(ds.Y).all()
    except GradregError as e:
        assert str(e) and "\n" not in str(e)
    out = folder / "m.safetensors"
    argv = ["train", src, "--target", "y", "--solver", "exact", "-q", "-o", out] + (["--stream"] if stream else [])
    code, _, err = _cli(argv, capsys)
    if code == 0:
        model = FittedModel.load(str(out))
        assert np.isfinite(model.coef).all() or model.warnings
    else:
        assert code in (1, 2) and err.startswith("Error: ") and err.count("\n") == 1 and "Traceback" not in err
        assert not out.exists()


@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "m.safetensors"
    assert main(["train", "crops", "--target", "mangoes,oranges", "--solver", "exact", "-q", "-o", str(path)]) == 0
    return path.read_bytes()


def _header(data):
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def _with_header(header, body):
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


@st.composite
def broken_models(draw, good):
    kind = draw(st.sampled_from(["truncate", "flip", "length", "json", "meta", "shape", "dtype", "extra", "version"]))
    header, body = _header(good)
    if kind == "truncate":
        return good[: draw(st.integers(0, len(good) - 1))]
    if kind == "flip":
        data = bytearray(good)
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
        return bytes(data)
    if kind == "length":
        return struct.pack("<Q", draw(st.integers(0, 2**64 - 1))) + good[8:]
    if kind == "json":
        raw = draw(st.binary(max_size=64))
        return struct.pack("<Q", len(raw)) + raw + body
    name = draw(st.sampled_from(sorted(k for k in header if k != "__metadata__")))
    if kind == "meta":
        header["__metadata__"]["gradreg"] = draw(st.sampled_from(["{}", "[]", "null", '{"feature_names": 3}', "{bad"]))
    elif kind == "shape":
        header[name]["shape"] = draw(st.lists(st.integers(0, 5), max_size=3))
    elif kind == "dtype":
        header[name]["dtype"] = draw(st.sampled_from(["F32", "I64", "U8", "BOOL", "F16", "X9"]))
    elif kind == "extra":
        header["evil"] = {"dtype": "F64", "shape": [1], "data_offsets": [0, 8]}
    else:
        header["__metadata__"]["format_version"] = str(draw(st.integers(2, 10**6)))
    return _with_header(header, body)


@FUZZ
@given(data=st.data())
def test_broken_model_files_are_refused_cleanly(model_bytes, tmp_path_factory, capsys, data):
    blob = data.draw(broken_models(model_bytes))
    path = tmp_path_factory.mktemp("bad") / "m.safetensors"
    path.write_bytes(blob)
    try:
        model = FittedModel.load(str(path))
    except ModelFileError as e:
        assert str(e).startswith(str(path)) and "\n" not in str(e)
    else:  # a harmless change (a flipped bit inside a number): still a consistent model
        assert model.coef.shape == (len(model.target_names), len(model.feature_names))
    code, out, err = _cli(["inspect", path, "--json"], capsys)
    assert code in (0, 2) and ("Traceback" not in err)
    if code:
        assert err.startswith("Error: ") and err.count("\n") == 1
