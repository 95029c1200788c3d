"""The instruction writer interface: chat messages in, n sampled completions out.

Two backends implement it: `OpenAIWriter` (any OpenAI-compatible server, openai_writer.py) and
`LocalWriter` (a registry chat model through transformers, local_writer.py); `make_writer`
(backends.py) builds one by name. The optimiser only sees this interface, wrapped in
`CachedWriter` (cache.py) so that a rerun makes no new calls.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": str}


class WriterError(RuntimeError):
    """The writer could not produce completions; the message never contains a secret."""


class WriterAuthError(WriterError):
    """The server refused the credentials (HTTP 401/403)."""


class WriterTimeoutError(WriterError):
    """Every attempt timed out."""


class WriterResponseError(WriterError):
    """The server answered with a body that is not a chat completion."""


@runtime_checkable
class Writer(Protocol):
    backend: str  # "openai" | "local"
    model: str

    def generate(self, messages: list[Message], n: int = 1, seed: int = 0) -> list[str]:
        """n completions of the chat `messages`, sampled with `seed` (exactly n strings)."""
        ...

    def describe(self) -> dict[str, Any]:
        """Public, secret-free settings that change the output (MLflow params and cache keys)."""
        ...
