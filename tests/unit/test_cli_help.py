"""`--help` of every subcommand, in-process through the CLI's own parser: it exits 0 and does
nothing else, every option says what it is for, a default is shown once, no choice is empty; and
bad input exits 2 with one line, across commands."""

import argparse
import re

import pytest
from instructedit import cli


def all_parsers():
    """(name, parser) of every subcommand and nested subcommand."""
    root = cli.build_parser()
    out = []

    def walk(prefix, parser):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    out.append((f"{prefix} {name}".strip(), sub))
                    walk(f"{prefix} {name}", sub)

    walk("", root)
    return out


PARSERS = all_parsers()


def test_every_command_is_there():
    names = {n for n, _ in PARSERS}
    assert {"prepare", "train", "evaluate", "study", "optimize-instructions", "edit", "analyze",
            "analyze gradients", "report", "submit", "jobs", "ui"} <= names, names


@pytest.mark.parametrize("name,parser", PARSERS, ids=[n for n, _ in PARSERS])
def test_options_have_help_one_default_and_no_empty_choice(name, parser):
    fmt = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        opt = "/".join(action.option_strings) or action.dest
        assert action.help and action.help is not argparse.SUPPRESS and action.help.strip(), \
            f"{name} {opt}: no help text"
        shown = fmt._expand_help(action)
        assert len(re.findall(r"default", shown, re.IGNORECASE)) <= 1, f"{name} {opt}: two defaults: {shown!r}"
        assert "(default: None)" not in shown and "(default: False)" not in shown, f"{name} {opt}: {shown!r}"
        if action.choices is not None:
            assert all(str(c).strip() for c in action.choices), f"{name} {opt}: empty choice in {action.choices}"
    text = parser.format_help()
    assert "{," not in text and ",}" not in text, f"{name}: an empty choice shows in the help"


@pytest.mark.parametrize("name", [n for n, _ in PARSERS])
def test_help_exits_0_and_runs_nothing(name, capsys, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError(f"`{name} --help` ran the command")

    for command in cli.COMMANDS:
        mod = cli._load(command)
        if mod is not None:
            monkeypatch.setattr(mod, "run", refuse)
    with pytest.raises(SystemExit) as e:
        cli.main(name.split() + ["--help"])
    assert e.value.code == 0
    assert "usage:" in capsys.readouterr().out


@pytest.mark.parametrize("job", ["train", "evaluate", "prepare"])
def test_submit_job_help_does_not_submit(job, capsys, monkeypatch):
    from instructedit import cluster

    def refuse(*a, **k):
        raise AssertionError("submit --help tried to reach a cluster")

    monkeypatch.setattr(cluster, "connect", refuse)
    monkeypatch.setattr(cluster, "build_submission", refuse)
    assert cli.main(["submit", job, "--help"]) == 0
    assert cli.main(["submit", job, "--config", "demo", "-h"]) == 0
    out = capsys.readouterr().out
    assert "usage: instructedit submit" in out and f"usage: instructedit {job}" in out


def test_yaml_error_names_file_and_line(tmp_path, capsys):
    bad = tmp_path / "run.yaml"
    bad.write_text("name: x\ntrain:\n  max_steps: [1, 2\n  seed: 0\n")
    assert cli.main(["train", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert re.search(rf"{re.escape(str(bad))}:\d+: not valid YAML", err), err
    assert len(err.strip().splitlines()) == 1, err


def test_bad_input_is_exit_2_in_one_line(tmp_path, capsys):
    cases = [
        (["evaluate", "--editor", str(tmp_path / "missing.pt"), "--no-log"], "not found"),
        (["train", "--config", str(tmp_path / "missing.yaml")], "not found"),
        (["analyze", "gradients", "--editor", str(tmp_path / "nope"), "--out", str(tmp_path / "o"),
          "--records", str(tmp_path)], ""),
    ]
    for argv, expect in cases:
        rc = cli.main(argv)
        err = capsys.readouterr().err
        assert rc == 2, (argv, err)
        assert expect in err and "Traceback" not in err, (argv, err)
        assert len(err.strip().splitlines()) == 1, (argv, err)
