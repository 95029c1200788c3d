"""The one place Ray is started or joined, and where Ray's and MLflow's chatter goes.

Every command that starts Ray (prepare, train, study, evaluate with workers, the demo, the
instruction optimiser) goes through `init_ray`. Quiet by default:

- Worker and actor output (Ray Train controllers, the placement-group cleaner, Ray Data executors,
  the workers' own warnings) is streamed to the driver as usual (`log_to_driver`), but the driver
  writes it to a log file instead of the terminal; only the platform's own progress lines (rank 0's
  `[train]` / `[val]`, `[trial ...]`, `[eval]`, ...) are echoed to the terminal.
- Driver-side library loggers (ray, ray.data, ray.train, ray.tune, mlflow, alembic, ...) and Python
  warnings go to the same file; records at ERROR and above still reach the terminal.
- Ray Train V2's print patch is off: it logs every `print` of a worker a second time.

`setup_logging` (called where a command starts) names the file and prints where it is; `verbose=True`
leaves Ray's and MLflow's own console output as it is.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

# Lines of worker output that are the platform's own progress (echoed to the terminal when quiet).
PROGRESS_PREFIXES = ("[train]", "[val]", "[trial", "[study", "[eval]", "[optimize]", "[score]", "[prepare]")
# Loggers whose records go to the log file when quiet (children propagate to these).
LIBRARY_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune", "mlflow", "alembic", "huey", "sqlalchemy",
                   "transformers", "py.warnings", "filelock", "urllib3")
_ROUTER = "instructedit_route_logs"
# Ray's system config `worker_niceness` (default 15), read from the environment by every Ray process.
WORKER_NICENESS_ENV = "RAY_worker_niceness"
LOCAL_WORKER_NICENESS = "0"  # a local Ray's workers run at the driver's priority (init_ray)

_lock = threading.Lock()
_state: dict[str, Any] = {"path": None, "verbose": None, "file": None, "handler": None}


def log_file() -> Path | None:
    """The current log file (None before `setup_logging`, or when verbose)."""
    return _state["path"]


def log_stream():
    """The open log file (for output a caller wants kept but not shown), None when verbose."""
    return _state["file"]


def is_verbose() -> bool:
    return bool(_state["verbose"])


def _quiet_env() -> None:
    """Environment for quiet runs: read by MLflow and transformers at import, by Ray at start (and
    inherited by a local Ray's workers)."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def setup_logging(label: str, log_dir: str | os.PathLike | None = None, verbose: bool = False,
                  announce: str | None = None) -> Path | None:
    """Quiet (default): route library output to `<log_dir>/logs/<label>-<time>.log` (log_dir
    default `runs`) and print that path once; return it. Verbose: change nothing, return None.

    Idempotent within a process: a second call returns the first call's file.
    """
    # Ray Train V2 re-logs every print of a worker through the root logger (a second copy of each
    # progress line); it is propagated to the controller and workers from this environment.
    os.environ["RAY_TRAIN_ENABLE_PRINT_PATCH"] = "0"
    with _lock:
        if _state["verbose"] is not None:
            return _state["path"]
        _state["verbose"] = bool(verbose)
        if verbose:
            return None
        _quiet_env()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = Path(log_dir or "runs") / "logs" / f"{label}-{stamp}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        # Open for the life of the process, line-buffered so the file is readable while it runs.
        fh = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
        handler = logging.StreamHandler(fh)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        _state.update(path=path, file=fh, handler=handler)
    _route_loggers()
    print(f"[{announce or label}] Ray/MLflow logs -> {_shown(path)}", file=sys.stderr, flush=True)
    return path


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path.resolve())


def _route_loggers() -> None:
    """Library loggers -> the log file, plus the terminal for ERROR and above. Re-applied after
    `import ray` / `ray.init`, which install their own handlers."""
    handler = _state["handler"]
    if handler is None:
        return
    logging.captureWarnings(True)  # warnings.warn -> the `py.warnings` logger
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.ERROR)
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    for name in LIBRARY_LOGGERS:
        lg = logging.getLogger(name)
        lg.handlers = [handler, console]
        lg.propagate = False  # levels stay as the libraries set them: only where records go changes


def _write_worker_lines(data: dict) -> None:
    """Driver-side sink for worker output: everything to the log file, progress lines also to the
    terminal (without Ray's `(Actor pid=...)` prefix)."""
    fh = _state["file"]
    who = data.get("actor_name") or data.get("task_name") or "worker"
    prefix = f"({who} pid={data.get('pid')}) "
    echo = []
    for line in data.get("lines") or []:
        if fh is not None:
            fh.write(prefix + line + "\n")
        if line.startswith(PROGRESS_PREFIXES):
            echo.append(line)
    if echo:
        print("\n".join(echo), file=sys.stderr, flush=True)


def _install_router() -> bool:
    """Replace Ray's printer of worker output with `_write_worker_lines` (Ray's dispatcher is
    internal: if it is missing, worker output stays hidden in Ray's session logs instead)."""
    try:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
    except ImportError:
        return False
    dispatcher.remove_handler("ray_print_logs")
    dispatcher.remove_handler(_ROUTER)
    dispatcher.add_handler(_ROUTER, _write_worker_lines)
    return True


def init_ray(address: str | None = None, num_cpus: int | None = None, *, log_to_driver: bool = True,
             verbose: bool | None = None) -> bool:
    """Join `address` (or $RAY_ADDRESS, e.g. inside a submitted job), else start a local Ray.

    Returns True when this call started or joined Ray (the caller may shut it down), False when Ray
    was already initialised. `log_to_driver=False` hides worker output entirely; `verbose` (default:
    as `setup_logging` was told; quiet when it was never called) shows Ray's own output. A local
    Ray's workers run at nice 0, not Ray's 15 ($RAY_worker_niceness, when set, wins).
    """
    import ray

    if ray.is_initialized():
        return False
    if verbose is None:
        verbose = is_verbose() if _state["verbose"] is not None else False
    if not verbose and _state["verbose"] is None:
        setup_logging("ray")
    os.environ["RAY_TRAIN_ENABLE_PRINT_PATCH"] = "0"
    quiet = not verbose and _state["handler"] is not None
    _route_loggers()  # `import ray` configured the `ray` logger: the start-up notices go to the file
    address = address or os.environ.get("RAY_ADDRESS")
    kwargs: dict[str, Any] = {"log_to_driver": log_to_driver}
    if quiet:
        kwargs["configure_logging"] = False
    # With configure_logging=False, ray.init clears the `ray` logger's handlers, so its start-up
    # notices (the token-auth one among them) fall through to logging.lastResort: point that at the
    # log file for the duration.
    last_resort = logging.lastResort
    if quiet:
        logging.lastResort = _state["handler"]
    try:
        if address:
            # A cluster's workers keep the niceness its operators gave them (RAY_worker_niceness there).
            ray.init(address=address, **kwargs)
        else:
            # Ray nices every worker process (Ray Train workers included) to 15, below its own nice-0
            # daemons (raylet, GCS, agents, log monitor, this driver). A local Ray shares this
            # machine's few cores with them: SmolLM2 training on 2 cores, the worker's two compute
            # threads were preempted 500-700 times a second each (every Ray process wakes at 100 Hz),
            # 25-40% of their slices under 0.5 ms, and both ran together only 78% of the time
            # (docs/performance.md, the training step). Inherited by the raylet and the workers it
            # starts; a value already set wins.
            os.environ.setdefault(WORKER_NICENESS_ENV, LOCAL_WORKER_NICENESS)
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **kwargs)
    finally:
        logging.lastResort = last_resort
    if quiet:
        _route_loggers()
        import ray.data

        _route_loggers()  # ray.data configures its logger at import
        ray.data.DataContext.get_current().enable_progress_bars = False
        if log_to_driver and not _install_router():
            print("[ray] worker output is in Ray's session logs (no log router in this Ray version)",
                  file=sys.stderr, flush=True)
    return True
