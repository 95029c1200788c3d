"""`instructedit ui` owns the MLflow server it starts: SIGTERM (or SIGINT) to the instructedit
process ends mlflow ui and every worker it forked (uvicorn, job runners), nothing keeps serving."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import psutil
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_serving(port: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"instructedit ui exited early ({proc.returncode}): {proc.stdout.read()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"the UI did not answer on port {port} within {timeout:.0f} s")


@pytest.mark.timeout(240)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_whole_process_group(tmp_path, sig):
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"}
    proc = subprocess.Popen([sys.executable, "-m", "instructedit", "ui", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_serving(port, proc, timeout=180)
        tree = psutil.Process(proc.pid).children(recursive=True)
        assert tree, "mlflow ui started no process"
        group = os.getpgid(tree[0].pid)
        assert group != os.getpgid(proc.pid)  # mlflow runs in its own group, so one killpg reaches all of it
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == 0
        _, alive = psutil.wait_procs(tree, timeout=15)
        alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert not alive, [(p.pid, p.name()) for p in alive]
        members = []
        for p in psutil.process_iter(["pid", "name"]):
            try:
                if os.getpgid(p.pid) == group and p.status() != psutil.STATUS_ZOMBIE:
                    members.append((p.pid, p.name()))
            except (ProcessLookupError, psutil.NoSuchProcess):
                continue
        assert not members, members
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
        out = proc.stdout.read()
        assert f"MLflow UI: http://127.0.0.1:{port}/#/experiments?workflowType=machine_learning" in out, out
    finally:
        if proc.poll() is None:
            proc.kill()
