"""Jobs on a real local Ray cluster through the `instructedit submit` / `instructedit jobs` CLI.

One head is started on 127.0.0.1 with token authentication on (RAY_AUTH_MODE=token and a random
RAY_AUTH_TOKEN: nothing is read from or written to ~/.ray/auth_token), its own short temp dir and
free ports for everything, so it cannot collide with other Ray instances on the machine. It is
stopped whatever happens, WITHOUT `ray stop` (which kills every Ray process of every user on the
machine): the teardown signals `ray start --block` and then kills, by pid, exactly the processes of
this head (its process tree, plus anything whose command line names its temp dir).

Checks: a tiny training job runs to SUCCEEDED and its MLflow run (a sqlite store in the test's
temp dir, passed to the job through runtime_env env_vars) is FINISHED; a job with a bad config
ends FAILED with the config error in its logs; a wrong or missing token is refused with a clear
message and nothing is submitted; an unreachable address gives a clear error.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests
from instructedit import tracking

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CLI = [str(BIN / "instructedit")] if (BIN / "instructedit").exists() else [sys.executable, "-m", "instructedit"]

TINY = """\
name: cluster-tiny
experiment: cluster-test
model: tiny-llama
mode: instructedit
data:
  tasks: [counterfact, recent]
  hold_out: []
  max_records: 8
editor:
  rank: 8
train:
  batch_size: 2
  max_steps: 2
  val_every: 2
  log_every: 1
  val_size: 2
  max_length: 48
  num_workers: 1
  use_gpu: "false"
"""

# Valid YAML, invalid run: the global batch must divide over the workers.
BAD = TINY.replace("batch_size: 2", "batch_size: 3").replace("num_workers: 1", "num_workers: 2")

pytestmark = pytest.mark.timeout(420)


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class LocalHead:
    """`ray start --head --block` on 127.0.0.1 with token auth, its own temp dir and ports."""

    def __init__(self):
        import psutil  # noqa: F401  (fail early: the teardown needs it)

        self.tmp = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))  # short: unix socket paths
        self.token = secrets.token_hex(24)
        (gcs, dash, client, agent, agent_grpc, metrics, rt_agent, node_mgr, obj_mgr) = _free_ports(9)
        self.address = f"http://127.0.0.1:{dash}"
        self.env = {
            **os.environ,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.token,
            "RAY_TMPDIR": str(self.tmp),
            "RAY_USAGE_STATS_ENABLED": "0",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # `python` of the jobs = this venv
        }
        for k in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN_PATH", "MLFLOW_TRACKING_URI"):
            self.env.pop(k, None)
        cmd = [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
               "--port", str(gcs), "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
               "--include-dashboard", "true", "--ray-client-server-port", str(client),
               "--dashboard-agent-listen-port", str(agent), "--dashboard-agent-grpc-port", str(agent_grpc),
               "--metrics-export-port", str(metrics), "--runtime-env-agent-port", str(rt_agent),
               "--node-manager-port", str(node_mgr), "--object-manager-port", str(obj_mgr),
               "--num-cpus", "2", "--num-gpus", "0", "--temp-dir", str(self.tmp), "--disable-usage-stats"]
        self.log = open(self.tmp / "ray-start.log", "w")  # noqa: SIM115 -- closed in stop()
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True, cwd=self.tmp)

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        headers = {"Authorization": f"Bearer {self.token}"}
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start exited {self.proc.returncode}:\n{self.read_log()}")
            try:
                if requests.get(f"{self.address}/api/jobs/", headers=headers, timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(1)
        raise RuntimeError(f"the head's job API did not come up in {timeout:.0f} s:\n{self.read_log()}")

    def read_log(self) -> str:
        return (self.tmp / "ray-start.log").read_text()[-4000:]

    def _own_processes(self) -> list:
        """This head's processes: the `ray start` tree, and anything naming its temp dir."""
        import psutil

        procs = {}
        try:
            root = psutil.Process(self.proc.pid)
            for p in [root, *root.children(recursive=True)]:
                procs[p.pid] = p
        except psutil.NoSuchProcess:
            pass
        marker = str(self.tmp)
        for p in psutil.process_iter(["cmdline"]):
            try:
                if p.pid != os.getpid() and any(marker in a for a in (p.info["cmdline"] or [])):
                    procs[p.pid] = p
                    for c in p.children(recursive=True):
                        procs[c.pid] = c
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        return list(procs.values())

    def stop(self) -> None:
        import psutil

        procs = self._own_processes()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # `ray start --block` shuts its node down
            try:
                self.proc.wait(timeout=8)
            except subprocess.TimeoutExpired:
                pass
        for _ in range(2):  # what survived the graceful stop, then anything started meanwhile
            for p in procs:
                try:
                    p.kill()
                except psutil.NoSuchProcess:
                    pass
            psutil.wait_procs(procs, timeout=10)
            procs = self._own_processes()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def head():
    h = LocalHead()
    try:
        h.wait_ready()
        yield h
    finally:
        h.stop()


def cli(head: LocalHead | None, *args: str, token: str | None = "head", home: Path | None = None,
        timeout: float = 240, **extra_env: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    env.update(extra_env)
    if token is not None:
        env["RAY_AUTH_TOKEN"] = head.token if token == "head" else token
    if home is not None:
        env["HOME"] = str(home)  # no ~/.ray/auth_token to fall back on
    return subprocess.run([*CLI, *args], check=False, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def test_train_job_succeeds_and_is_tracked(head, tmp_path, shared_data, new_store):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    uri = new_store(tmp_path / "mlruns" / "mlflow.db")
    t0 = time.monotonic()
    r = cli(head, "submit", "train", "--config", str(cfg), "--storage-path", str(tmp_path / "storage"),
            "--follow", "--address", head.address, "--tracking-uri", uri,
            "--env", f"INSTRUCTEDIT_DATA={shared_data}")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-6000:]
    job_id = re.search(r"submitted train job (\S+) to", out).group(1)
    assert "inputs/tiny.yaml" in out  # the local config travelled with the job
    assert re.search(rf"job {job_id}: SUCCEEDED", out), out[-3000:]
    run_id = re.search(r"MLflow run:\s+([0-9a-f]{32})", out).group(1)  # printed by the job, streamed back
    run = tracking.get_run(run_id, uri)
    assert run.info.status == "FINISHED"
    assert run.data.tags["kind"] == "train" and "val/score" in run.data.metrics
    print(f"train job: {time.monotonic() - t0:.1f} s")

    r = cli(head, "jobs", "status", job_id, "--address", head.address)
    assert r.returncode == 0 and f"{job_id}: SUCCEEDED" in r.stdout, r.stdout + r.stderr
    r = cli(head, "jobs", "list", "--address", head.address)
    assert r.returncode == 0 and job_id in r.stdout and "train" in r.stdout, r.stdout + r.stderr


def test_bad_config_job_fails_with_the_error_in_its_logs(head, tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(BAD)
    r = cli(head, "submit", "train", "--config", str(cfg), "--address", head.address)
    assert r.returncode == 0, r.stdout + r.stderr
    job_id = re.search(r"submitted train job (\S+) to", r.stdout).group(1)

    r = cli(head, "jobs", "logs", job_id, "--follow", "--address", head.address)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"job {job_id}: FAILED" in r.stdout
    r = cli(head, "jobs", "logs", job_id, "--address", head.address)
    assert "config error" in r.stdout and "must divide evenly over 2 workers" in r.stdout, r.stdout
    r = cli(head, "jobs", "status", job_id, "--address", head.address)
    assert r.returncode == 1 and "FAILED" in r.stdout


def test_wrong_or_missing_token_is_refused(head, tmp_path):
    before = cli(head, "jobs", "list", "--all", "--json", "--address", head.address).stdout
    wrong = "not-the-token-" + secrets.token_hex(4)
    r = cli(head, "submit", "prepare", "--address", head.address, token=wrong)
    assert r.returncode == 2
    assert "refused the authentication token from $RAY_AUTH_TOKEN: wrong token (403)" in r.stderr, r.stderr
    assert wrong not in r.stdout + r.stderr and "Traceback" not in r.stderr

    (tmp_path / "home").mkdir()
    for mode in ("", "token"):  # RAY_AUTH_MODE=token: Ray's own client looks for a token too, and fails
        r = cli(head, "submit", "prepare", "--address", head.address, token=None, home=tmp_path / "home",
                RAY_AUTH_MODE=mode)
        assert r.returncode == 2
        assert "requires an authentication token and none was found" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr

    after = cli(head, "jobs", "list", "--all", "--json", "--address", head.address).stdout
    assert before == after  # nothing was submitted


def test_unreachable_address_is_a_clear_error(tmp_path):
    (port,) = _free_ports(1)
    r = cli(None, "jobs", "list", "--address", f"http://127.0.0.1:{port}", token="x", timeout=60)
    assert r.returncode == 2
    assert f"cannot reach the Ray dashboard at http://127.0.0.1:{port}" in r.stderr, r.stderr
