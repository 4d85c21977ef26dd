"""The README stays true: every setting in its table with the code's default, the test command
CI runs, and every command it gives run by a test (the main ones by this file, as written)."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from app.config import OPTIONS
from tests.support.gcs_fixtures import GcsEmulator
from tests.support.jobrun import FAST

REPO = Path(__file__).resolve().parents[1]
BASH = shutil.which("bash") or "bash"
README = (REPO / "README.md").read_text()

THIS = "tests/test_readme.py"
REAL_API = f"{THIS}::test_the_real_api_block_runs_as_written_and_status_reads_the_bucket"
LOCAL = f"{THIS}::test_the_local_store_reads_in_duckdb_and_status_prints_a_fix_that_works"

COMMANDS_TESTED: dict[str, str] = {
    # A key is an exact command line (continuation lines joined, whitespace collapsed, a trailing
    # `# comment` dropped), or a prefix when it ends in " *". The value names the test that runs
    # that command (or, for `bash .ci/run`, that CI runs it and it runs the suite).
    "python3 -m venv .venv && .venv/bin/pip install -q -r requirements.txt && .venv/bin/python -m app "
    "--demo": "tests/test_container_install.py::test_entry_point_demo_runs_end_to_end",
    "bash .ci/run": f"{THIS}::test_the_readme_names_the_ci_command",
    "export INVOLVE_ASIA_API_SECRET=...": REAL_API,
    "export START_DATE=2025-01-01 END_DATE=2025-01-31": REAL_API,
    "export GCS_BUCKET=my-bucket": REAL_API,
    "python -m app": REAL_API,
    "PROJECT=my-project SECRET_FILE=./api-secret.txt ALERT_EMAIL=ops@example.com deploy/setup.sh":
        "tests/test_ops_setup.py::test_setup_creates_everything_with_least_privilege",
    "deploy/setup.sh": "tests/test_ops_setup.py::test_setup_rerun_creates_nothing_twice",
    "PROJECT=my-project deploy/backfill.sh *":
        "tests/test_ops_setup.py::test_backfill_passes_range_and_tasks_as_overrides",
    "deploy/backfill.sh *": "tests/test_ops_setup.py::test_backfill_passes_range_and_tasks_as_overrides",
    "GCS_BUCKET=my-bucket python -m app status": REAL_API,
    "python -m app status": REAL_API,
    "python -m app status --start-date 2025-03-01 --end-date 2025-03-31 --json": LOCAL,
    # The example of status's output: the fix commands it prints are run by LOCAL as printed.
    "OUTPUT_DIR=/srv/output START_DATE=2025-03-05 END_DATE=2025-03-07 python -m app": LOCAL,
    "OUTPUT_DIR=/srv/output START_DATE=2025-03-09 END_DATE=2025-03-09 python -m app": LOCAL,
    "PROJECT=my-project deploy/bigquery.sh":
        "tests/test_ops_setup.py::test_bigquery_creates_a_hive_partitioned_external_table",
    "deploy/bigquery.sh": "tests/test_ops_setup.py::test_bigquery_creates_a_hive_partitioned_external_table",
    "ALLOW_SNAPSHOT_SHRINK=true SNAPSHOT_MAX_AGE=0 START_DATE=2025-01-14 END_DATE=2025-01-14 "
    "python -m app": "tests/test_completeness.py::test_a_refresh_the_api_denies_keeps_the_snapshot",
    "python -m app --help": "tests/test_config.py::test_help_lists_every_setting",
    "python -m bench --only throttle --quick":
        "tests/test_bench_smoke.py::test_bench_quick_throttle_exits_0_and_shows_why_its_ratios_are_not_judged",
}

COMMAND_WORDS = {"python", "python3", "bash", "sh", "export", "gcloud", "gsutil", "bq", "duckdb",
                 "docker", "podman", "podman-compose", "curl", "zcat", "gunzip", "pip", "pip3",
                 "git", "make", "cd", "source"}
ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=\S*\s+")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")


def is_command(text: str) -> bool:
    """Whether a line or code span starts a shell command (after any VAR=value assignments)."""
    rest = text.strip()
    while match := ASSIGNMENT.match(rest):
        rest = rest[match.end():]
    if not rest:
        return False
    word, *arguments = rest.split()
    if word.endswith(".sh") or word.startswith((".venv/bin/", ".ci/")):
        return True
    return word in COMMAND_WORDS and bool(arguments)  # a bare `duckdb` names a package


def normalise(command: str) -> str:
    """One command line: a trailing `# comment` dropped, whitespace collapsed."""
    return " ".join(re.sub(r"\s+#\s.*$", "", command).split())


def readme_commands(text: str = README) -> list[str]:
    """Every command the README gives: each command line of its code blocks (continuation lines
    joined), and each inline code span that is a command."""
    commands = []
    for block in FENCE.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            if is_command(line):
                commands.append(normalise(line))
    prose = FENCE.sub("", text)
    commands += [normalise(span) for span in INLINE.findall(prose) if is_command(span)]
    return commands


def covering_key(command: str) -> str | None:
    """The COMMANDS_TESTED key that covers `command`: an exact match, else the longest prefix."""
    if command in COMMANDS_TESTED:
        return command
    prefixes = [k for k in COMMANDS_TESTED if k.endswith(" *") and command.startswith(k[:-1])]
    return max(prefixes, key=len, default=None)


def readme_block(section: str, language: str = "") -> str:
    """The first code block (of that language, if given) under the README's `## section`."""
    start = README.index(f"## {section}\n")
    end = README.find("\n## ", start + 1)
    body = README[start:end if end >= 0 else len(README)]
    match = re.search(rf"^```{language}\n(.*?)^```", body, re.MULTILINE | re.DOTALL)
    assert match, f"no ```{language} block under ## {section}"
    return match.group(1)


def test_every_setting_is_in_the_readme_table_with_its_default() -> None:
    """Each setting has a row `| NAME | default | ...` matching config.py."""
    for opt in OPTIONS:
        default = "(unset)" if opt.default is None else f"`{opt.default}`"
        assert f"| `{opt.env}` | {default} |" in README, opt.env


def test_the_readme_names_the_ci_command() -> None:
    """The README's test command is the one CI runs."""
    ci = (REPO / ".ci" / "run").read_text()
    assert "bash .ci/run" in README and "python -m pytest" in ci


def test_the_command_finder_finds_commands_and_only_commands() -> None:
    """Block lines and inline spans that run something are found, joined and normalised; file
    names, settings and SQL are not."""
    text = ("Run `deploy/backfill.sh START END` or `LOG_LANGUAGE=en`; see `deploy/metrics/`, "
            "`duckdb`, `./output`.\n\n"
            "```\nA=1 python -m app \\\n  --json   # note\nresource.type=\"x\"\n```\n\n"
            "```sql\nSELECT 1\n```\n")
    assert readme_commands(text) == ["A=1 python -m app --json", "deploy/backfill.sh START END"]


def test_every_readme_command_is_run_by_a_named_test_that_exists() -> None:
    """Each command in the README's code blocks and inline code is in COMMANDS_TESTED, each
    entry is used by the README, and each test it names exists."""
    commands = readme_commands()
    assert len(commands) >= 15
    uncovered = [c for c in commands if covering_key(c) is None]
    assert uncovered == [], "README commands no test runs: add a test, or move them to docs/"
    unused = set(COMMANDS_TESTED) - {covering_key(c) for c in commands}
    assert unused == set()
    for target in set(COMMANDS_TESTED.values()):
        path, name = target.split("::")
        assert f"def {name}(" in (REPO / path).read_text(encoding="utf-8"), target


def _shell(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run README lines in bash as a user would, `python` being this interpreter."""
    full = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(REPO), "HOME": str(cwd), "PYTHONUNBUFFERED": "1",
            "NO_GCE_CHECK": "True", **env}
    return subprocess.run([BASH, "-euo", "pipefail", "-c", script], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=240, check=False)


def _real_api_block(secret: str, *, with_bucket: bool) -> str:
    block = readme_block("Running against the real API")
    assert "export INVOLVE_ASIA_API_SECRET=..." in block
    lines = [line.replace("INVOLVE_ASIA_API_SECRET=...", f"INVOLVE_ASIA_API_SECRET={secret}")
             for line in block.splitlines()
             if with_bucket or not line.startswith("export GCS_BUCKET=")]
    return "\n".join(lines) + "\n"


@pytest.mark.timeout(300)
def test_the_real_api_block_runs_as_written_and_status_reads_the_bucket(
        make_simulator, gcs_emulator: GcsEmulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The README's "Running against the real API" block, its secret and the API's address
    aside, stores January in bucket my-bucket; then the Status section's first command, in the
    same shell, shows those 31 days complete and exits 0."""
    sim = make_simulator(records_per_day=20, rate_limit_per_minute=None)
    gcs_emulator.create_bucket("my-bucket")
    status_line = readme_block("Status: the store at a glance").splitlines()[0]
    assert status_line.startswith("GCS_BUCKET=my-bucket python -m app status")
    env = {**FAST, "INVOLVE_ASIA_BASE_URL": sim.base_url,
           "STORAGE_EMULATOR_HOST": gcs_emulator.host}
    run = _shell(_real_api_block(sim.accounts[0].secret, with_bucket=True) + status_line,
                 tmp_path, env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Total: 31 complete, 0 incomplete, 0 missing; exit code 0" in run.stdout
    assert not (tmp_path / "output").exists()
    finished = [json.loads(line) for line in run.stdout.splitlines()
                if line.startswith("{") and '"run_finished"' in line]
    assert [e["status"] for e in finished] == ["succeeded"]


@pytest.mark.timeout(300)
def test_the_local_store_reads_in_duckdb_and_status_prints_a_fix_that_works(
        make_simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """Without the GCS_BUCKET line the block writes ./output; the README's DuckDB query counts
    every conversion once; the README's `status ... --json` line runs (March: all missing, exit
    3); and after a day is lost, the command status prints to fetch it again, run as printed,
    makes the store complete."""
    sim = make_simulator(records_per_day=20, rate_limit_per_minute=None)
    secret = sim.accounts[0].secret
    env = {**FAST, "INVOLVE_ASIA_BASE_URL": sim.base_url}
    run = _shell(_real_api_block(secret, with_bucket=False), tmp_path, env)
    assert run.returncode == 0, run.stderr[-3000:]
    days = tmp_path / "output" / "days" / "account=default"
    assert len(list(days.glob("date=2025-01-*/conversions.ndjson.gz"))) == 31

    monkeypatch.chdir(tmp_path)
    rows = duckdb.execute(readme_block("Running against the real API", "sql")).fetchall()
    assert {(r[0], str(r[1])[:7]) for r in rows} == {("default", "2025-01")}
    assert sum(r[3] for r in rows) == len(sim.expected_ids("default", "2025-01-01", "2025-01-31"))

    json_line = readme_block("Status: the store at a glance").splitlines()[1]
    assert json_line.startswith("python -m app status --start-date 2025-03-01")
    listed = _shell(json_line, tmp_path, env)
    assert listed.returncode == 3, listed.stderr[-3000:]
    doc = json.loads(listed.stdout)
    assert (doc["complete"], doc["incomplete"], doc["missing"]) == (0, 0, 31)

    lost = days / "date=2025-01-15"
    for path in lost.iterdir():
        path.unlink()
    january = "python -m app status --start-date 2025-01-01 --end-date 2025-01-31"
    before = _shell(january, tmp_path, env)
    assert before.returncode == 3, before.stderr[-3000:]
    fixes = [line.strip() for line in before.stdout.splitlines()
             if line.strip().startswith("OUTPUT_DIR=") and line.strip().endswith("python -m app")]
    assert len(fixes) == 1 and " START_DATE=2025-01-15 END_DATE=2025-01-15 python -m app" in fixes[0]
    fixed = _shell(f"export INVOLVE_ASIA_API_SECRET={secret}\n{fixes[0]}\n", tmp_path, env)
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    after = _shell(january, tmp_path, env)
    assert after.returncode == 0, after.stdout[-3000:]
    records = gzip.decompress((lost / "conversions.ndjson.gz").read_bytes()).splitlines()
    assert len(records) == 20
