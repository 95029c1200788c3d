"""The `instructedit` command. Each subcommand is a module with `HELP`, `add_arguments(parser)`
and `run(args) -> int`: the platform's own in commands/<name>.py, others named by the entry-point
group `instructedit.commands` (pyproject.toml; `report` and `analyze` come from the top-level
`analysis` package this way, the layer above the platform, which never imports it). This file only
dispatches. A command whose module fails to load is still listed; running it says why in one line.

Exit codes, the same for every command: 0 done; 2 bad input or config (a usage error, a missing
or malformed file, a checkpoint that is not an editor's, a bad request, a plugin command that
failed to load), said in one line naming the file and what is wrong; 1 a run that started and failed (a training, a job, a writer);
130 interrupted.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import sys

# Order = order in --help; a name here may be a plugin's (the entry-point group). Plugins the list
# does not name come after it, alphabetically.
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
PLUGIN_GROUP = "instructedit.commands"

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


@functools.lru_cache(maxsize=1)  # every command's lookup and the --help listing read it: scan once
def _plugins() -> dict:
    """{command name: entry point} of the installed plugins (one per name: an editable install can
    show the same distribution twice)."""
    from importlib.metadata import entry_points

    found: dict = {}
    for ep in entry_points(group=PLUGIN_GROUP):
        found.setdefault(ep.name.replace("-", "_"), ep)
    return found


class _Broken:
    """Stands in for a plugin command that cannot be loaded: listed in --help, exit 2 when run."""

    def __init__(self, name: str, target: str, error: BaseException):
        why = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}".rstrip(": ")
        self.message = f"its module {target} (entry point group {PLUGIN_GROUP}) failed to load: {why}"
        self.HELP = f"unavailable: {self.message}"
        self.name = name

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.set_defaults(_any_arguments=True)  # its real options are unknown: `run` says why in one line

    def run(self, args) -> int:
        print(f"instructedit {self.name.replace('_', '-')}: {self.message}", file=sys.stderr)
        return 2


def _load(name: str):
    try:
        return importlib.import_module(f"instructedit.commands.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"instructedit.commands.{name}":
            raise
    ep = _plugins().get(name)
    if ep is None:
        return None  # not built here and not installed as a plugin
    try:
        mod = ep.load()
        missing = [a for a in ("HELP", "add_arguments", "run") if not hasattr(mod, a)]
        if missing:
            raise AttributeError(f"no {', '.join(missing)}")
    except Exception as e:  # noqa: BLE001 - a broken plugin must not take the other commands down
        return _Broken(name, ep.value, e)
    return mod


def command_names() -> list[str]:
    """COMMANDS, then the plugins it does not name."""
    return COMMANDS + sorted(set(_plugins()) - set(COMMANDS))


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
    for name in command_names():
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
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "_any_arguments", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")  # what parse_args says
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
