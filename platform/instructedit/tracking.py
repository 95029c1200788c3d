"""MLflow tracking. The only module that imports mlflow.

Default store: the project's, `<home>/mlruns/mlflow.db` (sqlite; MLflow 3 refuses the plain folder
store), where <home> is $INSTRUCTEDIT_HOME, else the checkout this package runs from, else
~/.instructedit: the same store whatever the working directory. `MLFLOW_TRACKING_URI` or an
explicit uri (e.g. an http:// server on a cluster) overrides. Secrets never reach params, tags or
logged text: `redact` strips them.

Experiments are created as classic ML experiments (tag mlflow.experimentKind), and links carry
`workflowType=machine_learning`: MLflow 3's UI otherwise opens them on its GenAI overview. A
training run records its editor as a LoggedModel output, which is how MLflow 3 tells training runs
from evaluation runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import subprocess
import tempfile
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "false")
# Reports download dozens of small artifacts; a progress bar for each is noise, not progress.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import mlflow
from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository
from mlflow.tracking import MlflowClient

_SECRET_KEY = re.compile(r"(api[_-]?key|token|secret|password|passwd|authorization|credential)", re.IGNORECASE)
_SECRET_VALUE = re.compile(r"(sk-[A-Za-z0-9_\-]{8,}|Bearer\s+\S+)")


EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"  # MLflow 3's "Machine learning" experiment type
UI_VIEW = "workflowType=machine_learning"


def project_home() -> Path:
    """Where the project's default store lives: $INSTRUCTEDIT_HOME, else the checkout root (the
    folder with pyproject.toml above platform/instructedit), else ~/.instructedit."""
    env = os.environ.get("INSTRUCTEDIT_HOME")
    if env:
        return Path(env).expanduser().resolve()
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").exists():
        return checkout
    return Path.home() / ".instructedit"


def default_tracking_uri() -> str:
    return f"sqlite:///{project_home() / 'mlruns' / 'mlflow.db'}"


def resolve_tracking_uri(uri: str | None = None) -> str:
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    return uri


def configure(uri: str | None = None) -> str:
    uri = resolve_tracking_uri(uri)
    mlflow.set_tracking_uri(uri)
    return uri


def store_label(uri: str | None = None) -> str:
    """The store a run goes to, for "logged to ..." lines (secrets masked)."""
    return redact_text(resolve_tracking_uri(uri))


def logged_to(run_id: str, tracking_uri: str | None = None, experiment: str | None = None) -> str:
    """`run <id> (experiment 'x', store sqlite:///...)`: what every "logged to" line says."""
    exp = f"experiment {experiment!r}, " if experiment else ""
    return f"run {run_id} ({exp}store {store_label(tracking_uri)})"


def set_experiment(name: str):
    """The experiment `name` (created if new), tagged as a classic ML experiment unless it says
    otherwise (a kind chosen in the UI is kept)."""
    client = MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            client.create_experiment(name, artifact_location=_artifact_location(name),
                                     tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except mlflow.exceptions.MlflowException:  # created meanwhile by another process
            pass
    exp = mlflow.set_experiment(name)
    if EXPERIMENT_KIND_TAG not in (exp.tags or {}):
        MlflowClient().set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return exp


def _artifact_location(experiment: str) -> str | None:
    """Artifacts of a new experiment in a sqlite store go beside the database: MLflow would put
    them under ./mlruns of whatever directory the process happens to run in."""
    uri = mlflow.get_tracking_uri()
    if not uri.startswith("sqlite:///"):
        return None  # a server or another store decides itself
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", experiment).strip("-")[:60] or "experiment"
    digest = hashlib.sha256(experiment.encode()).hexdigest()[:8]
    return (Path(uri[len("sqlite:///"):]).resolve().parent / "artifacts" / f"{slug}-{digest}").as_uri()


def log_model_output(run_id: str, name: str, step: int = 0, params: dict[str, Any] | None = None,
                     tags: dict[str, str] | None = None) -> str:
    """Record a model trained by `run_id` as its LoggedModel output (weights stay in the run's
    artifacts): MLflow 3 files runs without a model output under "Evaluation runs"."""
    from mlflow.entities import LoggedModelOutput

    run = MlflowClient().get_run(run_id)
    model = mlflow.create_external_model(
        name=name, source_run_id=run_id, experiment_id=run.info.experiment_id, model_type="instructedit-editor",
        params={k: ("" if v is None else str(v))[:6000] for k, v in redact(params or {}).items()} or None,
        tags=redact(tags or {}) or None)
    MlflowClient().log_outputs(run_id, [LoggedModelOutput(model_id=model.model_id, step=step)])
    return model.model_id


def redact_text(text: str) -> str:
    text = _SECRET_VALUE.sub("[REDACTED]", text)
    for name, value in os.environ.items():
        if _SECRET_KEY.search(name) and value and len(value) >= 6:
            text = text.replace(value, "[REDACTED]")
    return text


def redact(params: dict[str, Any]) -> dict[str, Any]:
    """Drop secret-looking keys and mask secret-looking values."""
    out = {}
    for k, v in params.items():
        if _SECRET_KEY.search(str(k)):
            continue
        out[k] = redact_text(v) if isinstance(v, str) else v
    return out


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):  # no git, or not a checkout
        return "unknown"


@contextlib.contextmanager
def run(
    experiment: str,
    run_name: str | None = None,
    *,
    params: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
    tracking_uri: str | None = None,
    parent_run_id: str | None = None,
    run_id: str | None = None,
    system_metrics: bool = False,
) -> Iterator[str]:
    """Start (or resume, with run_id) a run; yields its id. Ends FAILED if the body raises."""
    configure(tracking_uri)
    set_experiment(experiment)
    all_tags = {"git_commit": git_commit(), **(tags or {})}
    if run_id is None:  # a resumed run keeps the command that started it
        from .provenance import command_line

        all_tags.setdefault("command", command_line())
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    active = mlflow.start_run(
        run_id=run_id, run_name=None if run_id else run_name, tags=redact(all_tags),
        log_system_metrics=system_metrics,
    )
    rid = active.info.run_id
    try:
        if params:
            log_params(params)
        yield rid
    except BaseException:
        mlflow.end_run(status="FAILED")
        raise
    else:
        mlflow.end_run(status="FINISHED")


def log_params(params: dict[str, Any], run_id: str | None = None) -> None:
    clean = {k: ("" if v is None else str(v))[:6000] for k, v in redact(params).items()}
    if run_id:
        client = MlflowClient()
        for k, v in clean.items():
            client.log_param(run_id, k, v)
    else:
        mlflow.log_params(clean)


def log_metrics(metrics: dict[str, float], step: int | None = None, run_id: str | None = None) -> None:
    clean = {k: float(v) for k, v in metrics.items() if v is not None and not math.isnan(float(v))}
    if run_id:
        client = MlflowClient()
        for k, v in clean.items():
            client.log_metric(run_id, k, v, step=step or 0)
    else:
        mlflow.log_metrics(clean, step=step)


def set_tags(tags: dict[str, str], run_id: str | None = None) -> None:
    clean = redact(tags)
    if run_id:
        client = MlflowClient()
        for k, v in clean.items():
            client.set_tag(run_id, k, v)
    else:
        mlflow.set_tags(clean)


def log_artifact(path: str | os.PathLike, artifact_path: str | None = None, run_id: str | None = None) -> None:
    if run_id:
        MlflowClient().log_artifact(run_id, str(path), artifact_path)
    else:
        mlflow.log_artifact(str(path), artifact_path)


def log_artifacts(path: str | os.PathLike, artifact_path: str | None = None, run_id: str | None = None) -> None:
    if run_id:
        MlflowClient().log_artifacts(run_id, str(path), artifact_path)
    else:
        mlflow.log_artifacts(str(path), artifact_path)


def log_text(text: str, artifact_file: str, run_id: str | None = None) -> None:
    text = redact_text(text)
    if run_id:
        MlflowClient().log_text(run_id, text, artifact_file)
    else:
        mlflow.log_text(text, artifact_file)


def set_terminated(run_id: str, status: str = "FINISHED", tracking_uri: str | None = None) -> None:
    """End a run by id (FINISHED | FAILED | KILLED), e.g. one whose process was stopped."""
    configure(tracking_uri)
    MlflowClient().set_terminated(run_id, status=status)


def end_active_run(status: str = "FINISHED") -> None:
    if mlflow.active_run() is not None:
        mlflow.end_run(status=status)


# ------------------------------------------------------------------------------------- reading
def get_run(run_id: str, tracking_uri: str | None = None):
    configure(tracking_uri)
    return MlflowClient().get_run(run_id)


def search_runs(experiment: str | list[str] | None = None, filter_string: str = "",
                tracking_uri: str | None = None):
    """Runs as a pandas DataFrame (params.*, metrics.*, tags.* columns); all experiments if None."""
    configure(tracking_uri)
    if experiment is None:
        names = None
        exp_ids = [e.experiment_id for e in MlflowClient().search_experiments()]
        return mlflow.search_runs(experiment_ids=exp_ids, filter_string=filter_string)
    names = [experiment] if isinstance(experiment, str) else experiment
    return mlflow.search_runs(experiment_names=names, filter_string=filter_string)


def list_experiments(tracking_uri: str | None = None) -> list[str]:
    configure(tracking_uri)
    return [e.name for e in MlflowClient().search_experiments()]


def metric_history(run_id: str, key: str, tracking_uri: str | None = None) -> list[tuple[int, float]]:
    configure(tracking_uri)
    return [(m.step, m.value) for m in MlflowClient().get_metric_history(run_id, key)]


def moved_artifacts(run_id: str, tracking_uri: str | None = None) -> Path | None:
    """A run's artifact folder beside its sqlite store when the store was moved or cloned.

    `_artifact_location` records absolute paths (`<store dir>/artifacts/<experiment>/<run>/artifacts`);
    a store committed to git and cloned elsewhere keeps that layout under its new folder. None when
    the recorded path exists, the store is no sqlite file, or the folder is not beside it either."""
    uri = configure(tracking_uri)
    recorded = MlflowClient().get_run(run_id).info.artifact_uri or ""
    if not uri.startswith("sqlite:///") or not recorded.startswith("file://"):
        return None
    path = Path(urllib.parse.urlparse(recorded).path)
    if path.exists() or len(path.parts) < 4 or path.parts[-4] != "artifacts":
        return None
    here = Path(uri[len("sqlite:///"):]).resolve().parent.joinpath(*path.parts[-4:])
    return here if here.exists() else None


def download_artifacts(run_id: str, artifact_path: str = "", dst: str | None = None,
                       tracking_uri: str | None = None) -> str:
    configure(tracking_uri)
    dst = dst or tempfile.mkdtemp(prefix="instructedit-artifacts-")
    moved = moved_artifacts(run_id, tracking_uri)
    if moved is not None:
        Path(dst).mkdir(parents=True, exist_ok=True)  # as mlflow.artifacts.download_artifacts does
        return LocalArtifactRepository(moved.as_uri()).download_artifacts(artifact_path, dst_path=dst)
    return mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path, dst_path=dst)


def list_artifacts(run_id: str, path: str = "", tracking_uri: str | None = None) -> list[str]:
    configure(tracking_uri)
    moved = moved_artifacts(run_id, tracking_uri)
    if moved is not None:
        return [a.path for a in LocalArtifactRepository(moved.as_uri()).list_artifacts(path or None)]
    return [a.path for a in MlflowClient().list_artifacts(run_id, path)]


def run_url(run_id: str, experiment_id: str | None = None, ui: str = "http://127.0.0.1:5000") -> str:
    exp = experiment_id or get_run(run_id).info.experiment_id
    return f"{ui}/#/experiments/{exp}/runs/{run_id}?{UI_VIEW}"


def experiment_url(experiment: str, ui: str = "http://127.0.0.1:5000", tracking_uri: str | None = None) -> str:
    """The experiment's runs view (not MLflow 3's GenAI overview); the experiments list if unknown."""
    configure(tracking_uri)
    exp = MlflowClient().get_experiment_by_name(experiment)
    if exp is None:
        return f"{ui}/#/experiments?{UI_VIEW}"
    return f"{ui}/#/experiments/{exp.experiment_id}/runs?{UI_VIEW}"


def ui_command(tracking_uri: str | None = None, port: int = 5000) -> list[str]:
    uri = resolve_tracking_uri(tracking_uri)
    return ["mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1"]
