"""Quiet by default: the whole demo at a tiny budget (tiny-llama, 2 Ray Train workers, 2 steps, 2 test
records per task) prints a short transcript with rank 0's progress and none of Ray's or MLflow's
chatter, which lands in the log file named on the first line.

Plus the driver-side routing of ray_session without starting Ray.
"""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

# Patterns seen in the demo's transcript before it was quiet (issue 17), and the like.
NOISE = {
    "Ray Train placement-group cleaner": re.compile(r"Failed to query"),
    "Ray Train report dicts": re.compile(r"TrainingReport\("),
    "INFO-level library lines": re.compile(r"\bINFO\b"),
    "Ray token-auth notice": re.compile(r"[Tt]oken authentication"),
    "Ray worker prefixes": re.compile(r"\((RayTrainWorker|TrainController|PlacementGroupCleaner|DatasetManager) pid="),
    "Python warnings": re.compile(r"\w+Warning: "),
    "tqdm progress bars": re.compile(r"Downloading artifacts|\d+%\|"),
    "Ray log dedup notes": re.compile(r"repeated \d+x across cluster"),
    "a deleted temp folder": re.compile(r"instructedit-worker-"),
}
MAX_LINES = 60  # the full `make demo` must stay under this too (issue 17)


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    work = tmp_path_factory.mktemp("demo")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_DISABLE_TELEMETRY": "true",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "INSTRUCTEDIT_CACHE": str(work / "cache")}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "instructedit.demo", "--workdir", str(work), "--eval-records", "2",
           "--tracking-uri", f"sqlite:///{work / 'mlruns' / 'mlflow.db'}",
           "--set", "model=tiny-llama", "--set", "data.max_records=16", "--set", "train.max_steps=2",
           "--set", "train.val_every=1", "--set", "train.log_every=1", "--set", "train.val_size=4",
           "--set", "editor.rank=16"]
    # stdout and stderr into one stream, as a terminal shows them
    res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                         timeout=600, check=False)
    return {"rc": res.returncode, "out": res.stdout, "lines": res.stdout.splitlines(), "work": work}


@pytest.mark.timeout(700)
def test_demo_transcript_is_short_and_clean(tiny_demo):
    out, lines = tiny_demo["out"], tiny_demo["lines"]
    assert tiny_demo["rc"] == 0, out[-4000:]
    assert len(lines) < MAX_LINES, f"{len(lines)} lines:\n{out}"
    for what, pattern in NOISE.items():
        hits = [ln for ln in lines if pattern.search(ln)]
        assert not hits, f"{what} in the demo's output: {hits[:3]}"
    # progress from rank 0 only: every [train] / [val] line once (two ranks would print each twice)
    progress = [ln for ln in lines if ln.startswith(("[train]", "[val]"))]
    dup = [ln for ln, c in Counter(progress).items() if c > 1]
    assert not dup, f"progress lines printed more than once: {dup}"
    assert any(ln.startswith("[train] step 1/2 loss") and "ETA" in ln for ln in lines), out
    assert sum(ln.startswith("[val] step") for ln in lines) == 2 and any("val/score=" in ln for ln in lines)
    assert any(ln.startswith("[demo] best: step ") for ln in lines)
    assert any(ln.startswith("InstructEdit  zsre") for ln in lines), out  # the results table


@pytest.mark.timeout(700)
def test_chatter_is_in_the_named_log_file(tiny_demo):
    first = tiny_demo["lines"][0]
    m = re.fullmatch(r"\[demo\] Ray/MLflow logs -> (runs/logs/demo-\d{8}-\d{6}\.log)", first)
    assert m, first
    log = (tiny_demo["work"] / m.group(1)).read_text()
    # what the terminal did not show is in the file: worker output with its Ray prefix, library logs
    assert re.search(r"\((RayTrainWorker|TrainController|PlacementGroupCleaner|DatasetManager) pid=\d+\)", log)
    assert "[train] step 1/2" in log  # progress is kept in the file too
    assert re.search(r"WARNING ray\.", log) or "ray." in log


# ------------------------------------------------------------------------- routing, no Ray needed
def test_worker_lines_go_to_the_file_and_progress_to_the_terminal(monkeypatch, capsys):
    from instructedit import ray_session

    buf = io.StringIO()
    monkeypatch.setitem(ray_session._state, "file", buf)
    ray_session._write_worker_lines({"pid": 7, "actor_name": "RayTrainWorker", "lines": [
        "[train] step 5/40 loss 1.0 (ETA 0:01:00)", "Reporting training result 1: TrainingReport(...)",
        "[val] step 20 val/score=0.5"]})
    err = capsys.readouterr().err.splitlines()
    assert err == ["[train] step 5/40 loss 1.0 (ETA 0:01:00)", "[val] step 20 val/score=0.5"]
    assert buf.getvalue().splitlines() == [
        "(RayTrainWorker pid=7) [train] step 5/40 loss 1.0 (ETA 0:01:00)",
        "(RayTrainWorker pid=7) Reporting training result 1: TrainingReport(...)",
        "(RayTrainWorker pid=7) [val] step 20 val/score=0.5"]


ENV = ("RAY_TRAIN_ENABLE_PRINT_PATCH", "MLFLOW_LOGGING_LEVEL", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR",
       "TRANSFORMERS_VERBOSITY")


def test_setup_logging_routes_library_loggers(tmp_path, monkeypatch, capsys):
    from instructedit import ray_session

    for k in ENV:  # restored after the test
        monkeypatch.setenv(k, "")
        monkeypatch.delenv(k)
    monkeypatch.setattr(ray_session, "_state", {"path": None, "verbose": None, "file": None, "handler": None})
    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).propagate) for n in ray_session.LIBRARY_LOGGERS}
    try:
        path = ray_session.setup_logging("unit", tmp_path, verbose=False)
        assert path is not None and path.parent == tmp_path / "logs"
        assert ray_session.setup_logging("again", tmp_path) == path  # one file per process
        assert capsys.readouterr().err.strip() == f"[unit] Ray/MLflow logs -> {path.resolve()}"
        logging.getLogger("mlflow.store.db.utils").warning("Creating initial MLflow database tables...")
        logging.getLogger("ray.data").error("a real failure")
        err = capsys.readouterr().err
        assert "Creating initial" not in err and "a real failure" in err  # errors still reach the terminal
        text = Path(path).read_text()
        assert "Creating initial MLflow database tables" in text and "a real failure" in text
        assert os.environ["RAY_TRAIN_ENABLE_PRINT_PATCH"] == "0"
    finally:
        for n, (handlers, propagate) in saved.items():
            logging.getLogger(n).handlers, logging.getLogger(n).propagate = handlers, propagate
        logging.captureWarnings(False)
        f = ray_session._state["file"]
        if f is not None:
            f.close()


def test_verbose_changes_nothing(tmp_path, monkeypatch):
    from instructedit import ray_session

    monkeypatch.setenv("RAY_TRAIN_ENABLE_PRINT_PATCH", "1")
    monkeypatch.setattr(ray_session, "_state", {"path": None, "verbose": None, "file": None, "handler": None})
    before = logging.getLogger("ray").handlers[:]
    assert ray_session.setup_logging("unit", tmp_path, verbose=True) is None
    assert logging.getLogger("ray").handlers == before and not (tmp_path / "logs").exists()
    assert ray_session.is_verbose()
