"""Where output goes: outputs refused before any work."""

import json
import os

import pytest

# -- outputs refused before any work -------------------------------------------------------------

PREDICT = "expected .csv, .parquet, .pq, .jsonl or .ndjson, or - for stdout"
BAD_OUTPUTS = [
    (["train", "crops", "--target", "mangoes", "-o", "."], "-o .: is a folder; give a file name ending in .safetensors"),
    (
        ["train", "crops", "--target", "mangoes", "-o", "-"],
        "-o -: a model is binary and is not written to stdout; give a file name ending in .safetensors",
    ),
    (["train", "crops", "--target", "mangoes", "-o", "m.pt"], "-o m.pt: unknown suffix '.pt' for a model; expected .safetensors"),
    (["train", "crops", "--target", "mangoes", "-o", "model"], "-o model: no suffix for a model; expected .safetensors"),
    (["predict", "MODEL", "crops", "-o", "out.xlsx"], f"-o out.xlsx: unknown suffix '.xlsx' for predictions; {PREDICT}"),
    (["predict", "MODEL", "crops", "-o", "."], "-o .: is a folder; give a file name ending in .csv, .parquet, .pq"),
    (
        ["predict", "MODEL", "crops", "--json", "-o", "p.csv"],
        "-o p.csv: unknown suffix '.csv' for JSON lines (--json); expected .jsonl or .ndjson, or - for stdout",
    ),
    (
        ["report", "MODEL", "-o", "r.pdf"],
        "-o r.pdf: unknown suffix '.pdf' for an HTML report; expected .html or .htm, or - for stdout",
    ),
    (["report", "MODEL", "-o", "."], "-o .: is a folder; give a file name ending in .html or .htm"),
    (["plot", "MODEL", "-o", "MODEL"], "exists and is not a folder; give a folder for the PNG files"),
    (["plot", "MODEL", "-o", "-"], "-o -: pictures are PNG files written into a folder, not to stdout; give a folder name"),
    (
        ["train", "crops", "--target", "mangoes", "--plots", "MODEL"],
        "exists and is not a folder; give a folder for the PNG files",
    ),
    (["demo", "--out", "MODEL"], "exists and is not a folder; give a folder for the PNG files"),
]


@pytest.fixture
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "m.safetensors"
    from gradreg.cli import main

    assert main(["train", "crops", "--target", "mangoes", "--epochs", "3", "-q", "-o", str(path)]) == 0
    return path


@pytest.mark.parametrize("argv,message", BAD_OUTPUTS)
def test_outputs_that_cannot_be_written_as_asked_are_refused_before_any_work(
    cli, tmp_path, model_file, monkeypatch, argv, message
):
    monkeypatch.chdir(tmp_path)
    argv = [str(model_file) if a == "MODEL" else a for a in argv]
    r = cli(*argv)
    assert r.code == 2 and r.out == ""
    assert r.err.startswith("Error: ") and r.err.count("\n") == 1 and message in r.err, r.err
    assert os.listdir(tmp_path) == []


def test_predict_output_format_follows_the_suffix(cli, model_file, tmp_path):
    jsonl = tmp_path / "p.jsonl"
    assert cli("predict", model_file, "crops", "-o", jsonl).code == 0  # no --json needed for .jsonl
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(rows) == 15 and list(rows[0]) == ["mangoes"]
    upper = tmp_path / "P.CSV"
    assert cli("predict", model_file, "crops", "-o", upper).code == 0
    assert upper.read_text().splitlines()[0] == "mangoes"
