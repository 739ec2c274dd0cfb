"""Small file helpers: atomic writes and json loading with clear errors.

Every file that ``clab`` writes for later use (annotation json, metrics, manifests, tables) goes through
``atomic_*``: the content is written to a temporary file in the destination folder, flushed to disk and
then moved over the destination with ``os.replace``, so a reader sees either the old file or the complete
new one, never a half-written file (DESIGN.md, "Errors").
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

__all__ = [
    "atomic_open", "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "load_json",
    "to_jsonable",
]


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file next to ``path``; on a clean exit it replaces ``path`` atomically.

    Args:
        path: destination file; its parent folders are created.
        mode: ``'w'`` (text) or ``'wb'`` (binary).
        encoding: text encoding (ignored in binary mode).

    If the ``with`` block raises, the temporary file is removed and ``path`` is left untouched.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, _default_mode())  # mkstemp creates 0600; give the file the usual permissions
        if mode == "wb":
            f = os.fdopen(fd, "wb")
        else:
            f = os.fdopen(fd, "w", encoding=encoding, newline="")
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path`` as a ``Path``."""
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; returns ``path`` as a ``Path``."""
    with atomic_open(path, "w", encoding=encoding) as f:
        f.write(text)
    return Path(path)


def to_jsonable(obj: Any) -> Any:
    """``json.dump`` ``default=`` hook: numpy scalars and arrays, paths, sets and tuples to plain types."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        np = None
    if np is not None:
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable: {obj!r}")


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = None,
                      sort_keys: bool = False) -> Path:
    """Serialise ``obj`` as json (numpy values converted) and write it to ``path`` atomically.

    The object is serialised completely before the file is touched, so a serialisation error leaves any
    existing ``path`` unchanged.
    """
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, default=to_jsonable, allow_nan=True)
    return atomic_write_text(path, text + ("\n" if indent is not None else ""))


def load_json(path: str | os.PathLike, what: str = "json file") -> Any:
    """Load a json file, with errors that name the file and say what is wrong.

    Args:
        path: the file to read.
        what: what the file is, for the messages (e.g. ``'CocoVID annotation json'``).

    Raises:
        FileNotFoundError: ``path`` does not exist (or is a folder).
        ValueError: the file is not valid UTF-8 json; the message gives the line and column.
    """
    path = Path(path)
    if not path.is_file():
        reason = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"{what} {path} {reason}")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} {path} is not valid json: {e.msg} at line {e.lineno}, "
                         f"column {e.colno}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{what} {path} is not UTF-8 text (byte {e.start}): {e.reason}") from None
