"""`instructedit submit`: run a job (prepare, train, evaluate, ...) on a Ray cluster through its job API."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "submit a job (prepare, train, evaluate, study, ...) to a Ray cluster; --follow streams its logs"
DESCRIPTION = (
    "Submits `jobs/<JOB>.py [job args]` to the Ray cluster whose dashboard is at --address "
    "(http://HEAD:8265; default $RAY_API_SERVER_ADDRESS, else http://127.0.0.1:8265) with "
    "JobSubmissionClient. The instructedit package of this checkout travels as py_modules and local "
    "config files named in the job's arguments are shipped as inputs/<name>, so the cluster runs exactly "
    "what was submitted. The Ray auth token comes from --token-file, $RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH "
    "or ~/.ray/auth_token (never from the command line). Submit options may come before or after the job's "
    "arguments; an argument after `--` always goes to the job (e.g. train's own --address). Exit status: "
    "0 submitted (or, with --follow, SUCCEEDED), 1 the job FAILED or was STOPPED, 2 nothing was submitted "
    "(bad usage, unreachable cluster, missing or wrong token)."
)


def _jobs() -> list[str]:
    from ..cluster import JOBS

    return list(JOBS)


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", help="the cluster's dashboard, http://HEAD:8265")
    p.add_argument("--follow", action="store_true", help="stream the job's logs until it ends; exit 1 unless SUCCEEDED")
    p.add_argument("--token-file", help="file holding the Ray auth token (else $RAY_AUTH_TOKEN, "
                   "$RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token)")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="environment variable of the job (repeatable), e.g. INSTRUCTEDIT_DATA=/data")
    p.add_argument("--tracking-uri", help="MLflow store of the job (sets MLFLOW_TRACKING_URI), e.g. "
                   "http://HEAD:5000; default: the cluster's environment")
    p.add_argument("--runtime-env-json", help="extra runtime_env as JSON, merged over the default one "
                   "(env_vars merged, excludes joined)")
    p.add_argument("--working-dir", help="ship this folder as the working dir (with the default excludes) "
                   "instead of the staged jobs/ + inputs/")
    p.add_argument("--python", default="python", help="python executable of the job on the cluster")
    p.add_argument("--submission-id", help="job id (default instructedit-JOB-<time>-<random>)")
    p.add_argument("--num-gpus", type=float, default=None, help="GPUs reserved for the job's driver")
    p.add_argument("--num-cpus", type=float, default=None, help="CPUs reserved for the job's driver")
    p.add_argument("--dry-run", action="store_true", help="print the entrypoint and runtime_env, submit nothing")


def add_arguments(p: argparse.ArgumentParser) -> None:
    # One REMAINDER positional (JOB first): argparse would drop a `--` right after a separate JOB positional.
    p.add_argument("job_args", nargs=argparse.REMAINDER, metavar="JOB ...",
                   help=f"the job ({', '.join(_jobs())}) then its own arguments (those of `instructedit JOB`)")
    add_options(p)


def split_args(tokens: list[str]) -> tuple[list[str], list[str]]:
    """Pull submit's own options out of the tokens after JOB: (submit tokens, job tokens).

    Everything after a bare `--` belongs to the job."""
    probe = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    add_options(probe)
    takes_value = {}
    for action in probe._actions:
        for opt in action.option_strings:
            takes_value[opt] = action.nargs != 0
    mine, job = [], []
    i = 0
    while i < len(tokens):
        t = tokens[i]
        if t == "--":
            job.extend(tokens[i + 1:])
            break
        name = t.split("=", 1)[0]
        if name in takes_value:
            mine.append(t)
            if takes_value[name] and "=" not in t and i + 1 < len(tokens):
                mine.append(tokens[i + 1])
                i += 1
        else:
            job.append(t)
        i += 1
    return mine, job


def wants_help(tokens: list[str]) -> bool:
    """-h/--help among submit's or the job's tokens (not after a bare `--`, which belongs to the job)."""
    head = tokens[: tokens.index("--")] if "--" in tokens else tokens
    return any(t in ("-h", "--help") for t in head)


def print_help(job: str | None) -> None:
    """submit's help, then the job's own (`instructedit JOB --help`): a help request never submits."""
    from ..cli import build_parser

    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    subs["submit"].print_help()
    if job in subs:
        print(f"\nThe job's own arguments (instructedit {job}):\n")
        subs[job].print_help()


def _merge(args: argparse.Namespace) -> argparse.Namespace:
    from ..cluster import ClusterError

    tokens = list(args.job_args or [])
    if tokens[:1] == ["--"]:
        tokens = tokens[1:]
    if not tokens or tokens[0].startswith("-"):
        raise ClusterError(f"give the JOB first, one of: {', '.join(_jobs())}")
    args.job = tokens[0]
    if args.job not in _jobs():
        raise ClusterError(f"unknown job {args.job!r}: choose one of {', '.join(_jobs())}")
    mine, job_args = split_args(tokens[1:])
    if mine:
        probe = argparse.ArgumentParser(prog="instructedit submit", allow_abbrev=False)
        add_options(probe)
        late = probe.parse_args(mine)
        defaults = probe.parse_args([])
        for k, v in vars(late).items():
            if v != getattr(defaults, k):
                if isinstance(v, list):
                    v = list(getattr(args, k) or []) + v
                setattr(args, k, v)
    args.job_args = job_args
    return args


def run(args: argparse.Namespace) -> int:
    from .. import cluster

    raw = list(args.job_args or [])
    if wants_help(raw):
        print_help(raw[0] if raw and not raw[0].startswith("-") else None)
        return 0
    try:
        args = _merge(args)
        env = cluster.parse_env(args.env)
        if args.tracking_uri:
            env["MLFLOW_TRACKING_URI"] = args.tracking_uri
        sub = cluster.build_submission(args.job, args.job_args, env_vars=env,
                                       runtime_env_json=args.runtime_env_json, working_dir=args.working_dir,
                                       python=args.python, submission_id=args.submission_id)
        if args.dry_run:
            sub.cleanup()
            print(json.dumps({"submission_id": sub.submission_id, "entrypoint": sub.entrypoint,
                              "runtime_env": sub.runtime_env, "shipped": sub.shipped}, indent=2))
            return 0
        try:
            jobs = cluster.connect(args.address, args.token_file)
        except BaseException:
            sub.cleanup()
            raise
        job_id = cluster.submit(jobs, sub, num_gpus=args.num_gpus, num_cpus=args.num_cpus)
    except cluster.ClusterError as e:
        print(f"instructedit submit: error: {e}", file=sys.stderr)
        return 2
    where = f" --address {jobs.address}"
    print(f"submitted {args.job} job {job_id} to {jobs.address}: {sub.entrypoint}", flush=True)
    for local, remote in sub.shipped.items():
        print(f"  shipped {local} as {remote}")
    if not args.follow:
        print(f"follow it: instructedit jobs logs {job_id} --follow{where}")
        return 0
    try:
        status = jobs.follow(job_id)
    except KeyboardInterrupt:
        print(f"\nstopped following; the job keeps running. Stop it: instructedit jobs stop {job_id}{where}",
              file=sys.stderr)
        return 130
    except cluster.ClusterError as e:
        print(f"instructedit submit: error: {e}", file=sys.stderr)
        return 2
    return report_end(jobs, job_id, status)


def report_end(jobs, job_id: str, status: str) -> int:
    from .. import cluster

    try:
        message = (jobs.info(job_id).message or "").strip().splitlines()[0:1]
        message = message[0].rstrip(":, ") if message else ""  # the rest repeats the logs
    except cluster.ClusterError:
        message = ""
    print(f"\njob {job_id}: {status}" + (f" ({message})" if message and status != "SUCCEEDED" else ""),
          flush=True)
    return 0 if status == "SUCCEEDED" else 1
