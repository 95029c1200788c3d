"""Subcommands from the entry-point group `instructedit.commands`: analysis/ adds `report` and
`analyze` this way (the platform never imports analysis/); a plugin that fails to load is listed
and, when run, says why in one line (exit 2) while every other command keeps working."""

import subprocess
import sys
import types

from instructedit import cli


class FakeEntryPoint:
    def __init__(self, name, value, load):
        self.name, self.value, self._load = name, value, load

    def load(self):
        return self._load()


def _listed(parser) -> list[str]:
    import argparse

    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return list(sub.choices)


def test_analysis_commands_come_from_entry_points_in_their_place():
    plugins = cli._plugins()
    assert plugins["report"].value == "analysis.commands.report"
    assert plugins["analyze"].value == "analysis.commands.analyze"
    names = _listed(cli.build_parser())
    assert names.index("edit") < names.index("analyze") < names.index("report") < names.index("submit")
    assert cli._load("report").__name__ == "analysis.commands.report"


def test_help_stays_free_of_torch():
    code = ("import sys; from instructedit.cli import build_parser; build_parser().format_help(); "
            "assert 'analysis.commands.report' in sys.modules, 'report not loaded'; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_broken_plugin_is_one_line_and_the_rest_still_works(monkeypatch, capsys):
    def fail():
        raise ImportError("No module named 'matplotlib'")

    shapeless = types.ModuleType("shapeless")  # no HELP / add_arguments / run
    monkeypatch.setattr(cli, "_plugins", lambda: {
        "report": FakeEntryPoint("report", "analysis.commands.report", fail),
        "zz_extra": FakeEntryPoint("zz_extra", "someone.cmd", lambda: shapeless),
    })
    parser = cli.build_parser()
    names = _listed(parser)
    assert names[-1] == "zz-extra"  # a plugin COMMANDS does not name goes last
    assert "analyze" not in names  # not installed in this stand-in
    assert "unavailable" in parser.format_help()
    assert cli.main(["report", "--experiment", "x"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("instructedit report: its module analysis.commands.report") and "matplotlib" in err
    assert cli.main(["zz-extra"]) == 2
    assert "no HELP, add_arguments, run" in capsys.readouterr().err
    assert cli.main(["ui", "--dry-run"]) == 0  # the platform's own commands are untouched


def test_no_plugin_no_command(monkeypatch):
    monkeypatch.setattr(cli, "_plugins", dict)
    assert cli._load("report") is None
    assert "report" not in _listed(cli.build_parser())
