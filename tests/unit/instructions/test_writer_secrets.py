"""The API key never reaches MLflow params, tags or artifacts, logs, output or error messages."""

import logging
from pathlib import Path

from instructedit import tracking
from instructedit.cli import main

KEY = "sk-fake-SECRET-4f9c2a7e1b3d5a6c"


def _everything_logged(run_id: str, tmp_path: Path) -> str:
    run = tracking.get_run(run_id)
    parts = [repr(run.data.params), repr(run.data.tags), repr(run.info)]
    root = Path(tracking.download_artifacts(run_id, "", dst=str(tmp_path / f"art-{run_id}")))
    files = [p for p in root.rglob("*") if p.is_file()]
    assert files, "the run logged no artifacts"
    parts += [p.read_text(errors="replace") for p in files]
    return "\n".join(parts)


def _run_ids(experiment: str) -> list[str]:
    return list(tracking.search_runs(experiment)["run_id"])


def _args(server, tmp_path, *extra):
    return ["optimize-instructions", "--task", "recent", "--backend", "openai", "--model", "fake",
            "--base-url", server.url, "--scorer", "length", "--executor", "local", "--rounds", "2",
            "--candidates", "2", "--max-retries", "0", "--cache-dir", str(tmp_path / "cache"),
            "--experiment", "secrets", *extra]


def test_key_from_env_never_logged(openai_server, tracking_uri, tmp_path, monkeypatch, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("INSTRUCTEDIT_INSTRUCTION_SETS", str(tmp_path / "sets"))
    assert main(_args(openai_server, tmp_path)) == 0
    assert openai_server.auth and all(a == f"Bearer {KEY}" for a in openai_server.auth)  # it was used
    out = capsys.readouterr()
    (run_id,) = _run_ids("secrets")
    logged = _everything_logged(run_id, tmp_path)
    assert "optimize/candidates.csv" in logged or "variant" in logged
    saved = "".join(p.read_text() for p in (tmp_path / "sets").glob("*.yaml"))
    cached = "".join(p.read_text() for p in (tmp_path / "cache").rglob("*.json"))
    for text in (logged, out.out, out.err, caplog.text, saved, cached):
        assert KEY not in text


def test_key_from_file_never_in_auth_error(openai_server, tracking_uri, tmp_path, monkeypatch, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("INSTRUCTEDIT_INSTRUCTION_SETS", str(tmp_path / "sets"))
    key_file = tmp_path / "openai.key"
    key_file.write_text(KEY)
    # The server echoes the key in its 401 message, as some do.
    openai_server.script = [("status", 401, f"Incorrect API key provided: {KEY}")]
    assert main(_args(openai_server, tmp_path, "--api-key-file", str(key_file))) == 1
    assert openai_server.auth == [f"Bearer {KEY}"]
    out = capsys.readouterr()
    assert "authentication failed (HTTP 401)" in out.err
    (run_id,) = _run_ids("secrets")
    assert tracking.get_run(run_id).info.status == "FAILED"
    logged = _everything_logged(run_id, tmp_path)
    for text in (logged, out.out, out.err, caplog.text):
        assert KEY not in text and KEY[8:20] not in text
