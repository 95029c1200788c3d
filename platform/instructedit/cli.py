"""The `instructedit` command. Each subcommand lives in commands/<name>.py with
`HELP`, `add_arguments(parser)` and `run(args) -> int`; this file only dispatches.

Exit codes, the same for every command: 0 done; 2 bad input or config (a usage error, a missing
or malformed file, a checkpoint that is not an editor's, a bad request), said in one line naming
the file and what is wrong; 1 a run that started and failed (a training, a job, a writer);
130 interrupted.
"""

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

# Bad input, by the module that defines it: an exception can only be one of these if its module
# was imported, so the check needs no import (and `instructedit --help` stays free of torch).
INPUT_ERRORS = {
    "instructedit.config": ("ConfigError",),
    "instructedit.editor.checkpoint": ("CheckpointError",),
    "instructedit.editor.mend": ("CheckpointMismatch",),
    "instructedit.api": ("RequestError",),
    "instructedit.data.readers": ("DataError",),
    "instructedit.data.corpora": ("CorpusNotFoundError",),
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default once: not when the help text already says one, and not when there is none
    to show (None, False, an empty string or list)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        empty = default is None or default is False or default is argparse.SUPPRESS or (
            isinstance(default, (str, list, tuple)) and not default)
        if empty or "default" in text.lower() or "%(default)" in text:
            return text
        return super()._get_help_string(action)


def _load(name: str):
    try:
        return importlib.import_module(f"instructedit.commands.{name}")
    except ModuleNotFoundError as e:
        if e.name == f"instructedit.commands.{name}":
            return None  # not built yet
        raise


def _nested_parsers(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield sub
                yield from _nested_parsers(sub)


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
            formatter_class=HelpFormatter,
        )
        mod.add_arguments(p)
        for nested in _nested_parsers(p):  # e.g. `analyze gradients`: the same one-default help
            nested.formatter_class = HelpFormatter
        p.set_defaults(_run=mod.run)
    return parser


def input_error(e: BaseException) -> bool:
    """Is `e` bad input (exit 2) rather than a failed run?"""
    for module, names in INPUT_ERRORS.items():
        mod = sys.modules.get(module)
        for name in names:
            cls = getattr(mod, name, None) if mod else None
            if isinstance(cls, type) and isinstance(e, cls):
                return True
    return False


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print(f"instructedit {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if not input_error(e):
            raise  # a failed run: the traceback is the report (exit status 1)
        from .config import ConfigError

        kind = "config error" if isinstance(e, ConfigError) else "error"
        print(f"instructedit {args.command}: {kind}: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
