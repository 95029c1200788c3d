"""Ray cluster job submission: what `instructedit submit` and `instructedit jobs` do.

A job is one of the `jobs/<name>.py` entry points run as a Ray job through the dashboard's job API
(`JobSubmissionClient`, http://HEAD:8265). The code travels with the job: `py_modules` ships the
`instructedit` package (and `analysis`) from this checkout, and a small staged `working_dir` holds
`jobs/` plus any local config files named in the job's arguments (rewritten to `inputs/<name>`), so
the cluster runs exactly the code and config that were submitted.

Authentication: Ray token authentication (RAY_AUTH_MODE=token on the cluster). The token is read,
in this order, from --token-file, $RAY_AUTH_TOKEN, the file named by $RAY_AUTH_TOKEN_PATH, and
~/.ray/auth_token (Ray's own precedence, with the explicit file first), and sent as an
`Authorization: Bearer` header. It is never accepted on the command line, printed or shipped.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parents[1]  # platform/instructedit -> repo root (an editable checkout)
DEFAULT_ADDRESS = "http://127.0.0.1:8265"

# JOB name -> (entry point under jobs/, the `instructedit` subcommand it wraps).
JOBS: dict[str, tuple[str, str]] = {
    "prepare": ("jobs/prepare.py", "prepare"),
    "train": ("jobs/train_editor.py", "train"),
    "evaluate": ("jobs/evaluate.py", "evaluate"),
    "study": ("jobs/study.py", "study"),
    "optimize-instructions": ("jobs/optimize_instructions.py", "optimize-instructions"),
    "report": ("jobs/report.py", "report"),
    "edit": ("jobs/edit.py", "edit"),
}

# Never uploaded: environments, outputs, VCS data and caches (Ray caps a package at 512 MiB, and
# outputs belong in MLflow or on shared storage, not in a job's code package).
EXCLUDES = [
    ".venv", "venv", ".git", "mlruns", "runs", "results", "prepared", "evals", "reports", "out",
    "outputs", "checkpoints", "__pycache__", "*.pyc", ".pytest_cache", ".ruff_cache", ".mypy_cache",
    "*.egg-info", "build", "dist", ".ipynb_checkpoints", "*.parquet", "*.pt", "*.safetensors", "*.db",
]

# Arguments whose value is a local file to ship with the job (small text inputs only).
SHIPPABLE_SUFFIXES = {".yaml", ".yml", ".json", ".jsonl", ".txt"}
MAX_SHIPPED_FILE = 10 * 2**20

TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}

TOKEN_HELP = (
    "give the cluster's token through $RAY_AUTH_TOKEN, a file named by $RAY_AUTH_TOKEN_PATH or "
    "--token-file, or ~/.ray/auth_token (on the head: `ray get-auth-token`)"
)


class ClusterError(RuntimeError):
    """The cluster could not be reached, refused us, or the submission is malformed."""


# ------------------------------------------------------------------------------------------ token
@dataclass(frozen=True)
class Token:
    value: str = field(repr=False)
    source: str  # where it came from, for messages (never the value)


def resolve_token(token_file: str | os.PathLike | None = None, env: dict[str, str] | None = None) -> Token | None:
    """The auth token: --token-file, $RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token; None if none."""
    env = os.environ if env is None else env

    def read(path: Path, what: str) -> Token:
        try:
            value = path.expanduser().read_text().strip()
        except OSError as e:
            raise ClusterError(f"cannot read the Ray auth token file {path} ({what}): {e.strerror}") from None
        if not value:
            raise ClusterError(f"the Ray auth token file {path} ({what}) is empty")
        return Token(value, f"{what} {path}")

    if token_file:
        return read(Path(token_file), "--token-file")
    if env.get("RAY_AUTH_TOKEN", "").strip():
        return Token(env["RAY_AUTH_TOKEN"].strip(), "$RAY_AUTH_TOKEN")
    if env.get("RAY_AUTH_TOKEN_PATH"):
        return read(Path(env["RAY_AUTH_TOKEN_PATH"]), "$RAY_AUTH_TOKEN_PATH")
    home = env.get("HOME")
    default = (Path(home) if home else Path.home()) / ".ray" / "auth_token"
    if default.is_file():
        return read(default, "default token file")
    return None


# ----------------------------------------------------------------------------------------- client
def resolve_address(address: str | None) -> str:
    """--address, else $RAY_API_SERVER_ADDRESS, else an http $RAY_ADDRESS, else http://127.0.0.1:8265."""
    addr = address or os.environ.get("RAY_API_SERVER_ADDRESS") or ""
    if not addr and os.environ.get("RAY_ADDRESS", "").startswith(("http://", "https://")):
        addr = os.environ["RAY_ADDRESS"]
    addr = (addr or DEFAULT_ADDRESS).rstrip("/")
    if addr.startswith("ray://") or addr == "auto":
        raise ClusterError(f"--address must be the dashboard's http://HOST:8265 address, not {addr!r}")
    if not re.match(r"^https?://", addr):
        addr = "http://" + addr
    return addr


def _auth_error(e: Exception, address: str, token: Token | None) -> ClusterError:
    text = str(e)
    if token is None:  # the server said 401, or Ray's own client (RAY_AUTH_MODE=token) found no token either
        return ClusterError(f"the Ray cluster at {address} requires an authentication token and none was "
                            f"found: {TOKEN_HELP}")
    if "401" in text or "Missing" in text or "Authentication required" in text:
        return ClusterError(f"the Ray cluster at {address} did not accept the token from {token.source} "
                            f"(401: missing token)")
    return ClusterError(f"the Ray cluster at {address} refused the authentication token from "
                        f"{token.source}: wrong token (403). {TOKEN_HELP[0].upper()}{TOKEN_HELP[1:]}")


def _call(fn: Callable[[], Any], address: str, token: Token | None) -> Any:
    """Run one client call, turning connection and auth failures into clear ClusterErrors."""
    import requests
    from ray.exceptions import AuthenticationError

    try:
        return fn()
    except AuthenticationError as e:
        raise _auth_error(e, address, token) from None
    except (ConnectionError, requests.exceptions.ConnectionError) as e:
        raise ClusterError(f"cannot reach the Ray dashboard at {address}: {e.__class__.__name__}. Is the "
                           "cluster up and the dashboard port reachable? (for a cloud cluster: "
                           "`ray dashboard cluster.yaml` forwards it to 127.0.0.1:8265)") from None
    except requests.exceptions.Timeout:
        raise ClusterError(f"the Ray dashboard at {address} did not answer in time") from None


def connect(address: str | None = None, token_file: str | None = None):
    """A JobSubmissionClient for the cluster, authenticated when a token is available."""
    from ray.job_submission import JobSubmissionClient

    addr = resolve_address(address)
    token = resolve_token(token_file)
    headers = {"Authorization": f"Bearer {token.value}"} if token else {}
    client = _call(lambda: JobSubmissionClient(addr, headers=headers), addr, token)
    return Jobs(client, addr, token)


class Jobs:
    """The job API calls the commands use, each with clear errors."""

    def __init__(self, client, address: str, token: Token | None):
        self.client, self.address, self.token = client, address, token

    def _c(self, fn):
        try:
            return _call(fn, self.address, self.token)
        except RuntimeError as e:  # the SDK's "Request failed with status code 404: ..." and friends
            if isinstance(e, ClusterError):
                raise
            msg = str(e)
            if "404" in msg or "does not exist" in msg:
                raise ClusterError(f"no such job on {self.address}: {msg}") from None
            raise ClusterError(f"the job API at {self.address} failed: {msg}") from None

    def submit(self, retry_s: float = 60.0, **kw) -> str:
        # A head that has just started may not have its job agent yet: the API answers 500 for a while.
        deadline = time.monotonic() + retry_s
        while True:
            try:
                return self._c(lambda: self.client.submit_job(**kw))
            except ClusterError as e:
                if "No available agent" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(2)

    def status(self, job_id: str) -> str:
        return str(self._c(lambda: self.client.get_job_status(job_id)).value)

    def info(self, job_id: str):
        return self._c(lambda: self.client.get_job_info(job_id))

    def list(self) -> list:
        return self._c(lambda: self.client.list_jobs())

    def logs(self, job_id: str) -> str:
        return self._c(lambda: self.client.get_job_logs(job_id))

    def stop(self, job_id: str) -> bool:
        return bool(self._c(lambda: self.client.stop_job(job_id)))

    def follow(self, job_id: str, write: Callable[[str], None] | None = None, poll_s: float = 1.0,
               timeout_s: float | None = None) -> str:
        """Stream the job's logs until it ends; return its final status."""
        write = write or (lambda s: (sys.stdout.write(s), sys.stdout.flush()))

        async def tail() -> None:
            async for chunk in self.client.tail_job_logs(job_id):
                write(chunk)

        from ray.exceptions import AuthenticationError

        start = time.monotonic()
        try:
            asyncio.run(tail())
        except AuthenticationError as e:
            raise _auth_error(e, self.address, self.token) from None
        except Exception as e:  # noqa: BLE001 -- any stream failure: poll the status instead
            write(f"[instructedit] log stream interrupted ({e.__class__.__name__}: {e}); polling the job status\n")
        while True:
            status = self.status(job_id)
            if status in TERMINAL:
                return status
            if timeout_s is not None and time.monotonic() - start > timeout_s:
                return status
            time.sleep(poll_s)


# ------------------------------------------------------------------------------------- submission
@dataclass
class Submission:
    entrypoint: str
    runtime_env: dict[str, Any]
    submission_id: str
    metadata: dict[str, str]
    shipped: dict[str, str]  # local file -> path in the job's working dir
    staging: Path | None = None  # temp dir to remove once submitted

    def cleanup(self) -> None:
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)


def _file_arg(value: str) -> Path | None:
    p = Path(value).expanduser()
    try:
        if p.suffix.lower() in SHIPPABLE_SUFFIXES and p.is_file():
            return p
    except OSError:
        return None
    return None


def rewrite_file_args(args: list[str], place: Callable[[Path], str]) -> list[str]:
    """Replace every argument (or --opt=VALUE) naming an existing local config-like file by place(file)."""
    out = []
    for a in args:
        if a.startswith("-") and "=" in a:
            opt, value = a.split("=", 1)
            p = _file_arg(value)
            out.append(f"{opt}={place(p)}" if p else a)
        else:
            p = None if a.startswith("-") else _file_arg(a)
            out.append(place(p) if p else a)
    return out


def parse_env(items: Iterable[str]) -> dict[str, str]:
    env = {}
    for item in items:
        if "=" not in item or not item.split("=", 1)[0]:
            raise ClusterError(f"--env {item!r} must look like NAME=VALUE")
        k, v = item.split("=", 1)
        env[k] = v
    return env


def merge_runtime_env(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """extra wins, except env_vars (merged) and excludes (joined)."""
    out = dict(base)
    for k, v in extra.items():
        if k == "env_vars" and isinstance(v, dict):
            out["env_vars"] = {**base.get("env_vars", {}), **v}
        elif k == "excludes" and isinstance(v, list):
            out["excludes"] = list(dict.fromkeys(base.get("excludes", []) + v))
        else:
            out[k] = v
    return out


def build_submission(
    job: str,
    job_args: list[str],
    *,
    env_vars: dict[str, str] | None = None,
    runtime_env_json: str | None = None,
    working_dir: str | None = None,
    python: str = "python",
    submission_id: str | None = None,
    repo_root: Path = REPO_ROOT,
) -> Submission:
    """The entrypoint and runtime_env of one job (nothing is sent)."""
    if job not in JOBS:
        raise ClusterError(f"unknown job {job!r}: choose one of {', '.join(JOBS)}")
    script, command = JOBS[job]
    user_env: dict[str, Any] = {}
    if runtime_env_json:
        try:
            user_env = json.loads(runtime_env_json)
        except json.JSONDecodeError as e:
            raise ClusterError(f"--runtime-env-json is not valid JSON: {e}") from None
        if not isinstance(user_env, dict):
            raise ClusterError("--runtime-env-json must be a JSON object")

    shipped: dict[str, str] = {}
    staging: Path | None = None
    if working_dir:
        wd = Path(working_dir).resolve()
        if not wd.is_dir():
            raise ClusterError(f"--working-dir {working_dir}: not a directory")

        def place(p: Path) -> str:
            rp = p.resolve()
            if not rp.is_relative_to(wd):
                raise ClusterError(f"{p} is outside --working-dir {wd}: move it inside, or submit without "
                                   "--working-dir so it is shipped as inputs/")
            shipped[str(p)] = str(rp.relative_to(wd))
            return shipped[str(p)]

        args = rewrite_file_args(job_args, place)
        run_script = script if (wd / script).is_file() else None
    else:
        staging = Path(tempfile.mkdtemp(prefix="instructedit-job-"))
        src_script = repo_root / script
        run_script = None
        if src_script.is_file():
            (staging / "jobs").mkdir()
            shutil.copy2(src_script, staging / script)
            run_script = script
        used: set[str] = set()

        def place(p: Path) -> str:
            key = str(p.resolve())
            if key in shipped:
                return shipped[key]
            if p.stat().st_size > MAX_SHIPPED_FILE:
                raise ClusterError(f"{p} is larger than {MAX_SHIPPED_FILE >> 20} MiB: put it on shared storage")
            name, n = p.name, 1
            while name in used:
                n += 1
                name = f"{p.stem}-{n}{p.suffix}"
            used.add(name)
            (staging / "inputs").mkdir(exist_ok=True)
            shutil.copy2(p, staging / "inputs" / name)
            shipped[key] = f"inputs/{name}"
            return shipped[key]

        try:
            args = rewrite_file_args(job_args, place)
        except Exception:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        wd = staging

    # The job runs the jobs/ entry point when this checkout has it, else the same command by module.
    head = [python, run_script] if run_script else [python, "-m", "instructedit", command]
    entrypoint = shlex.join(head + args)
    runtime_env: dict[str, Any] = {
        "working_dir": str(wd),
        "py_modules": [str(PACKAGE_DIR)] + ([str(repo_root / "analysis")] if (repo_root / "analysis" / "__init__.py").exists() else []),
        "excludes": list(EXCLUDES),
        "env_vars": {"PYTHONUNBUFFERED": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
                     "RAY_USAGE_STATS_ENABLED": "0", **(env_vars or {})},
    }
    runtime_env = merge_runtime_env(runtime_env, user_env)
    for k, v in runtime_env.get("env_vars", {}).items():
        problem = (f"runtime_env env_vars must be strings: {k}={v!r}" if not isinstance(v, str) else
                   f"do not ship {k} in the job's environment: the cluster has its own token"
                   if k in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH") else "")
        if problem:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
            raise ClusterError(problem)
    sid = submission_id or f"instructedit-{job}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    metadata = {"instructedit_job": job, "instructedit_args": shlex.join(job_args)[:1000]}
    return Submission(entrypoint, runtime_env, sid, metadata, shipped, staging)


def submit(jobs: Jobs, sub: Submission, *, num_gpus: float | None = None, num_cpus: float | None = None) -> str:
    try:
        return jobs.submit(entrypoint=sub.entrypoint, runtime_env=sub.runtime_env, submission_id=sub.submission_id,
                           metadata=sub.metadata, entrypoint_num_gpus=num_gpus, entrypoint_num_cpus=num_cpus)
    finally:
        sub.cleanup()


def describe(info) -> dict[str, Any]:
    """A JSON-able summary of a JobDetails/JobInfo."""
    def ts(ms):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000)) if ms else ""

    status = getattr(info.status, "value", info.status)
    return {
        "id": getattr(info, "submission_id", None) or getattr(info, "job_id", None) or "",
        "status": str(status),
        "job": (info.metadata or {}).get("instructedit_job", ""),
        "start": ts(info.start_time),
        "end": ts(info.end_time),
        "entrypoint": info.entrypoint,
        "message": info.message or "",
    }
