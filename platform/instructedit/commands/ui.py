"""`instructedit ui`: the MLflow UI on 127.0.0.1 against the configured tracking store."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

HELP = "start the MLflow UI on 127.0.0.1 (one worker) against the configured tracking store"


def add_arguments(p) -> None:
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--tracking-uri", default=None, help="MLflow store (default: $MLFLOW_TRACKING_URI or "
                   "sqlite under ./mlruns)")
    p.add_argument("--dry-run", action="store_true", help="print the address and the command, start nothing")


def command(tracking_uri: str | None, port: int) -> list[str]:
    from instructedit import tracking

    cmd = tracking.ui_command(tracking_uri, port=port)
    # A console script run without an activated venv has no `mlflow` on PATH: use the one beside Python.
    if cmd[0] == "mlflow" and shutil.which("mlflow") is None:
        beside = Path(sys.executable).parent / "mlflow"
        cmd = [str(beside)] + cmd[1:] if beside.exists() else [sys.executable, "-m", "mlflow"] + cmd[1:]
    return cmd


def run(args) -> int:
    from instructedit import tracking

    cmd = command(args.tracking_uri, args.port)
    uri = tracking.redact_text(tracking.resolve_tracking_uri(args.tracking_uri))
    print(f"MLflow UI: http://127.0.0.1:{args.port}  (store {uri})", flush=True)
    if args.dry_run:
        print(" ".join(cmd))
        return 0
    proc = subprocess.Popen(cmd)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        return 0
