"""Instruction writer backed by any OpenAI-compatible chat server (a hosted API, vLLM, Ollama).

The API key comes only from the environment (`OPENAI_API_KEY`), a key file (`api_key_file`, or
`OPENAI_API_KEY_FILE`) or a config object built in code; never from a command-line argument, which
would end up in shell history, process lists and run logs. The key is kept out of `repr`,
`describe()`, log lines and error messages. Retries (exponential backoff, honouring Retry-After)
are done here rather than by the openai client, so that they are logged and testable.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .writer import Message, WriterAuthError, WriterError, WriterResponseError, WriterTimeoutError

log = logging.getLogger(__name__)

KEY_ENV = "OPENAI_API_KEY"
KEY_FILE_ENV = "OPENAI_API_KEY_FILE"
BASE_URL_ENV = "OPENAI_BASE_URL"
MODEL_ENV = "OPENAI_MODEL"
DEFAULT_MODEL = "gpt-4o-mini"
NO_KEY = "not-needed"  # local servers (vLLM, Ollama) accept any key; the client insists on one


def resolve_api_key(api_key_file: str | os.PathLike | None = None, api_key: str | None = None,
                    env: dict[str, str] | None = None) -> str | None:
    """The key from (in order) a config value, a key file, $OPENAI_API_KEY_FILE, $OPENAI_API_KEY."""
    env = os.environ if env is None else env
    if api_key:
        return api_key
    path = api_key_file or env.get(KEY_FILE_ENV)
    if path:
        p = Path(path).expanduser()
        try:
            key = p.read_text().strip()
        except OSError as e:
            raise WriterAuthError(f"cannot read the API key file {p}: {e.strerror}") from None
        if not key:
            raise WriterAuthError(f"the API key file {p} is empty")
        return key
    return env.get(KEY_ENV) or None


def public_url(url: str | None) -> str:
    """The URL without user info, query or fragment (where a key could hide)."""
    if not url:
        return ""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class OpenAIWriter:
    backend = "openai"

    def __init__(
        self,
        model: str | None = None,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        api_key_file: str | os.PathLike | None = None,
        timeout: float = 60.0,
        max_retries: int = 4,
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
        temperature: float = 1.0,
        max_tokens: int = 200,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.model = model or os.environ.get(MODEL_ENV) or DEFAULT_MODEL
        self.base_url = base_url or os.environ.get(BASE_URL_ENV) or None
        key = resolve_api_key(api_key_file, api_key)
        if key is None:
            if self.base_url is None:
                raise WriterAuthError(
                    f"no API key: set {KEY_ENV} or {KEY_FILE_ENV} (or point --base-url at a local "
                    f"server that needs none)"
                )
            key = NO_KEY
        self._key = key
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self.temperature = float(temperature)
        self.max_tokens = int(max_tokens)
        self._sleep = sleep
        self._client = None
        self.requests = 0  # HTTP attempts made (tests and progress output)

    def __repr__(self) -> str:
        return f"OpenAIWriter(model={self.model!r}, base_url={public_url(self.base_url)!r})"

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.backend, "model": self.model, "base_url": public_url(self.base_url),
            "temperature": self.temperature, "max_tokens": self.max_tokens,
        }

    # ---------------------------------------------------------------------------------- calls
    def _get_client(self):
        if self._client is None:
            import openai

            self._client = openai.OpenAI(
                api_key=self._key, base_url=self.base_url, timeout=self.timeout, max_retries=0,
            )
        return self._client

    def _scrub(self, text: str) -> str:
        if self._key and self._key != NO_KEY:
            text = text.replace(self._key, "[REDACTED]")
        return text

    def _where(self) -> str:
        return f"{public_url(self.base_url) or 'the OpenAI API'} (model {self.model})"

    def generate(self, messages: list[Message], n: int = 1, seed: int = 0) -> list[str]:
        out: list[str] = []
        calls = 0
        # Some compatible servers (Ollama) ignore `n` and answer one choice: ask again, next seed.
        while len(out) < n and calls < n:
            out.extend(self._complete(messages, n - len(out), seed + calls))
            calls += 1
        if len(out) < n:
            raise WriterResponseError(f"{self._where()} returned {len(out)} of {n} completions")
        return out[:n]

    def _delay(self, attempt: int, err: Exception) -> float:
        delay = self.backoff_base * (2 ** attempt)
        response = getattr(err, "response", None)
        retry_after = response.headers.get("retry-after") if response is not None else None
        if retry_after:
            try:
                delay = max(delay, float(retry_after))
            except ValueError:
                pass
        return min(delay, self.backoff_max)

    def _complete(self, messages: list[Message], n: int, seed: int) -> list[str]:
        import openai

        client = self._get_client()
        last: Exception | None = None
        for attempt in range(self.max_retries + 1):
            self.requests += 1
            try:
                resp = client.chat.completions.create(
                    model=self.model, messages=messages, n=n, seed=seed,
                    temperature=self.temperature, max_tokens=self.max_tokens,
                )
            except (openai.AuthenticationError, openai.PermissionDeniedError) as e:
                # The server's message may echo (part of) the key: say nothing of it.
                raise WriterAuthError(
                    f"authentication failed (HTTP {e.status_code}) at {self._where()}: check "
                    f"{KEY_ENV} or the key file ({KEY_FILE_ENV})"
                ) from None
            except (openai.RateLimitError, openai.InternalServerError, openai.APIConnectionError) as e:
                last = e
                if attempt == self.max_retries:
                    break
                delay = self._delay(attempt, e)
                log.warning("writer: %s from %s; retry %d/%d in %.2fs", _describe_error(e), self._where(),
                            attempt + 1, self.max_retries, delay)
                self._sleep(delay)
                continue
            except openai.APIStatusError as e:
                raise WriterError(
                    f"HTTP {e.status_code} from {self._where()}: {self._scrub(_server_message(e))}"
                ) from None
            except (openai.APIResponseValidationError, ValueError) as e:  # ValueError: body is not JSON
                raise WriterResponseError(
                    f"malformed response from {self._where()}: {self._scrub(type(e).__name__)}: "
                    f"{self._scrub(str(e))[:200]}"
                ) from None
            return self._parse(resp)
        assert last is not None
        attempts = self.max_retries + 1
        if isinstance(last, openai.APITimeoutError):
            raise WriterTimeoutError(
                f"{self._where()} did not answer within {self.timeout:g}s ({attempts} attempts)"
            ) from None
        raise WriterError(
            f"giving up on {self._where()} after {attempts} attempts: {self._scrub(_describe_error(last))}"
        ) from None

    def _parse(self, resp: Any) -> list[str]:
        choices = getattr(resp, "choices", None)
        if not isinstance(choices, list) or not choices:
            raise WriterResponseError(f"malformed response from {self._where()}: no choices")
        texts = []
        for c in sorted(choices, key=lambda c: getattr(c, "index", 0) or 0):
            content = getattr(getattr(c, "message", None), "content", None)
            if not isinstance(content, str):
                raise WriterResponseError(f"malformed response from {self._where()}: a choice has no text")
            texts.append(content)
        return texts


def _describe_error(e: Exception) -> str:
    status = getattr(e, "status_code", None)
    if status is not None:
        return f"HTTP {status}"
    return type(e).__name__


def _server_message(e: Exception) -> str:
    body = getattr(e, "body", None)
    if isinstance(body, dict):
        err = body.get("error")
        msg = err.get("message") if isinstance(err, dict) else body.get("message")
        if msg:
            return str(msg)[:300]
    return str(getattr(e, "message", "") or type(e).__name__)[:300]
