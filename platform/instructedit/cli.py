"""The `instructedit` command. Each subcommand lives in commands/<name>.py with
`HELP`, `add_arguments(parser)` and `run(args) -> int`; this file only dispatches."""

from __future__ import annotations

import argparse
import importlib
import sys

# Order = order in --help.
COMMANDS = [
    "prepare",
    "train",
    "evaluate",
    "study",
    "optimize_instructions",
    "edit",
    "analyze",
    "report",
    "submit",
    "jobs",
    "ui",
]


def _load(name: str):
    try:
        return importlib.import_module(f"instructedit.commands.{name}")
    except ModuleNotFoundError as e:
        if e.name == f"instructedit.commands.{name}":
            return None  # not built yet
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="instructedit",
        description="Instruction-based knowledge editing on Ray: prepare corpora, train one MEND-style "
        "editor over several tasks, evaluate, run studies, apply editors, report.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        mod = _load(name)
        if mod is None:
            continue
        p = sub.add_parser(
            name.replace("_", "-"), help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP),
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    from .config import ConfigError

    try:
        return int(args._run(args) or 0)
    except ConfigError as e:
        print(f"instructedit {args.command}: config error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
