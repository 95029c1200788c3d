"""`instructedit ui`: the MLflow UI on 127.0.0.1 against the configured tracking store.

`mlflow ui` forks a server, uvicorn and job workers; killing only its PID leaves them serving. So
it runs in its own session (process group), and on exit, SIGTERM, SIGINT or SIGHUP the whole group
is stopped (SIGTERM, then SIGKILL after a grace period), plus any descendant that left the group.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HELP = "start the MLflow UI on 127.0.0.1 (one worker) against the configured tracking store"
GRACE_S = 10.0


def add_arguments(p) -> None:
    p.add_argument("--port", type=int, default=5000, help="port of the UI on 127.0.0.1")
    p.add_argument("--tracking-uri", default=None, help="MLflow store (default: $MLFLOW_TRACKING_URI, else the "
                   "project's sqlite store under <checkout or $INSTRUCTEDIT_HOME>/mlruns)")
    p.add_argument("--experiment", default=None, help="print the link to this experiment's runs view")
    p.add_argument("--dry-run", action="store_true", help="print the address and the command, start nothing")


def command(tracking_uri: str | None, port: int) -> list[str]:
    from instructedit import tracking

    cmd = tracking.ui_command(tracking_uri, port=port)
    # A console script run without an activated venv has no `mlflow` on PATH: use the one beside Python.
    if cmd[0] == "mlflow" and shutil.which("mlflow") is None:
        beside = Path(sys.executable).parent / "mlflow"
        cmd = [str(beside)] + cmd[1:] if beside.exists() else [sys.executable, "-m", "mlflow"] + cmd[1:]
    return cmd


class _Stop(Exception):
    """A signal asked us to end: unwinds to the clean-up in run()."""


def _survivors(pgid: int, tree: list) -> list:
    """Live (non-zombie) processes of the group or of the recorded tree."""
    import psutil

    out = {}
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                out[p.pid] = p
        except (ProcessLookupError, psutil.NoSuchProcess, PermissionError):
            continue
    for p in tree:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out[p.pid] = p
        except psutil.NoSuchProcess:
            continue
    return list(out.values())


def stop_group(proc: subprocess.Popen, grace_s: float = GRACE_S) -> None:
    """SIGTERM the process group led by `proc` (and any descendant that left it), SIGKILL what is
    left after `grace_s`."""
    import psutil

    try:
        tree = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    pgid = proc.pid  # start_new_session: the leader's pid is the group id
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass
        for p in tree:
            try:
                p.send_signal(sig)
            except psutil.NoSuchProcess:
                pass
        deadline = time.time() + grace_s
        while time.time() < deadline:
            proc.poll()  # reap the leader
            if not _survivors(pgid, tree):
                return
            time.sleep(0.1)
    proc.wait(timeout=5)


def run(args) -> int:
    from instructedit import tracking

    cmd = command(args.tracking_uri, args.port)
    uri = tracking.store_label(args.tracking_uri)
    base = f"http://127.0.0.1:{args.port}"
    url = tracking.experiment_url(args.experiment, base, args.tracking_uri) if args.experiment \
        else f"{base}/#/experiments?{tracking.UI_VIEW}"
    print(f"MLflow UI: {url}  (store {uri})", flush=True)
    if args.dry_run:
        print(" ".join(cmd))
        return 0

    def on_signal(signum, frame):
        raise _Stop(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    proc = None
    try:
        proc = subprocess.Popen(cmd, start_new_session=True)  # its own group: one killpg reaches every worker
        rc = proc.wait()
        return 1 if rc else 0
    except _Stop:
        return 0
    finally:
        for s in previous:  # a second Ctrl-C or TERM must not interrupt the clean-up
            signal.signal(s, signal.SIG_IGN)
        if proc is not None:
            stop_group(proc)
        for s, h in previous.items():
            signal.signal(s, h)
