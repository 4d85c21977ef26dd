"""`python -m app` as Cloud Run starts it: process set-up, and the start-up checks that refuse
to run (exit 2) before anything is fetched."""

from __future__ import annotations

import datetime as dt
import json
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
from tests.support.jobrun import job_env, run_job


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
@pytest.mark.parametrize("credentials_file", [True, False], ids=["missing-file", "none-at-all"])
def test_missing_storage_credentials_exit_2_before_the_job(
    simulator: Simulator, tmp_path: Path, credentials_file: bool
) -> None:
    """No GCS credentials: exit 2, one ERROR naming GCS_BUCKET with class config, no API request.

    NO_GCE_CHECK and an empty HOME keep the client from Google's metadata server and any saved
    gcloud login, so nothing leaves the machine."""
    home = tmp_path / "home"
    home.mkdir()
    env = job_env(simulator.base_url, DAY, DAY, GCS_BUCKET="some-valid-name", HOME=str(home),
                  NO_GCE_CHECK="True", OUTPUT_DIR=str(tmp_path / "out"))
    if credentials_file:
        env["GOOGLE_APPLICATION_CREDENTIALS"] = str(tmp_path / "missing.json")
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
