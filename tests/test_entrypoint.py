"""`python -m app` as Cloud Run starts it: process set-up, and the start-up checks that refuse
to run (exit 2) before anything is fetched."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from app.__main__ import limit_malloc_arenas
from app.config import load_settings
from app.errors import StorageError
from app.runner import open_sink
from app.simulator import Simulator
from app.sinks import GCSSink
from tests.support.gcs_fixtures import GcsEmulator
from tests.support.jobrun import REPO, job_env, run_job


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_malloc_arenas_are_capped_unless_the_operator_chose() -> None:
    """Capped on glibc (flat peak RSS, see bench `volume`); an explicit MALLOC_ARENA_MAX wins."""
    assert limit_malloc_arenas({}) is True
    assert limit_malloc_arenas({"MALLOC_ARENA_MAX": "8"}) is False


# --- start-up checks: exit 2 naming the variable, nothing fetched --------------------------------

DAY = "2025-01-02"


def _future() -> str:
    return (dt.date.today() + dt.timedelta(days=3)).isoformat()


def _file(tmp_path: Path) -> str:
    path = tmp_path / "not-a-folder"
    path.write_text("x")
    return str(path)


STARTUP_REFUSALS: list[tuple[str, Callable[[Path], dict[str, str]]]] = [
    ("END_DATE", lambda tmp: {"END_DATE": _future()}),
    ("GCS_BUCKET", lambda tmp: {"GCS_BUCKET": "My_Bucket!!"}),
    ("OUTPUT_DIR", lambda tmp: {"OUTPUT_DIR": _file(tmp)}),
    ("OUTPUT_DIR", lambda tmp: {"OUTPUT_DIR": _file(tmp) + "/sub"}),
    ("REQUEST_TIMEOUT", lambda tmp: {"REQUEST_TIMEOUT": "1e9"}),
    ("INVOLVE_ASIA_ACCOUNT_NAME", lambda tmp: {"INVOLVE_ASIA_ACCOUNT_NAME": "sh\x07op"}),
    ("INVOLVE_ASIA_ACCOUNTS", lambda tmp: {"INVOLVE_ASIA_ACCOUNTS": json.dumps(
        [{"name": "a", "secret": "demo-secret"}, {"name": "b", "secret": "demo-secret"}])}),
    ("PREFERRED_CURRENCY", lambda tmp: {"PREFERRED_CURRENCY": "EURO"}),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("variable", "extra"), STARTUP_REFUSALS,
                         ids=["future-end", "bucket", "dir-is-file", "dir-under-file", "timeout-1e9",
                              "bel-in-name", "same-credentials-twice", "currency"])
def test_startup_refusal_exits_2_before_any_request(
    simulator: Simulator, tmp_path: Path, variable: str, extra: Callable[[Path], dict[str, str]]
) -> None:
    """`python -m app` with one bad setting exits 2, logs config_invalid naming it, asks the API nothing."""
    env = job_env(simulator.base_url, DAY, DAY, OUTPUT_DIR=str(tmp_path / "out"))
    env.update(extra(tmp_path))
    run = run_job(env, timeout=60)
    assert run.code == 2, run.stderr[-2000:]
    (entry,) = run.named("config_invalid")
    assert entry["severity"] == "ERROR" and entry["error_class"] == "config"
    assert entry["variable"] == variable and variable in entry["message"]
    assert not run.named("job_started")
    assert len(simulator.ledger) == 0


@pytest.mark.timeout(60)
def test_missing_storage_credentials_exit_2_before_the_job(simulator: Simulator,
                                                           tmp_path: Path) -> None:
    """No GCS credentials: exit 2, one ERROR naming GCS_BUCKET with class config, no API request.

    NO_GCE_CHECK and an empty HOME keep the client from Google's metadata server and any saved
    gcloud login, so nothing leaves the machine."""
    home = tmp_path / "home"
    home.mkdir()
    env = job_env(simulator.base_url, DAY, DAY, GCS_BUCKET="some-valid-name", HOME=str(home),
                  NO_GCE_CHECK="True", OUTPUT_DIR=str(tmp_path / "out"))
    run = run_job(env, timeout=60)
    assert run.code == 2, run.stderr[-2000:]
    errors = [e for e in run.events() if e.get("severity") == "ERROR"]
    assert [e["event"] for e in errors] == ["storage_credentials_missing"]
    (entry,) = errors
    assert entry["error_class"] == "config" and entry["variable"] == "GCS_BUCKET"
    assert "GCS_BUCKET=some-valid-name" in entry["message"] and "GCS credentials" in entry["message"]
    assert not run.named("job_started")
    assert len(simulator.ledger) == 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("relative", [False, True], ids=["absolute", "relative"])
def test_a_credentials_file_that_does_not_exist_is_named_whole(simulator: Simulator,
                                                                tmp_path: Path,
                                                                relative: bool) -> None:
    """GOOGLE_APPLICATION_CREDENTIALS naming a missing file: exit 2 before anything, and the
    console line says that file does not exist, its whole path in the message (a relative one
    also resolved), not cut."""
    home = tmp_path / "home"
    home.mkdir()
    folder = tmp_path / ("a-rather-long-folder-name-" * 4)
    folder.mkdir()
    missing = folder / "service-account-key-that-is-not-there.json"
    env = job_env(simulator.base_url, DAY, DAY, GCS_BUCKET="some-valid-name", HOME=str(home),
                  NO_GCE_CHECK="True", LOG_FORMAT="console", LOG_LANGUAGE="en",
                  GOOGLE_APPLICATION_CREDENTIALS=(os.path.relpath(missing, REPO) if relative
                                                  else str(missing)))
    run = run_job(env, timeout=60)
    assert run.code == 2, run.stderr[-2000:]
    (line,) = [ln for ln in run.stdout.splitlines() if "ERROR" in ln]
    message = line.split("  [", 1)[0]
    assert "GOOGLE_APPLICATION_CREDENTIALS=" in message
    assert f"this file does not exist ({missing})" in message if relative else (
        f"GOOGLE_APPLICATION_CREDENTIALS={missing}: this file does not exist" in message)
    assert "…" not in message
    assert message.split("ERROR", 1)[1].strip() in run.stderr
    assert len(simulator.ledger) == 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("language", "expected"), [
    ("zh", "❌ 配置错误：未设置 INVOLVE_ASIA_API_SECRET，应设置 API 密钥（secret）或 INVOLVE_ASIA_ACCOUNTS"),
    ("en", "❌ Invalid setting: INVOLVE_ASIA_API_SECRET is not set; set the API secret, or"
           " INVOLVE_ASIA_ACCOUNTS"),
])
def test_a_missing_secret_reads_whole_and_the_same_on_stderr_and_in_the_log(
        tmp_path: Path, language: str, expected: str) -> None:
    """No secret at all: the log entry's message and the stderr line are the same, whole
    sentence (nothing redacted away, wholly in the log language); `value` is null."""
    env = job_env("http://127.0.0.1:9", DAY, DAY, LOG_LANGUAGE=language, OUTPUT_DIR=str(tmp_path))
    del env["INVOLVE_ASIA_API_SECRET"]
    run = run_job(env, timeout=60)
    assert run.code == 2
    (entry,) = run.named("config_invalid")
    assert entry["message"] == expected
    assert run.stderr.strip() == expected
    assert entry["variable"] == "INVOLVE_ASIA_API_SECRET" and entry["value"] is None


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("language", "says", "not_said"), [
    ("en", "START_DATE=2025-02-30: no such date (February 2025 has 28 days)", "expected"),
    ("zh", "START_DATE=2025-02-30：该日期不存在（2025年2月只有28天）", "应为"),
])
def test_an_impossible_date_is_said_not_to_exist(tmp_path: Path, language: str, says: str,
                                                  not_said: str) -> None:
    """START_DATE=2025-02-30 is the right format for a day that does not exist: the message
    says so (on stderr and in the log alike), and does not ask for YYYY-MM-DD."""
    env = job_env("http://127.0.0.1:9", "2025-02-30", "2025-03-01", LOG_LANGUAGE=language,
                  OUTPUT_DIR=str(tmp_path))
    run = run_job(env, timeout=60)
    assert run.code == 2
    (entry,) = run.named("config_invalid")
    assert says in entry["message"] and not_said not in entry["message"]
    assert run.stderr.strip() == entry["message"]
    assert entry["problem"] == "no such date (February 2025 has 28 days)"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("flag", ["--involve-asia-api-secret", "--involve-asia-accounts"])
def test_a_secret_given_as_a_flag_is_refused_unseen(simulator: Simulator, tmp_path: Path,
                                                    flag: str) -> None:
    """A secret on the command line (readable in every process list) is refused: exit 2 before
    any request, the message names the flag and the variable to use, and never the value."""
    value = ("made-up-flag-secret-4711" if flag.endswith("secret") else
             json.dumps([{"name": "a", "secret": "made-up-flag-secret-4711"}]))  # pragma: allowlist secret
    env = job_env(simulator.base_url, DAY, DAY, OUTPUT_DIR=str(tmp_path))
    run = run_job(env, timeout=60, args=[flag, value])
    assert run.code == 2, run.stderr[-2000:]
    (entry,) = run.named("config_invalid")
    variable = flag[2:].upper().replace("-", "_")
    assert entry["variable"] == variable
    assert flag in entry["message"] and f"the environment variable {variable}" in entry["message"]
    assert run.stderr.strip() == entry["message"]
    assert "made-up-flag-secret-4711" not in run.stdout + run.stderr
    assert len(simulator.ledger) == 0
    demo = run_job(env, timeout=60, args=["--demo", flag, value])
    assert demo.code == 2 and "made-up-flag-secret-4711" not in demo.stdout + demo.stderr
    assert [e["variable"] for e in demo.named("config_invalid")] == [variable]


@pytest.mark.timeout(60)
def test_bad_log_language_message_is_wholly_chinese(tmp_path: Path) -> None:
    """LOG_LANGUAGE=fr falls back to Chinese for the message, expectation included."""
    env = job_env("http://127.0.0.1:9", DAY, DAY, LOG_LANGUAGE="fr", OUTPUT_DIR=str(tmp_path))
    run = run_job(env, timeout=60)
    assert run.code == 2
    (entry,) = run.named("config_invalid")
    assert entry["message"] == "❌ 配置错误：LOG_LANGUAGE=fr，应为 zh 或 en"
    assert entry["expected"] == "zh or en"  # the field stays English for machines
    assert "应为 zh 或 en" in run.stderr


@pytest.mark.timeout(60)
def test_open_sink_reaches_the_bucket_first(gcs_emulator: GcsEmulator) -> None:
    """open_sink lists the bucket at once: a bucket that is there opens, a missing one fails now.
    The emulator is reached through Settings (STORAGE_EMULATOR_HOST as config read it)."""
    settings = load_settings({"INVOLVE_ASIA_API_SECRET": "demo-secret", "START_DATE": DAY,
                              "END_DATE": DAY, "GCS_BUCKET": gcs_emulator.bucket,
                              "STORAGE_EMULATOR_HOST": gcs_emulator.host})
    sink = open_sink(settings)
    assert isinstance(sink, GCSSink)
    try:
        assert sink.root == f"gs://{gcs_emulator.bucket}/conversions"
        assert sink.list("") == []  # the probe wrote nothing
    finally:
        sink.close()
    missing = load_settings({"INVOLVE_ASIA_API_SECRET": "demo-secret", "START_DATE": DAY,
                             "END_DATE": DAY, "GCS_BUCKET": "no-such-bucket-here",
                             "STORAGE_EMULATOR_HOST": gcs_emulator.host})
    with pytest.raises(StorageError, match="no-such-bucket-here"):
        open_sink(missing)
