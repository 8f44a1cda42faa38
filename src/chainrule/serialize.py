"""Saving and loading models and tensors: safetensors (extra "weights") or .npz, never pickle.

A file holds named arrays plus JSON metadata: {"format": "chainrule", "version": 1, "checksum":
sha256 of the arrays, "spec": the model spec, ...}. Loading checks the version and the checksum,
so a truncated, bit-flipped or newer file is refused with a ModelFileError naming the file.
Writes are atomic: a temporary file in the same folder, fsync, then os.replace.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from .errors import ChainruleError, ModelFileError

FORMAT_VERSION = 1
_NPZ_META = "__chainrule_metadata__"
# Fault injection for the crash tests only: "write:N" or "rename:N" SIGKILLs this process during the N-th
# atomic write (half of the temporary file written) or just before its rename; "sigint:N" / "sigint2:N" send it
# one / two SIGINTs (Ctrl-C) while the N-th temporary file is written, before its fsync and rename.
_KILL_AT = os.environ.get("CHAINRULE_TEST_KILL_AT", "")
_writes = [0]


def _maybe_die(stage: str, f: IO[bytes] | None = None) -> None:
    want, _, n = _KILL_AT.partition(":")
    if str(_writes[0]) != n:
        return
    import signal

    if stage == "write" and want in ("sigint", "sigint2"):
        for _ in range(2 if want == "sigint2" else 1):
            os.kill(os.getpid(), signal.SIGINT)
        return
    if want != stage:
        return
    if f is not None:
        f.flush()
        f.truncate(f.tell() // 2)
        f.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """Call write(f) on a temporary file beside `path`, fsync it, then rename it over `path`.

    Either the old file or the complete new one is there, whatever happens (a crash, a full disk).
    """
    path = Path(path)
    _writes[0] += 1
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:  # e.g. no such folder: name the file asked for, not the temporary one
        raise type(e)(e.errno, e.strerror, str(path)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            if _KILL_AT:
                _maybe_die("write", f)
            f.flush()
            os.fsync(f.fileno())
        if _KILL_AT:
            _maybe_die("rename")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass  # some filesystems cannot fsync a directory


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def checksum(tensors: dict[str, np.ndarray]) -> str:
    """sha256 over names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for k in sorted(tensors):
        a = np.asarray(tensors[k], order="C")
        h.update(k.encode() + b"\0" + a.dtype.str.encode() + repr(a.shape).encode() + b"\0")
        h.update(a.tobytes())
    return h.hexdigest()


def _finite(obj: Any) -> Any:
    """JSON has no NaN/Infinity: such floats (e.g. an undefined R²) are stored as null."""
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.generic):
        return _finite(obj.item())
    return obj


def _meta_checksum(meta: dict[str, Any]) -> str:
    rest = {k: v for k, v in meta.items() if k != "metadata_checksum"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, allow_nan=False).encode()).hexdigest()


def have_safetensors() -> bool:
    try:
        import safetensors.numpy  # noqa: F401
    except ImportError:
        return False
    return True


def default_extension() -> str:
    return ".safetensors" if have_safetensors() else ".npz"


def save_tensors(path: str | os.PathLike, tensors: dict[str, Any], metadata: dict[str, Any] | None = None) -> None:
    """Write arrays and JSON-serialisable metadata atomically; .npz paths use NumPy, others safetensors."""
    path = os.fspath(path)
    # not ascontiguousarray: it makes a 0-d array (BatchNorm's num_batches_tracked) 1-d
    arrays = {k: np.asarray(v.data if hasattr(v, "_op") else v, order="C") for k, v in tensors.items()}
    for k, a in arrays.items():
        if a.dtype.kind not in "biuf":
            raise ModelFileError(f"{path}: cannot save {k!r} of dtype {a.dtype}")
    meta = _finite({"format": "chainrule", "version": FORMAT_VERSION, **(metadata or {}), "checksum": checksum(arrays)})
    meta["metadata_checksum"] = _meta_checksum(meta)
    text = json.dumps(meta, allow_nan=False)
    if path.endswith(".npz"):
        arrays[_NPZ_META] = np.frombuffer(text.encode(), dtype=np.uint8)
        atomic_write(path, lambda f: np.savez(f, **arrays))
        return
    try:
        import safetensors.numpy as st
    except ImportError:
        raise ModelFileError(
            f'{path}: writing .safetensors needs the weights extra (pip install "chainrule[weights]"); or use .npz'
        ) from None
    data = st.save(arrays, metadata={"chainrule": text})
    atomic_write(path, lambda f: f.write(data))


def _fail(path: str, problem: str) -> ModelFileError:
    return ModelFileError(f"{path}: {problem}")


def load_tensors(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a file written by `save_tensors`; checks format, version and checksum."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise _fail(path, "no such file") from None
    except IsADirectoryError:
        raise _fail(path, "is a directory, not a model file") from None
    except OSError as e:
        raise _fail(path, f"cannot read ({e.strerror or e})") from None
    try:
        if raw[:4] == b"PK\x03\x04":
            arrays, text = _read_npz(path)
        else:
            arrays, text = _read_safetensors(path, raw)
        meta = json.loads(text)
    except ChainruleError:
        raise
    except Exception as e:
        raise _fail(path, f"damaged or not a chainrule file ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(meta, dict) or meta.get("format") != "chainrule":
        raise _fail(path, "not a chainrule file (no chainrule metadata)")
    version = meta.get("version")
    if not isinstance(version, int) or version < 1:
        raise _fail(path, f"invalid format version {version!r}")
    if version > FORMAT_VERSION:
        raise _fail(path, f"format version {version} is newer than this chainrule reads ({FORMAT_VERSION}); upgrade")
    if checksum(arrays) != meta.get("checksum"):
        raise _fail(path, "checksum mismatch: the tensors are damaged or were changed")
    if _meta_checksum(meta) != meta.get("metadata_checksum"):
        raise _fail(path, "checksum mismatch: the metadata is damaged or was changed")
    return arrays, meta


def _read_npz(path: str) -> tuple[dict[str, np.ndarray], str]:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ValueError as e:
        if "pickle" in str(e):
            raise _fail(path, "contains Python objects (refused: loading them could run code)") from None
        raise
    if _NPZ_META not in arrays:
        raise _fail(path, "not a chainrule file (no chainrule metadata)")
    return arrays, arrays.pop(_NPZ_META).tobytes().decode("utf-8")


def _read_safetensors(path: str, raw: bytes) -> tuple[dict[str, np.ndarray], str]:
    if len(raw) < 8:
        raise _fail(path, f"truncated ({len(raw)} bytes)")
    if len(raw) > 8 and raw[8:9] != b"{":  # a safetensors header is JSON; an .npz starts with PK
        raise _fail(path, f"not a chainrule file (neither .safetensors nor .npz: it starts with {raw[:12]!r})")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > len(raw) - 8:
        raise _fail(path, "truncated (header longer than the file)")
    header = json.loads(raw[8 : 8 + n])
    text = (header.get("__metadata__") or {}).get("chainrule")
    if text is None:
        raise _fail(path, "not a chainrule file (no chainrule metadata)")
    try:
        import safetensors.numpy as st
    except ImportError:
        raise _fail(path, 'reading .safetensors needs the weights extra: pip install "chainrule[weights]"') from None
    return dict(st.load(raw)), text


# ----------------------------------------------------------------------------- models


def model_metadata(model: Any) -> dict[str, Any]:
    spec = getattr(model, "_chainrule_spec", None)
    if spec is None:
        raise ModelFileError(
            f"{type(model).__name__} was not built from a spec (chainrule.spec.build_model); "
            "save its state_dict instead"
        )
    return {"kind": "model", "spec": spec}


def save(model: Any, path: str | os.PathLike, **metadata: Any) -> None:
    """Save a model built by `chainrule.spec.build_model`: its spec and weights in one file.

    Extra keyword arguments (JSON-serialisable) are stored in the metadata, e.g. preprocessing.
    """
    save_tensors(path, model.state_dict(), {**model_metadata(model), **metadata})


def load_with_metadata(path: str | os.PathLike) -> tuple[Any, dict[str, Any]]:
    """(model, metadata) from a model file or a checkpoint."""
    from .spec import build_from_resolved

    arrays, meta = load_tensors(path)
    spec = meta.get("spec")
    if not isinstance(spec, dict):
        raise _fail(os.fspath(path), "no model spec in the metadata")
    try:
        model = build_from_resolved(spec)
    except ChainruleError as e:
        raise _fail(os.fspath(path), f"its model spec cannot be built ({e})") from None
    prefix = "model." if meta.get("kind") == "checkpoint" else ""
    state = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
    load_state_into(model, state, os.fspath(path))
    return model, meta


def load_state_into(model: Any, state: dict[str, np.ndarray], path: str) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise _fail(path, f"does not fit the model spec (missing {missing[:5]}, unexpected {unexpected[:5]})")
    for k, v in own.items():
        if v.shape == () and state[k].shape == (1,):  # a 0-d buffer in a file written before 0-d arrays stayed 0-d
            state[k] = state[k].reshape(())
        if state[k].shape != v.shape:
            raise _fail(path, f"tensor {k!r} has shape {state[k].shape}, the model spec needs {v.shape}")
        if state[k].dtype.kind != v.dtype.kind:
            raise _fail(path, f"tensor {k!r} has dtype {state[k].dtype}, the model needs {v.dtype}")
    model.load_state_dict(state)


def load(path: str | os.PathLike) -> Any:
    """Load a model saved by `save` (or the weights of a checkpoint): the spec is rebuilt, weights copied."""
    return load_with_metadata(path)[0]
