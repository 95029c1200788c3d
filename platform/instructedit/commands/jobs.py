"""`instructedit jobs`: list, inspect, read the logs of and stop jobs on a Ray cluster."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "list the jobs of a Ray cluster, show one's status or logs, stop one"
DESCRIPTION = (
    "list: every job on the cluster (id, status, instructedit job, start, end); status ID: its status "
    "and message; logs ID [--follow]: its logs (--follow streams them until the job ends); stop ID: "
    "stop it. --address is the dashboard, http://HEAD:8265 (default $RAY_API_SERVER_ADDRESS, else "
    "http://127.0.0.1:8265); the auth token comes from --token-file, $RAY_AUTH_TOKEN, "
    "$RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token. Exit status 2 when the cluster cannot be reached or "
    "refuses the token, or the job does not exist; `status` and `logs --follow` exit 1 for a FAILED or "
    "STOPPED job."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("list", "status", "logs", "stop"),
                   help="list the jobs, or a job's status, logs, or stop it")
    p.add_argument("job_id", nargs="?", metavar="ID", help="job (submission) id; not for list")
    p.add_argument("--address", help="the cluster's dashboard, http://HEAD:8265")
    p.add_argument("--token-file", help="file holding the Ray auth token")
    p.add_argument("--follow", action="store_true", help="logs: stream until the job ends")
    p.add_argument("--json", action="store_true", help="list/status: print JSON")
    p.add_argument("--all", action="store_true", help="list: include jobs not submitted by instructedit")


def _table(rows: list[dict]) -> str:
    cols = ["id", "status", "job", "start", "end"]
    widths = {c: max([len(c)] + [len(str(r[c])) for r in rows]) for c in cols}
    lines = ["  ".join(c.upper().ljust(widths[c]) for c in cols)]
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from .. import cluster
    from .submit import report_end

    if args.action != "list" and not args.job_id:
        print(f"instructedit jobs {args.action}: give the job ID", file=sys.stderr)
        return 2
    try:
        jobs = cluster.connect(args.address, args.token_file)
        if args.action == "list":
            rows = [cluster.describe(j) for j in jobs.list()]
            if not args.all:
                rows = [r for r in rows if r["job"] or r["id"].startswith("instructedit-")]
            rows.sort(key=lambda r: r["start"])
            print(json.dumps(rows, indent=2) if args.json else (_table(rows) if rows else "no jobs"))
            return 0
        if args.action == "status":
            row = cluster.describe(jobs.info(args.job_id))
            if args.json:
                print(json.dumps(row, indent=2))
            else:
                print(f"{row['id']}: {row['status']}" + (f" ({row['message']})" if row["message"] else ""))
            return 1 if row["status"] in ("FAILED", "STOPPED") else 0
        if args.action == "logs":
            if not args.follow:
                sys.stdout.write(jobs.logs(args.job_id))
                return 0
            jobs.status(args.job_id)  # a clear error for an unknown id before streaming
            return report_end(jobs, args.job_id, jobs.follow(args.job_id))
        stopped = jobs.stop(args.job_id)
        print(f"{args.job_id}: " + ("stop requested" if stopped else f"not running ({jobs.status(args.job_id)})"))
        return 0
    except cluster.ClusterError as e:
        print(f"instructedit jobs {args.action}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nstopped following; the job keeps running (instructedit jobs stop {args.job_id})", file=sys.stderr)
        return 130
