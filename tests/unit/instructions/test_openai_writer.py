"""The OpenAI-compatible writer against a real HTTP server on 127.0.0.1, through the openai client."""

import pytest
from instructedit.instructions.backends import make_writer
from instructedit.instructions.openai_writer import OpenAIWriter, public_url, resolve_api_key
from instructedit.instructions.writer import (
    WriterAuthError,
    WriterError,
    WriterResponseError,
    WriterTimeoutError,
)

MSGS = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "write one"}]
KEY = "sk-unit-test-0123456789abcdef"


def _writer(server, monkeypatch, **kw):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    delays = []
    kw.setdefault("max_retries", 2)
    kw.setdefault("timeout", 5)
    w = OpenAIWriter(model="fake-model", base_url=server.url, backoff_base=0.01, sleep=delays.append, **kw)
    return w, delays


def test_normal_completion_sends_model_n_seed_and_key(openai_server, monkeypatch):
    w, _ = _writer(openai_server, monkeypatch)
    out = w.generate(MSGS, n=3, seed=7)
    assert len(out) == 3 and len(set(out)) == 3
    body = openai_server.requests[0]
    assert body["model"] == "fake-model" and body["n"] == 3 and body["seed"] == 7
    assert body["messages"] == MSGS
    assert openai_server.auth[0] == f"Bearer {KEY}"
    assert KEY not in repr(w) and KEY not in str(w.describe())


def test_server_ignoring_n_is_asked_again(openai_server, monkeypatch):
    w, _ = _writer(openai_server, monkeypatch)
    openai_server.responder = lambda body: ["only one"]
    assert w.generate(MSGS, n=3, seed=1) == ["only one"] * 3
    assert [r["seed"] for r in openai_server.requests] == [1, 2, 3]


def test_429_then_success_backs_off(openai_server, monkeypatch):
    w, delays = _writer(openai_server, monkeypatch)
    openai_server.script = [("status", 429, "slow down"), ("status", 429, "slow down")]
    assert len(w.generate(MSGS, n=2, seed=0)) == 2
    assert len(openai_server.requests) == 3
    assert delays == [0.01, 0.02]  # exponential


def test_500_retried_then_clear_error(openai_server, monkeypatch):
    w, delays = _writer(openai_server, monkeypatch, max_retries=2)
    openai_server.script = [("status", 500, "boom")] * 3
    with pytest.raises(WriterError, match=r"after 3 attempts: HTTP 500"):
        w.generate(MSGS, n=1, seed=0)
    assert len(openai_server.requests) == 3 and len(delays) == 2


def test_500_then_success(openai_server, monkeypatch):
    w, _ = _writer(openai_server, monkeypatch)
    openai_server.script = [("status", 503, "busy")]
    assert len(w.generate(MSGS, n=1, seed=0)) == 1


def test_malformed_body_is_a_clear_error_without_retry(openai_server, monkeypatch):
    w, delays = _writer(openai_server, monkeypatch)
    openai_server.script = [("garbage",)]
    with pytest.raises(WriterResponseError, match="malformed response"):
        w.generate(MSGS, n=1, seed=0)
    openai_server.script = [("nochoices",)]
    with pytest.raises(WriterResponseError, match="no choices"):
        w.generate(MSGS, n=1, seed=0)
    assert len(openai_server.requests) == 2 and delays == []


def test_timeout_retried_then_timeout_error(openai_server, monkeypatch):
    w, delays = _writer(openai_server, monkeypatch, timeout=0.3, max_retries=1)
    openai_server.script = [("sleep", 1.5), ("sleep", 1.5)]
    with pytest.raises(WriterTimeoutError, match=r"did not answer within 0.3s \(2 attempts\)"):
        w.generate(MSGS, n=1, seed=0)
    assert len(openai_server.requests) == 2 and len(delays) == 1


def test_client_error_not_retried(openai_server, monkeypatch):
    w, _delays = _writer(openai_server, monkeypatch)
    openai_server.script = [("status", 400, "bad model")]
    with pytest.raises(WriterError, match="HTTP 400.*bad model"):
        w.generate(MSGS, n=1, seed=0)
    assert len(openai_server.requests) == 1


def test_401_is_clear_and_never_shows_the_key(openai_server, monkeypatch):
    w, _ = _writer(openai_server, monkeypatch)
    openai_server.script = [("status", 401, f"Incorrect API key provided: {KEY}")]
    with pytest.raises(WriterAuthError) as err:
        w.generate(MSGS, n=1, seed=0)
    msg = str(err.value)
    assert "authentication failed (HTTP 401)" in msg and "OPENAI_API_KEY" in msg
    assert KEY not in msg and KEY[:12] not in msg
    assert len(openai_server.requests) == 1  # no retry on 401


def test_key_sources(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY_FILE", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert resolve_api_key() is None
    with pytest.raises(WriterAuthError, match="no API key"):
        OpenAIWriter(model="m")
    # A local server needs no key.
    assert OpenAIWriter(model="m", base_url="http://127.0.0.1:1/v1")._key == "not-needed"
    f = tmp_path / "key"
    f.write_text(KEY + "\n")
    assert resolve_api_key(f) == KEY
    monkeypatch.setenv("OPENAI_API_KEY_FILE", str(f))
    assert resolve_api_key() == KEY
    (tmp_path / "empty").write_text("")
    with pytest.raises(WriterAuthError, match="empty"):
        resolve_api_key(tmp_path / "empty")
    assert public_url("http://user:pw@host:8000/v1?key=x") == "http://host:8000/v1"


def test_make_writer():
    with pytest.raises(ValueError, match="unknown writer backend"):
        make_writer("nope")
    assert make_writer("local", "tiny-llama").backend == "local"
