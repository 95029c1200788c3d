"""The writer factory: a backend name -> a `Writer`.

Apart from writer.py so that the interface module imports neither backend (each backend imports
the interface for its messages and errors; the factory is the one place that knows them all).
"""

from __future__ import annotations

from typing import Any

from .writer import Writer

BACKENDS = ("openai", "local")


def make_writer(backend: str, model: str | None = None, **kwargs: Any) -> Writer:
    """Build a writer by backend name; kwargs go to the backend's constructor."""
    if backend == "openai":
        from .openai_writer import OpenAIWriter

        return OpenAIWriter(model=model, **kwargs)
    if backend == "local":
        from .local_writer import LocalWriter

        return LocalWriter(model=model or "smollm2-135m", **kwargs)
    raise ValueError(f"unknown writer backend {backend!r}; known: {list(BACKENDS)}")
