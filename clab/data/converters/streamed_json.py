"""A json object whose long lists are written record by record, so memory does not grow with them.

Used by the converters (``images``, ``annotations``) and by ``clab infer-video`` (per-frame detections)::

    writer = StreamedJson(out, head={"categories": [...]}, lists=("images", "annotations"))
    writer.add("images", {...})         # serialised at once into a temporary file next to ``out``
    writer.close(tail={"complete": True})   # assembles head, lists, tail; moves it over ``out`` atomically

``discard()`` drops the temporary files and leaves ``out`` untouched.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

from clab.io import atomic_open, to_jsonable

__all__ = ["StreamedJson"]


class StreamedJson:
    """Writes ``{**head, <list>: [...] for each list, **tail}`` to ``out`` (see the module docstring).

    Args:
        out: destination file (its folder is created).
        head: keys written first, in order (small values: kept in memory).
        lists: names of the streamed lists, in output order.
    """

    def __init__(self, out: str | Path, head: dict, lists: Sequence[str] = ("images", "annotations")) -> None:
        self.out = Path(out)
        self.head = dict(head)
        self.lists = tuple(lists)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._parts = {k: tempfile.TemporaryFile("w+", encoding="utf-8", dir=self.out.parent) for k in self.lists}
        self.counts = {k: 0 for k in self.lists}

    def add(self, key: str, record: dict) -> None:
        """Append ``record`` (json-serialisable; numpy values are converted) to the list ``key``."""
        f = self._parts[key]
        if self.counts[key]:
            f.write(", ")
        f.write(json.dumps(record, default=to_jsonable))
        self.counts[key] += 1

    def close(self, tail: dict | None = None) -> Path:
        """Write the whole object to ``out`` atomically (``tail`` keys after the lists); returns ``out``."""
        try:
            with atomic_open(self.out, "w") as f:
                f.write("{")
                items = [(k, json.dumps(v, default=to_jsonable)) for k, v in self.head.items()]
                first = True
                for k, text in items:
                    f.write(f'{"" if first else ", "}{json.dumps(k)}: {text}')
                    first = False
                for key in self.lists:
                    part = self._parts[key]
                    part.flush()
                    part.seek(0)
                    f.write(f'{"" if first else ", "}{json.dumps(key)}: [')
                    shutil.copyfileobj(part, f, 1 << 20)
                    f.write("]")
                    first = False
                for k, v in (tail or {}).items():
                    f.write(f'{"" if first else ", "}{json.dumps(k)}: {json.dumps(v, default=to_jsonable)}')
                    first = False
                f.write("}")
        finally:
            self.discard()
        return self.out

    def discard(self) -> None:
        """Drop the temporary files (``out`` is left as it was)."""
        for part in self._parts.values():
            part.close()
