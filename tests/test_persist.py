"""Model files: round trip, atomic writes, and refusal of anything that is not a sound model."""

import json
import os
import pickle
import struct

import numpy as np
import pytest

from gradreg.config import TrainConfig
from gradreg.errors import ModelFileError
from gradreg.fitted import FittedModel
from gradreg.io import load
from gradreg.persist import atomic_path
from gradreg.pipeline import train


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("m") / "crops.safetensors")
    train(load("crops", ["mangoes", "oranges"]), TrainConfig(epochs=3, batch_size=3)).save(path)
    return path


def test_round_trip(model_path, tmp_path):
    m = FittedModel.load(model_path)
    again = str(tmp_path / "again.safetensors")
    m.save(again)
    m2 = FittedModel.load(again)
    assert np.array_equal(m.coef, m2.coef) and np.array_equal(m.intercept, m2.intercept)
    assert m2.feature_names == ["temperature", "rainfall", "humidity"]
    assert m2.target_names == ["mangoes", "oranges"]
    assert m2.config["batch_size"] == 3 and m2.info["torch_version"]
    np.testing.assert_array_equal(m.stats[m.target_names[0]]["std_err"], m2.stats[m2.target_names[0]]["std_err"])
    assert m2.optimum["mean_objective"] == m.optimum["mean_objective"]


def test_file_is_plain_safetensors_with_json_metadata(model_path):
    from safetensors import safe_open

    with safe_open(model_path, framework="np") as f:
        meta = f.metadata()
        assert set(f.keys()) >= {"coef", "intercept", "x_mean", "x_scale", "y_mean", "y_scale"}
    assert meta["format"] == "gradreg-model" and meta["format_version"] == "1"
    body = json.loads(meta["gradreg"])
    assert body["feature_names"] == ["temperature", "rainfall", "humidity"]
    with open(model_path, "rb") as fh:
        assert b"\x80\x04" not in fh.read(16)  # not a pickle stream


def corrupt(tmp_path, data: bytes) -> str:
    p = tmp_path / "bad.safetensors"
    p.write_bytes(data)
    return str(p)


def test_truncated(model_path, tmp_path):
    data = open(model_path, "rb").read()
    for cut in (0, 5, 8, 100, len(data) - 1):
        with pytest.raises(ModelFileError, match="bad.safetensors: (not a gradreg|corrupted|truncated)"):
            FittedModel.load(corrupt(tmp_path, data[:cut]))


def test_wrong_header_length(model_path, tmp_path):
    data = open(model_path, "rb").read()
    with pytest.raises(ModelFileError, match="header length"):
        FittedModel.load(corrupt(tmp_path, struct.pack("<Q", 10**12) + data[8:]))


def test_header_not_json(tmp_path):
    with pytest.raises(ModelFileError, match="header is not JSON"):
        FittedModel.load(corrupt(tmp_path, struct.pack("<Q", 5) + b"{nope"))


def test_pickle_file_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"

    class Boom:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = corrupt(tmp_path, pickle.dumps(Boom()))
    with pytest.raises(ModelFileError):
        FittedModel.load(path)
    assert not marker.exists()


def rewrite(model_path, tmp_path, edit_meta=None, edit_tensors=None, header=None):
    from safetensors import safe_open
    from safetensors.numpy import save

    with safe_open(model_path, framework="np") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    body = json.loads(meta["gradreg"])
    if edit_meta:
        edit_meta(body)
    if edit_tensors:
        edit_tensors(tensors)
    meta["gradreg"] = json.dumps(body)
    if header:
        header(meta)
    return corrupt(tmp_path, save(tensors, metadata=meta))


def test_future_format_version(model_path, tmp_path):
    path = rewrite(model_path, tmp_path, header=lambda m: m.update(format_version="99"))
    with pytest.raises(ModelFileError, match="format version 99 is newer"):
        FittedModel.load(path)


def test_tensor_shape_disagrees_with_metadata(model_path, tmp_path):
    path = rewrite(model_path, tmp_path, edit_meta=lambda b: b["feature_names"].append("extra"))
    with pytest.raises(ModelFileError, match="tensor 'coef' has shape \\[2, 3\\]; the metadata implies \\[2, 4\\]"):
        FittedModel.load(path)


def test_extra_tensor_and_wrong_dtype(model_path, tmp_path):
    path = rewrite(model_path, tmp_path, edit_tensors=lambda t: t.update(evil=np.zeros(3)))
    with pytest.raises(ModelFileError, match="unexpected tensor 'evil'"):
        FittedModel.load(path)
    path = rewrite(model_path, tmp_path, edit_tensors=lambda t: t.update(coef=t["coef"].astype(np.float32)))
    with pytest.raises(ModelFileError, match="'coef' must be float64"):
        FittedModel.load(path)


def test_not_a_gradreg_file(tmp_path):
    from safetensors.numpy import save

    with pytest.raises(ModelFileError, match="without gradreg metadata"):
        FittedModel.load(corrupt(tmp_path, save({"w": np.zeros(2)})))


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    dest = tmp_path / "out.csv"
    dest.write_text("previous")
    with pytest.raises(RuntimeError):
        with atomic_path(str(dest)) as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("crash mid-write")
    assert dest.read_text() == "previous"
    assert os.listdir(tmp_path) == ["out.csv"]


def _other_files(tmp_path):
    """A file of each kind that is given as a model by mistake: (name, bytes, what the message says)."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    parquet, npy, npz, pt = io.BytesIO(), io.BytesIO(), io.BytesIO(), io.BytesIO()
    pq.write_table(pa.table({"x": [1.0, 2.0]}), parquet)
    np.save(npy, np.zeros((2, 2)))
    np.savez(npz, a=np.zeros(2))
    torch.save({"w": torch.zeros(2)}, pt)
    swap = " (did you swap MODEL and DATA? gradreg predict, evaluate, plot and report take MODEL first, then DATA)"
    only = "; gradreg reads only the .safetensors model files that gradreg writes"
    return [
        ("new.csv", b"x,y\n1,3\n2,5\n", "it looks like CSV text" + swap),
        ("new.tsv", b"x\ty\n1\t3\n", "it looks like CSV text" + swap),
        ("notes.txt", b"hello", "it looks like text" + swap),
        ("new.parquet", parquet.getvalue(), "it looks like a Parquet file" + swap),
        ("a.npy", npy.getvalue(), "it looks like a NumPy .npy file" + swap),
        ("a.npz", npz.getvalue(), "it looks like a NumPy .npz file" + swap),
        (
            "model.pkl",
            pickle.dumps({"coef": [1.0]}),
            "it looks like a Python pickle (such as a joblib or scikit-learn model file)" + only,
        ),
        ("model.pt", pt.getvalue(), "it looks like a PyTorch file (torch.save)" + only),
        ("model.json", b'{"coef": [1.0]}', "it looks like JSON text" + only),
        ("empty.safetensors", b"", "the file is empty"),
    ]


def test_a_file_that_is_not_a_model_is_named_for_what_it_is(tmp_path):
    for name, data, says in _other_files(tmp_path):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ModelFileError) as e:
            FittedModel.load(str(path))
        assert str(e.value) == f"{path}: not a gradreg model file: {says}"


def test_a_damaged_model_is_not_taken_for_another_kind_of_file(model_path, tmp_path):
    data = bytearray(open(model_path, "rb").read())
    # A header length whose first bytes read like a pickle's protocol marker (0x80, 0x03) or like
    # zlib's: still a damaged model, since the header's "{" follows as in every safetensors file.
    for first in (b"\x80\x03", b"\x78\x9c"):
        data[:2] = first
        with pytest.raises(ModelFileError, match=r"bad.safetensors: corrupted (or truncated )?model file: header"):
            FittedModel.load(corrupt(tmp_path, bytes(data)))


def test_sniff_reads_only_the_first_bytes():
    from gradreg.persist import looks_like_model, sniff

    assert sniff(b"temp;rain;yield\n21,5;300,2;4,1\n") == "CSV text"
    assert sniff(b"\xef\xbb\xbfx,y\n1,2\n") == "CSV text"  # a BOM
    assert sniff(b"PK\x03\x04" + b"\x00" * 26 + b"archive/data.pkl") == "a PyTorch file (torch.save)"
    assert sniff(b"\x1f\x8b\x08\x00") == "gzip-compressed data"
    assert sniff(b"\x00\x01\x02\x03binary") is None
    assert looks_like_model(struct.pack("<Q", 120) + b'{"__metadata__"')
    assert not looks_like_model(b"x,y\n1,2\n3,4\n")
