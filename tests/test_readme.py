"""The README stays true: every setting in its table with the code's default, and the test
command CI runs."""

from __future__ import annotations

from pathlib import Path

from app.config import OPTIONS

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_setting_is_in_the_readme_table_with_its_default() -> None:
    """Each setting has a row `| NAME | default | ...` matching config.py."""
    for opt in OPTIONS:
        default = "(unset)" if opt.default is None else f"`{opt.default}`"
        assert f"| `{opt.env}` | {default} |" in README, opt.env


def test_the_readme_names_the_ci_command() -> None:
    """The README's test command is the one CI runs."""
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert "bash .ci/run" in README and "python -m pytest" in ci
