"""On-disk JSON cache of writer completions and candidate scores.

One file per entry, `<dir>/<sha[:2]>/<sha>.json` = {"key": ..., "value": ...}, where sha hashes
the canonical JSON of the key. Completions are keyed by (backend, model, sampling settings,
messages, n, seed) and scores by (scorer, task, instruction), so rerunning an optimisation with
the same seed replays every completion and score and makes no new LLM calls or trials.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .writer import Message, Writer


def default_cache_dir() -> Path:
    from ..models import cache_dir

    return cache_dir() / "instruction_writer"


def key_hash(key: dict[str, Any]) -> str:
    blob = json.dumps(key, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


class JsonCache:
    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root else default_cache_dir()
        self.hits = 0
        self.misses = 0

    def _path(self, key: dict[str, Any]) -> Path:
        h = key_hash(key)
        return self.root / h[:2] / f"{h}.json"

    def get(self, key: dict[str, Any]) -> Any | None:
        p = self._path(key)
        try:
            entry = json.loads(p.read_text())
        except (FileNotFoundError, json.JSONDecodeError):  # a torn file counts as a miss
            self.misses += 1
            return None
        self.hits += 1
        return entry["value"]

    def put(self, key: dict[str, Any], value: Any) -> None:
        p = self._path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump({"key": key, "value": value}, f, ensure_ascii=False, indent=1)
        os.replace(tmp, p)


class CachedWriter:
    """A writer that answers from the cache when it can; `calls` counts real backend calls."""

    def __init__(self, writer: Writer, cache: JsonCache) -> None:
        self.writer = writer
        self.cache = cache
        self.backend = writer.backend
        self.model = writer.model
        self.calls = 0
        self.hits = 0

    def describe(self) -> dict[str, Any]:
        return self.writer.describe()

    def key(self, messages: list[Message], n: int, seed: int) -> dict[str, Any]:
        settings = {k: v for k, v in self.writer.describe().items() if k not in ("backend", "model", "base_url")}
        return {"kind": "completion", "backend": self.backend, "model": self.model, "settings": settings,
                "messages": messages, "n": n, "seed": seed}

    def generate(self, messages: list[Message], n: int = 1, seed: int = 0) -> list[str]:
        key = self.key(messages, n, seed)
        cached = self.cache.get(key)
        if cached is not None:
            self.hits += 1
            return list(cached)
        out = list(self.writer.generate(messages, n=n, seed=seed))
        self.calls += 1
        self.cache.put(key, out)
        return out
