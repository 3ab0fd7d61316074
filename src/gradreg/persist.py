"""Model files: one .safetensors file holding the tensors, with JSON metadata in its header.

Never pickle: a model file is parsed as data (a length, a JSON header, raw little-endian
buffers), so loading one cannot run code. Every write goes to a temporary file in the target's
folder and is renamed over the target only when complete.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import struct
import tempfile
from collections.abc import Iterator
from typing import Any

import numpy as np

from .errors import GradregError, ModelFileError

FORMAT = "gradreg-model"
FORMAT_VERSION = 1  # bump when a reader of the old version could misread the new layout
MAX_HEADER = 100 * 1024 * 1024  # a larger header is a corrupted file, not a model


@contextlib.contextmanager
def atomic_path(dest: str) -> Iterator[str]:
    """Yield a temporary path beside ``dest``; rename it onto ``dest`` only if the block succeeds."""
    folder = os.path.dirname(os.path.abspath(dest))
    if not os.path.isdir(folder):
        raise GradregError(f"{dest}: folder {folder} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(dest)}.", suffix=".tmp", dir=folder)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the result should read like any new file
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes_atomic(dest: str, data: bytes) -> None:
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def jsonable(obj: Any) -> Any:
    """numpy scalars/arrays to lists and floats; NaN and inf to None (JSON has neither)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def save(path: str, tensors: dict[str, np.ndarray], meta: dict[str, Any], *, fmt: str = FORMAT) -> None:
    """Write ``tensors`` (float64 arrays) and ``meta`` (JSON-able) atomically to ``path``.

    ``fmt`` names the kind of file (a model, or a training checkpoint); :func:`load` checks it.
    """
    from safetensors.numpy import save as st_save

    header = {
        "format": fmt,
        "format_version": str(FORMAT_VERSION),
        "gradreg": json.dumps(jsonable(meta), sort_keys=True, allow_nan=False),
    }
    data = st_save({k: np.ascontiguousarray(v, dtype=np.float64) for k, v in tensors.items()}, metadata=header)
    write_bytes_atomic(path, data)


def load(path: str, *, fmt: str = FORMAT) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read and check a model file (or, with ``fmt``, a checkpoint): (tensors, metadata).

    Raises ModelFileError on anything wrong."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such model file") from None
    except IsADirectoryError:
        raise ModelFileError(f"{path}: is a folder, not a model file") from None
    except OSError as e:
        raise ModelFileError(f"{path}: cannot read: {e.strerror or e}") from None
    return loads(data, path, fmt=fmt)


def looks_like_model(head: bytes) -> bool:
    """True when ``head`` (a file's first bytes, at least 9) starts like a safetensors file: a
    little-endian header length, then the header's ``{``."""
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= MAX_HEADER and head[8:9] == b"{"


DATA_KINDS = ("CSV text", "text", "a Parquet file", "a NumPy .npy file", "a NumPy .npz file")  # what DATA holds


def sniff(data: bytes) -> str | None:
    """What a file that is not a model looks like, from its first bytes: ``"CSV text"``,
    ``"a Parquet file"``, ``"a Python pickle"``...; None when nothing is recognised.

    Parameters
    ----------
    data : bytes
        The file's first bytes (a few KiB are enough) or all of it.

    Returns
    -------
    str or None
    """
    if not data.strip():
        return "an empty file" if not data else "blank text"
    magics = (
        (b"PAR1", "a Parquet file"),
        (b"\x93NUMPY", "a NumPy .npy file"),
        (b"\x89HDF\r\n\x1a\n", "an HDF5 file (such as a Keras .h5 model)"),
        (b"\x1f\x8b", "gzip-compressed data"),
        (b"BZh", "bzip2-compressed data"),
        (b"\xfd7zXZ\x00", "xz-compressed data"),
    )
    for magic, kind in magics:
        if data.startswith(magic):
            return kind
    if data.startswith(b"PK\x03\x04"):
        import zipfile

        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            names = []  # only the first bytes: the directory is at the end
        head = data[:4096]
        if any(n.endswith("data.pkl") for n in names) or b"data.pkl" in head:
            return "a PyTorch file (torch.save)"
        if (names and all(n.endswith(".npy") for n in names)) or b".npy" in head[:64]:
            return "a NumPy .npz file"
        return "a zip archive"
    if data[0] == 0x80 and len(data) > 1 and 2 <= data[1] <= 5:  # pickle protocol 2+ marker
        return "a Python pickle (such as a joblib or scikit-learn model file)"
    if data[0] == 0x78 and len(data) > 1 and (data[0] * 256 + data[1]) % 31 == 0:
        return "zlib-compressed data (such as a compressed joblib file)"
    text = data[:4096].decode("utf-8", errors="replace")
    if len(data) > 4096:
        text = text[:-4]  # a character cut at the end of the sample
    if all(c.isprintable() or c in "\t\r\n\ufeff" for c in text):
        first = text.lstrip("\ufeff").lstrip().split("\n", 1)[0]
        if first.startswith(("{", "[")):
            return "JSON text"
        return "CSV text" if any(d in first for d in ",;\t|") else "text"
    return None


def _not_a_model(data: bytes, path: str, fmt: str) -> ModelFileError | None:
    """The error for a file that is recognisably something else (data, a pickle...), else None."""
    if looks_like_model(data[:9]):
        return None  # a damaged model, not another kind of file
    kind = sniff(data[: 1 << 16])
    if kind is None:
        return None
    what = "model file" if fmt == FORMAT else "checkpoint"
    if kind in ("an empty file", "blank text"):
        return ModelFileError(f"{path}: not a gradreg {what}: the file is {'empty' if kind == 'an empty file' else 'blank'}")
    if fmt == FORMAT and kind in DATA_KINDS:
        hint = " (did you swap MODEL and DATA? gradreg predict, evaluate, plot and report take MODEL first, then DATA)"
    else:
        hint = f"; gradreg reads only the .safetensors {what}s that gradreg writes"
    return ModelFileError(f"{path}: not a gradreg {what}: it looks like {kind}{hint}")


def loads(data: bytes, path: str, *, fmt: str = FORMAT) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """:func:`load` of a file's bytes, already read (``path`` names it in messages)."""
    if len(data) < 8:
        raise _not_a_model(data, path, fmt) or ModelFileError(
            f"{path}: not a gradreg model file: {len(data)} bytes, too short for a header"
        )
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER or 8 + n > len(data):
        raise _not_a_model(data, path, fmt) or ModelFileError(
            f"{path}: corrupted or truncated model file: header length {n} exceeds the file ({len(data)} bytes)"
        )
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _not_a_model(data, path, fmt) or ModelFileError(f"{path}: corrupted model file: header is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: corrupted model file: header is not a JSON object")
    info = header.get("__metadata__") or {}
    if not isinstance(info, dict) or info.get("format") != fmt:
        what = "model file" if fmt == FORMAT else "checkpoint"
        raise ModelFileError(f"{path}: not a gradreg {what} (a .safetensors file without gradreg metadata)")
    try:
        version = int(info.get("format_version", ""))
    except ValueError:
        raise ModelFileError(f"{path}: bad format_version {info.get('format_version')!r}") from None
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: model format version {version} is newer than this gradreg reads ({FORMAT_VERSION}); upgrade gradreg"
        )
    if version < 1:
        raise ModelFileError(f"{path}: bad format_version {version}")
    try:
        meta = json.loads(info["gradreg"])
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"{path}: corrupted model metadata: {e}") from None
    if not isinstance(meta, dict):
        raise ModelFileError(f"{path}: corrupted model metadata: not a JSON object")
    from safetensors.numpy import load as st_load

    try:
        tensors = st_load(data)
    except Exception as e:  # safetensors raises its own SafetensorError and others on bad buffers
        raise ModelFileError(f"{path}: corrupted or truncated model file: {str(e).splitlines()[0]}") from None
    for k, v in tensors.items():
        if v.dtype != np.float64:
            raise ModelFileError(f"{path}: tensor {k!r} must be float64; got {v.dtype}")
        if not np.isfinite(v).all() and k in ("coef", "intercept", "x_mean", "x_scale", "y_mean", "y_scale"):
            raise ModelFileError(f"{path}: tensor {k!r} holds NaN or inf")
    return tensors, meta
