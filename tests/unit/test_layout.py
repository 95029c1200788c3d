from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_platform_is_not_a_package():
    # A package named `platform` would shadow the standard library module and break torch/ray/mlflow.
    assert not (REPO / "platform" / "__init__.py").exists()


def test_stdlib_platform_still_importable():
    import platform

    assert hasattr(platform, "system") and platform.system()


def test_cli_help_lists_commands():
    from instructedit.cli import build_parser

    text = build_parser().format_help()
    assert "instructedit" in text
