"""Log setup: JSON lines for Cloud Logging, console rendering, catalog messages, redaction, size caps."""

from __future__ import annotations

import io
import json
import logging
import os
import string
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest
import structlog
from structlog.testing import capture_logs

from app import errors, logs
from app.messages import (
    CATALOG,
    error_class_label,
    human_bytes,
    human_duration,
    in_language,
    language_code,
    render_message,
)

LABELS = {"job": "involve-asia", "execution": "involve-asia-x7k2p", "task_index": "0", "attempt": "1"}
REPO_ROOT = Path(__file__).resolve().parent.parent

SECRET = "Zq+8/made-up-secret=="
TOKEN = "tok-4f9a8b7c6d5e-made-up"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJtYWRlLXVwIn0.c2lnbmF0dXJlLW1hZGUtdXA"


@pytest.fixture(autouse=True)
def reset_log_config() -> Iterator[None]:
    """Each test starts and ends with no log handler, structlog defaults and no secrets."""
    logs.reset_logging()
    logs.clear_secrets()
    yield
    logs.reset_logging()
    logs.clear_secrets()


def json_stream(language: logs.LanguageCode = "zh", level: int = logging.INFO) -> io.StringIO:
    stream = io.StringIO()
    logs.configure_logging(fmt="json", language=language, labels=LABELS, stream=stream, level=level)
    return stream


def entries(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


# --- format choice ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("configured", "on_cloud_run", "isatty", "expected"),
    [
        (None, True, True, "json"),
        (None, False, False, "json"),
        (None, False, True, "console"),
        ("", False, True, "console"),
        ("console", True, False, "console"),
        ("JSON", False, True, "json"),
    ],
)
def test_resolve_format(
    configured: str | None, on_cloud_run: bool, isatty: bool, expected: str
) -> None:
    """LOG_FORMAT wins; else JSON on Cloud Run or without a terminal, console on a terminal."""
    assert logs.resolve_format(configured, on_cloud_run=on_cloud_run, stdout_isatty=isatty) == (
        expected
    )


def test_resolve_format_rejects_unknown() -> None:
    """An unknown LOG_FORMAT is an error naming the value, not a silent default."""
    with pytest.raises(ValueError, match="'xml'"):
        logs.resolve_format("xml", on_cloud_run=False, stdout_isatty=True)


# --- the JSON line ---------------------------------------------------------------------------


def test_json_line_has_exactly_the_cloud_logging_fields() -> None:
    """One JSON object per entry, as StructuredLogHandler writes it: the payload (message, event,
    fields), then severity, labels, its trace keys (empty), call site, httpRequest (empty)."""
    stream = json_stream()
    log = logs.get_logger(account="acme")
    call_line = sys._getframe().f_lineno + 1
    log.info("page_retry", date="2025-01-01", page=15, attempt=2, error_class="timeout",
             error="read timed out", wait=10.0)  # fmt: skip
    (entry,) = entries(stream)
    assert list(entry) == [
        "message", "event", "account", "date", "page", "attempt", "error_class", "error", "wait",
        "severity", "logging.googleapis.com/labels", "logging.googleapis.com/trace",
        "logging.googleapis.com/spanId", "logging.googleapis.com/trace_sampled",
        "logging.googleapis.com/sourceLocation", "httpRequest",
    ]  # fmt: skip
    assert entry["severity"] == "INFO"
    assert entry["event"] == "page_retry"
    assert entry["message"] == "🔁 acme 2025-01-01 第15页超时重试2，10.0秒后重试：read timed out"
    assert entry["logging.googleapis.com/labels"] == {"python_logger": "app", **LABELS,
                                                      "account": "acme"}
    source = entry["logging.googleapis.com/sourceLocation"]
    assert source == {
        "file": __file__,
        "line": call_line,
        "function": "test_json_line_has_exactly_the_cloud_logging_fields",
    }
    assert entry["httpRequest"] == {} and entry["logging.googleapis.com/trace"] == ""
    assert (entry["page"], entry["attempt"], entry["wait"]) == (15, 2, 10.0)


def test_json_message_in_english() -> None:
    """With language "en" the message is English; field names are the same."""
    stream = json_stream("en")
    logs.get_logger(account="acme").warning(
        "page_skipped", date="2025-01-01", page=7, attempts=6, error_class="rate_limited",
        error="HTTP 429",
    )  # fmt: skip
    (entry,) = entries(stream)
    assert entry["severity"] == "WARNING"
    assert entry["message"] == (
        "⏭️ acme 2025-01-01 page 7 skipped after 6 attempts (rate limited): HTTP 429"
    )
    assert entry["error_class"] == "rate_limited"


def test_message_fallbacks_and_override() -> None:
    """Missing fields render "?", unknown events render their name, message= overrides."""
    stream = json_stream()
    log = logs.get_logger()
    log.info("auth_ok")
    log.info("something_new", x=1)
    log.info("resource_report", message="line one\nline two")
    first, second, third = entries(stream)
    assert first["message"] == "🔑 账户 ? 认证成功"
    assert first["logging.googleapis.com/labels"]["account"] == "-"
    assert second["message"] == "something_new"
    assert third["message"] == "line one\nline two"


def test_account_label_from_event_field() -> None:
    """An account passed on the event (not bound) still becomes the account label."""
    stream = json_stream()
    logs.get_logger().info("auth_ok", account="beta")
    (entry,) = entries(stream)
    assert entry["logging.googleapis.com/labels"]["account"] == "beta"


@pytest.mark.parametrize(
    ("method", "severity"),
    [("debug", "DEBUG"), ("info", "INFO"), ("warning", "WARNING"), ("error", "ERROR"),
     ("critical", "CRITICAL")],
)  # fmt: skip
def test_severity_follows_the_level(method: str, severity: str) -> None:
    """Each logging method maps to the Cloud Logging severity of the same name."""
    stream = json_stream(level=logging.DEBUG)
    getattr(logs.get_logger(), method)("heartbeat")
    (entry,) = entries(stream)
    assert entry["severity"] == severity


def test_level_filters_entries() -> None:
    """Below the configured level nothing is written."""
    stream = json_stream(level=logging.INFO)
    logs.get_logger().debug("heartbeat")
    assert stream.getvalue() == ""


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


def test_unserialisable_values_are_stringified() -> None:
    """Sets, bytes, paths, NaN and objects whose str() raises never crash a log call."""
    stream = json_stream()
    logs.get_logger().info(
        "heartbeat",
        tags={"b", "a"},
        raw=b"\xffabc",
        where=Path("out") / "x",
        ratio=float("nan"),
        weird=Unprintable(),
        nested={1: [object.__new__(Unprintable)]},
        err=ValueError("boom"),
    )
    (entry,) = entries(stream)
    assert sorted(entry["tags"]) == ["a", "b"]
    assert entry["raw"] == "\ufffdabc"
    assert entry["where"] == str(Path("out") / "x")
    assert entry["ratio"] == "nan"
    assert "Unprintable" in entry["weird"]
    assert list(entry["nested"]) == ["1"]
    assert entry["err"] == "ValueError: boom"


def test_exception_is_a_traceback_text_field() -> None:
    """log.exception logs at ERROR with the traceback as text in the `exception` field."""
    stream = json_stream()

    def failing_step() -> None:
        raise KeyError("missing-piece")

    try:
        failing_step()
    except KeyError:
        logs.get_logger().exception("run_failed", error_class="other", error="boom")
    (entry,) = entries(stream)
    assert entry["severity"] == "ERROR"
    assert entry["exception"].startswith("Traceback (most recent call last):")
    assert "failing_step" in entry["exception"]
    assert entry["exception"].rstrip().endswith("KeyError: 'missing-piece'")


def test_only_our_lines_are_written() -> None:
    """The library's one-off diagnostic entry is suppressed: every line is one of our events."""
    stream = json_stream()
    log = logs.get_logger()
    log.info("heartbeat")
    log.info("heartbeat")
    lines = entries(stream)
    assert [e["event"] for e in lines] == ["heartbeat", "heartbeat"]
    assert all("logging.googleapis.com/diagnostic" not in e for e in lines)
    assert all(e["httpRequest"] == {} and e["logging.googleapis.com/trace"] == "" for e in lines)


def test_foreign_stdlib_records_are_shaped_and_redacted() -> None:
    """Another library's log record becomes a JSON line of the same shape, redacted."""
    stream = json_stream()
    logging.getLogger("urllib3.connectionpool").warning(
        "retrying with header Authorization: Bearer %s", TOKEN
    )
    (entry,) = entries(stream)
    assert entry["event"] == "log"
    assert entry["logger"] == "urllib3.connectionpool"
    assert TOKEN not in entry["message"]
    assert entry["message"] == "retrying with header Authorization: Bearer [REDACTED]"
    assert entry["logging.googleapis.com/labels"] == {"python_logger": "urllib3.connectionpool",
                                                      **LABELS, "account": "-"}
    assert entry["logging.googleapis.com/sourceLocation"]["file"] == __file__


def test_foreign_record_with_an_exception_carries_a_redacted_traceback() -> None:
    """A stdlib record logged with exc_info gets the traceback as `exception`, redacted."""
    stream = json_stream()
    logs.register_secret(SECRET)
    try:
        raise ConnectionError(f"reset while sending {SECRET}")
    except ConnectionError:
        logging.getLogger("google.cloud.storage").exception("upload failed for %s", SECRET)
    (entry,) = entries(stream)
    assert entry["severity"] == "ERROR"
    assert entry["logger"] == "google.cloud.storage"
    assert entry["message"] == "upload failed for [REDACTED]"
    assert entry["exception"].startswith("Traceback (most recent call last):")
    assert entry["exception"].endswith("ConnectionError: reset while sending [REDACTED]")
    assert SECRET not in stream.getvalue()


class Fetcher:
    def fetch(self) -> None:
        logs.get_logger().info("heartbeat")


def test_source_location_names_the_method_with_its_class() -> None:
    """The call site's function is its qualified name, so a method says which class it is in."""
    stream = json_stream()
    Fetcher().fetch()
    (entry,) = entries(stream)
    assert entry["logging.googleapis.com/sourceLocation"]["function"] == "Fetcher.fetch"


class CountingStream(io.StringIO):
    """A text stream that counts flushes (Cloud Run buffers stdout that is not flushed)."""

    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_every_entry_is_flushed(fmt: logs.LogFormat) -> None:
    """Each entry is flushed as it is written."""
    stream = CountingStream()
    logs.configure_logging(fmt=fmt, language="zh", labels=LABELS, stream=stream)
    log = logs.get_logger()
    for _ in range(3):
        log.info("heartbeat")
    assert len(stream.getvalue().splitlines()) == 3
    assert stream.flushes >= 3


def test_reconfiguring_replaces_the_handler() -> None:
    """configure_logging again sends entries to the new stream only, once each."""
    first = json_stream()
    second = json_stream("en")
    logs.get_logger().info("heartbeat")
    assert first.getvalue() == ""
    (entry,) = entries(second)
    assert entry["message"] == "💓 Heartbeat"
    assert logs.current_language() == "en"


def test_default_stream_is_stdout_at_call_time(capsys: pytest.CaptureFixture[str]) -> None:
    """Without a stream, entries go to whatever sys.stdout is when configure_logging runs."""
    logs.configure_logging(fmt="json", language="zh", labels=LABELS)
    logs.get_logger().info("heartbeat")
    out = capsys.readouterr().out
    assert json.loads(out)["event"] == "heartbeat"


def test_logger_made_before_configuration_follows_it() -> None:
    """A logger created at import time uses the configuration in force when it logs."""
    early = logs.get_logger(account="acme")
    stream = json_stream()
    early.info("auth_ok")
    (entry,) = entries(stream)
    assert entry["message"] == "🔑 账户 acme 认证成功"


def test_capture_logs_sees_structured_events() -> None:
    """structlog.testing.capture_logs records the event and its fields before rendering."""
    json_stream()
    log = logs.get_logger(account="acme")
    with capture_logs() as captured:
        log.info("page_fetched", page=3, records=100)
    assert captured == [
        {"account": "acme", "event": "page_fetched", "page": 3, "records": 100, "log_level": "info"}
    ]


# --- console -----------------------------------------------------------------------------------


def test_console_line_is_readable() -> None:
    """The console shows time, level, the human message and the event (its fields, here all in
    the message, are not repeated)."""
    stream = io.StringIO()
    logs.configure_logging(fmt="console", language="en", labels=LABELS, stream=stream)
    logs.get_logger(account="acme").info("unit_started", date="2025-01-01")
    line = stream.getvalue().rstrip("\n")
    assert "\x1b[" not in line  # no colours when the stream is not a terminal
    time_text, rest = line.split(" ", 1)
    datetime.strptime(time_text, "%H:%M:%S")
    assert rest == "INFO     📅 Fetching acme 2025-01-01  [unit_started]"


def test_console_prints_reports_and_tracebacks_below_the_line() -> None:
    """Multi-line messages and tracebacks follow the first line on their own lines."""
    stream = io.StringIO()
    logs.configure_logging(fmt="console", language="zh", labels=LABELS, stream=stream)
    log = logs.get_logger()
    log.info("resource_report", message="📊 title\n  row: 1")
    try:
        raise RuntimeError("kaput")
    except RuntimeError:
        log.exception("run_failed", error_class="other", error="kaput")
    lines = stream.getvalue().splitlines()
    assert lines[0].endswith("📊 title  [resource_report]")
    assert lines[1] == "  row: 1"
    assert "💥 运行失败（其他错误）：kaput" in lines[2]
    assert lines[3] == "Traceback (most recent call last):"
    assert lines[-1] == "RuntimeError: kaput"


def test_console_prints_thread_stacks_below_the_line() -> None:
    """A stall's thread stacks follow its line, each under a "--- name ---" heading."""
    stream = io.StringIO()
    logs.configure_logging(fmt="console", language="en", labels=LABELS, stream=stream)
    stacks = [{"name": "MainThread", "stack": "frame a\nframe b\n"}, {"name": "fetch", "stack": "recv\n"}]
    logs.get_logger().warning("stall_detected", seconds=120, stacks=stacks)
    lines = stream.getvalue().splitlines()
    assert "WARNING" in lines[0] and lines[0].endswith("every thread's stack  [stall_detected]")
    assert lines[1:] == ["--- MainThread ---", "frame a", "frame b", "--- fetch ---", "recv"]


def test_console_tail_shows_only_what_the_message_does_not_say() -> None:
    """The "[event ...]" tail leaves out every field the message shows (a derived one, such as
    the error class's name or the human size, counts as its field) and keeps the others; a
    message the caller wrote says nothing for the catalog, so all fields stay."""
    stream = io.StringIO()
    logs.configure_logging(fmt="console", language="en", labels=LABELS, stream=stream)
    log = logs.get_logger(account="acme")
    log.warning("page_retry", date="2025-01-01", page=15, attempt=2, error_class="timeout",
                error="read timed out", wait=10.0, status=503)
    log.info("snapshot_replaced", date="2025-01-01", object="days/x.ndjson.gz", bytes=2048,
             records=10, complete=True)
    log.info("resource_report", message="📊 title", title="final")
    log.info("something_new", x=1)
    lines = stream.getvalue().splitlines()
    assert lines[0].endswith(
        "🔁 acme 2025-01-01 page 15: timeout, retry 2 in 10.0s: read timed out  [page_retry status=503]")
    assert lines[1].endswith(
        "(2.0 KB, 10 records)  [snapshot_replaced account=acme date=2025-01-01 complete=True]")
    assert lines[2].endswith("📊 title  [resource_report account=acme title=final]")
    assert lines[3].endswith("something_new  [something_new account=acme x=1]")


def test_console_progress_line_is_short_in_both_languages() -> None:
    """A progress line repeats no field its message says (only `records`, which it does not
    say, is added), so it stays well under the 250-300 characters it used to take, though it
    now gives the account's rate and ETAs and the run's apart."""
    fields = {"date": "2026-11-20", "pages_done": 10, "pages": 25, "percent": 40.0,
              "records": 1000, "rate": 61.2, "eta_seconds": 14.7, "account_eta_seconds": 420.0,
              "run_percent": 12.5, "run_rate": 113.7, "run_eta_seconds": 3725.0}
    for language in ("en", "zh"):
        stream = io.StringIO()
        logs.configure_logging(fmt="console", language=language, labels=LABELS, stream=stream)
        logs.get_logger(account="shopA").info("progress", **fields)
        line = stream.getvalue().rstrip("\n")
        assert line.endswith("  [progress records=1000]"), line
        assert len(line) < 180


# --- redaction ---------------------------------------------------------------------------------

LEVELS = ["debug", "info", "warning", "error", "critical", "exception"]


def log_everywhere(log: structlog.stdlib.BoundLogger, method: str) -> None:
    """Log an event carrying the secret and the token in every place they could hide."""
    emit = getattr(log, method)
    emit(
        f"odd_event_{SECRET}",
        error=f"401 for Authorization: Bearer {TOKEN} with body secret={quote_plus(SECRET)}",
        nested={"request": {"headers": {"Authorization": f"Bearer {TOKEN}"}, "form": [SECRET]}},
        token=TOKEN,
        api_secret=SECRET,
        jwt_seen=f"got {JWT} back",
        body='{"status":"success","data":{"token":"' + TOKEN + '"}}',
    )
    try:
        try:
            raise ConnectionError(f"inner failure with {TOKEN}")
        except ConnectionError as inner:
            raise ValueError(f"auth failed for secret {SECRET}; header Bearer {TOKEN}") from inner
    except ValueError:
        emit("run_failed", error_class="auth", exc_info=True)


@pytest.mark.parametrize("fmt", ["json", "console"])
@pytest.mark.parametrize("method", LEVELS)
def test_no_secret_or_token_reaches_the_output(fmt: logs.LogFormat, method: str) -> None:
    """Registered secrets, tokens, bearer values and JWTs are redacted in every field and format."""
    stream = io.StringIO()
    logs.configure_logging(fmt=fmt, language="zh", labels=LABELS, stream=stream,
                           level=logging.DEBUG)  # fmt: skip
    logs.register_secret(SECRET)
    logs.register_secret(TOKEN)
    log_everywhere(logs.get_logger(account="acme"), method)
    out = stream.getvalue()
    assert out.count("\n") >= 2
    for leaked in (SECRET, quote_plus(SECRET), TOKEN, JWT, "made-up"):
        assert leaked not in out
    assert "[REDACTED]" in out
    assert "ValueError: auth failed for secret [REDACTED]" in out
    if fmt == "json":
        first, second = entries(stream)
        assert first["token"] == "[REDACTED]"
        assert first["nested"]["request"]["headers"]["Authorization"] == "[REDACTED]"
        assert second["exception"].startswith("Traceback")


@pytest.mark.parametrize("offset", [-8, -3, 0, 16 * 1024 + logs.DETAIL_CHARS - 4])
def test_a_secret_at_a_cut_leaves_no_fragment(offset: int) -> None:
    """A secret straddling where a long field is cut is redacted first, so no piece of it shows."""
    stream = json_stream()
    logs.register_secret(SECRET)
    start = logs.DETAIL_CHARS + offset
    error = "a" * start + SECRET + "b" * 2_000_000
    logs.get_logger().warning("page_retry", page=1, error=error)
    (entry,) = entries(stream)
    del entry["logging.googleapis.com/sourceLocation"]  # this test's own name says "secret"
    out = json.dumps(entry, ensure_ascii=False)
    fragments = {SECRET[i : i + 4] for i in range(len(SECRET) - 3)}
    assert not [f for f in fragments if f in out]
    assert "chars cut" in entry["error"]


def test_patterns_redact_unregistered_tokens() -> None:
    """A bearer token or JWT nobody registered is still removed by its shape."""
    stream = json_stream()
    logs.get_logger().error(
        "auth_failed", account="acme", error=f"Authorization: Bearer {TOKEN} and {JWT}"
    )
    (entry,) = entries(stream)
    assert entry["error"] == "Authorization: Bearer [REDACTED] and [REDACTED]"
    assert TOKEN not in entry["message"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PUT /upload?uploadType=resumable&upload_id=ADPycdt-made-up&x=1",
         "PUT /upload?uploadType=resumable&upload_id=[REDACTED]&x=1"),
        ("GET /o?X-Goog-Credential=sa%40made-up%2F20250101&X-Goog-Signature=ab12cd",
         "GET /o?X-Goog-Credential=[REDACTED]&X-Goog-Signature=[REDACTED]"),
        ("GET /v1?key=AIza-made-up&alt=json", "GET /v1?key=[REDACTED]&alt=json"),
        ("access_token=ya29-made-up&expires_in=3599", "access_token=[REDACTED]&expires_in=3599"),
        ("key=general&secret=s3-made-up", "key=[REDACTED]&secret=[REDACTED]"),
        ('{"api_key": "k-made-up", "page": 1}', '{"api_key": "[REDACTED]", "page": 1}'),
    ],
)  # fmt: skip
def test_credential_parameters_are_redacted_by_name(text: str, expected: str) -> None:
    """Query and form parameters that carry credentials (the API's and the storage client's)
    lose their values; the other parameters stay."""
    assert logs.redact_text(text) == expected


def test_short_secrets_are_not_registered() -> None:
    """Values under four characters are ignored, so common words are not blanked out."""
    stream = json_stream()
    logs.register_secret("abc")
    logs.get_logger().info("heartbeat", note="abc")
    (entry,) = entries(stream)
    assert entry["note"] == "abc"


def test_redaction_keeps_ordinary_text() -> None:
    """Redaction leaves text without secrets untouched."""
    logs.register_secret(SECRET)
    text = "page 15 timed out after 30.0 s (error_class=token)"
    assert logs.redact_text(text) == text


# --- size ----------------------------------------------------------------------------------------


def test_error_bodies_are_cut_to_a_few_hundred_chars() -> None:
    """A 5 MB HTML error body becomes a short field that says how much was cut."""
    stream = json_stream()
    body = "<html>" + "x" * 5_000_000
    logs.get_logger().warning("page_retry", page=1, error=body, body=body, detail=body)
    (entry,) = entries(stream)
    for key in ("error", "body", "detail"):
        assert entry[key].startswith("<html>xxx")
        assert len(entry[key]) < logs.DETAIL_CHARS + 60
        assert "chars cut" in entry[key]
    assert len(stream.getvalue().encode()) < 10_000


def test_no_entry_exceeds_the_cloud_logging_limit() -> None:
    """Many big stack dumps and a huge message still make one valid line under 256 KB."""
    stream = json_stream()
    stacks = [{"name": f"t{i}", "stack": f"frame {i}\n" * 20_000} for i in range(40)]
    logs.get_logger().warning("stall_detected", seconds=120, stacks=stacks,
                              message="报" * 200_000)  # fmt: skip
    line = stream.getvalue().rstrip("\n")
    assert "\n" not in line
    assert len(line.encode()) < logs.MAX_ENTRY_BYTES
    entry = json.loads(line)
    assert entry["entry_truncated"] is True
    assert entry["event"] == "stall_detected"
    assert entry["seconds"] == 120


def test_stack_dumps_keep_the_innermost_frames() -> None:
    """A capped stack keeps its end, where the blocking frame is."""
    stream = json_stream()
    stack = "".join(f"frame {i}\n" for i in range(20_000)) + "innermost recv\n"
    logs.get_logger().warning("stall_detected", stacks=[{"name": "t", "stack": stack}])
    (entry,) = entries(stream)
    kept = entry["stacks"][0]["stack"]
    assert len(kept) < logs.STACK_CHARS + 100
    assert kept.endswith("innermost recv\n")


# --- messages catalog ------------------------------------------------------------------------------

REQUIRED_EVENTS: dict[str, set[str]] = {
    "job_started": {"start_date", "end_date", "accounts", "units", "task_index", "task_count"},
    "config_invalid": {"variable", "value", "expected"},
    "auth_ok": {"account"},
    "auth_failed": {"account", "error"},
    "token_refreshed": {"account", "reason"},
    "unit_started": {"account", "date"},
    "snapshot_reused": {"account", "date", "records", "fetched_at"},
    "snapshot_kept": {"account", "date", "records", "fetched_at"},
    "day_changed": {"account", "date", "added", "removed", "changed"},
    "page_fetched": {"account", "date", "page", "pages", "records", "attempt", "duration_ms",
                     "pacing_ms", "wait_ms"},
    "page_probe": {"account", "date", "page", "dead"},
    "page_interrupted": {"account", "date", "page"},
    "saved": {"path", "bytes"},
    "save_failed": {"path", "error"},
    "waiting_backoff": {"seconds", "backoffs", "backoff_ends_in"},
    "page_retry": {"account", "date", "page", "attempt", "error_class", "error", "wait"},
    "page_skipped": {"account", "date", "page", "attempts", "error_class", "error"},
    "second_pass_started": {"pages"},
    "page_recovered": {"account", "date", "page"},
    "skip_cap_reached": {"skipped", "max_skipped"},
    "count_changed": {"account", "date", "old_count", "new_count"},
    "unit_finished": {"account", "date", "records", "pages", "duplicates", "skipped"},
    "progress": {"account", "date", "pages_done", "pages", "percent", "records", "rate",
                 "eta_seconds", "account_eta_seconds", "run_percent", "run_rate",
                 "run_eta_seconds"},
    "snapshot_replaced": {"account", "date", "object", "bytes", "records", "complete"},
    "result_composed": {"object", "bytes", "parts"},
    "summary_written": {"object", "status"},
    "run_finished": {"status", "records", "pages", "skipped", "duration_seconds", "exit_code"},
    "run_failed": {"error_class", "error"},
    "sigterm_received": set(),
    "sigint_received": set(),
    "max_records_reached": {"limit"},
    "resource_report": {"title"},
    "heartbeat": set(),
    "stall_detected": {"seconds"},
    "storage_retry": {"operation", "error"},
    "storage_failed": {"error"},
    "storage_config_invalid": {"bucket", "status", "error"},
    "summary_not_written": {"error"},
    "snapshot_from_earlier_attempt": {"account", "date", "records"},
}  # fmt: skip
DERIVED = {
    "error_label": "error_class",
    "status_label": "status",
    "bytes_human": "bytes",
    "duration": "duration_seconds",
    "eta": "eta_seconds",
    "account_eta": "account_eta_seconds",
    "run_eta": "run_eta_seconds",
}


def template_fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


@pytest.mark.parametrize("event", sorted(REQUIRED_EVENTS))
def test_catalog_templates_use_only_the_event_fields(event: str) -> None:
    """Each required event exists in both languages and its templates use only its fields."""
    zh, en = CATALOG[event]
    allowed = REQUIRED_EVENTS[event]
    for template in (zh, en):
        used = {DERIVED.get(name, name) for name in template_fields(template)}
        assert used <= allowed
    assert zh != en


@pytest.mark.parametrize("event", sorted(CATALOG))
def test_catalog_renders_with_and_without_fields(event: str) -> None:
    """Every template renders with no fields ("?") and with numeric fields, in both languages."""
    numbers = {name: 1.5 for name in REQUIRED_EVENTS.get(event, set())}
    for language in ("zh", "en"):
        assert "?" in render_message(event, {}, language) or not template_fields(
            CATALOG[event][0]
        )
        rendered = render_message(event, numbers, language)
        assert "{" not in rendered
        assert "?" not in rendered or not numbers


def test_progress_message_formats_numbers() -> None:
    """Progress shows pages done, percentages with one decimal, the account's and the run's
    pages per minute, and human ETAs (the day's, the account's, the run's)."""
    fields = {"account": "acme", "date": "2025-01-01", "pages_done": 3, "pages": 10,
              "percent": 30, "records": None, "rate": 12.345, "eta_seconds": 83,
              "account_eta_seconds": 400, "run_percent": 12.5, "run_rate": 24.61,
              "run_eta_seconds": 3725}  # fmt: skip
    assert render_message("progress", fields, "en") == (
        "⏳ acme 2025-01-01: 3/10 pages (30.0%), 12.3 pages/min, day ETA 1m 23s,"
        " account ETA 6m 40s; run 12.5%, 24.6 pages/min, ETA 1h 2m 5s"
    )
    assert render_message("progress", fields, "zh") == (
        "⏳ acme 2025-01-01 已完成3/10页（30.0%），12.3页/分钟，本日预计还需1分23秒，"
        "本账户预计还需6分40秒；总进度12.5%，24.6页/分钟，预计还需1小时2分5秒"
    )
    unknown_eta = {**fields, "eta_seconds": None}
    assert "day ETA ?," in render_message("progress", unknown_eta, "en")


@pytest.mark.parametrize(
    ("error_class", "zh", "en"),
    [
        ("timeout", "超时", "timeout"),
        ("network", "网络错误", "network error"),
        ("http_status", "HTTP错误", "HTTP error"),
        ("rate_limited", "限流", "rate limited"),
        ("json_decode", "JSON解析错误", "JSON decode error"),
        ("api_error", "API错误", "API error"),
        ("empty_page", "空页", "empty page"),
        ("token", "令牌失效", "token rejected"),
        ("auth", "认证失败", "authentication failed"),
        ("validation", "参数错误", "invalid request"),
        ("storage", "存储错误", "storage error"),
        ("other", "其他错误", "other error"),
        ("brand_new", "brand_new", "brand_new"),
    ],
)
def test_error_class_labels(error_class: str, zh: str, en: str) -> None:
    """Each error class has a human name per language; an unknown class shows as itself."""
    assert error_class_label(error_class, "zh") == zh
    assert error_class_label(error_class, "en") == en


def test_every_error_in_the_tree_has_a_label() -> None:
    """Every error class app.errors can raise has a human name, not its raw key."""
    pending: list[type[errors.JobError]] = [errors.JobError]
    classes: set[str] = set()
    while pending:
        cls = pending.pop()
        classes.add(cls.error_class)
        pending.extend(cls.__subclasses__())
    for error_class in classes:
        assert error_class_label(error_class, "zh") != error_class


@pytest.mark.parametrize(
    ("seconds", "zh", "en"),
    [(0.25, "0.2秒", "0.2s"), (9.96, "10.0秒", "10.0s"), (45, "45秒", "45s"),
     (83, "1分23秒", "1m 23s"), (3600, "1小时0分0秒", "1h 0m 0s"), (None, "?", "?")],
)  # fmt: skip
def test_human_duration(seconds: float | None, zh: str, en: str) -> None:
    """Durations read like an ops script: seconds, minutes, hours."""
    assert human_duration(seconds, "zh") == zh
    assert human_duration(seconds, "en") == en


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KB"), (12_900_000, "12.3 MB"),
     (5 * 1024**4, "5.0 TB"), (None, "?"), ("n/a", "n/a")],
)  # fmt: skip
def test_human_bytes(size: object, text: str) -> None:
    """Sizes use binary units with one decimal."""
    assert human_bytes(size) == text


@pytest.mark.parametrize(("value", "code"),
                         [("en", "en"), ("zh", "zh"), ("", "zh"), (None, "zh"), ("fr", "zh")])
def test_the_language_fallback_is_decided_in_one_place(value: object, code: str) -> None:
    """"en" is English and anything else Chinese (the default): `language_code` decides, and
    texts picked by language follow it."""
    assert language_code(value) == code
    assert in_language(value, "中文", "English") == ("English" if code == "en" else "中文")
    assert human_duration(83, str(value)) == human_duration(83, code)


# --- import cost -----------------------------------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("fmt", ["console", "json"])
def test_only_json_logs_import_google_cloud_logging(fmt: str) -> None:
    """JSON lines are written by google-cloud-logging's handler; a console run never pays for
    its import, and a JSON run does not load the Logging API's gRPC clients it never calls."""
    code = (
        "import sys\n"
        "from app import logs\n"
        f"logs.configure_logging(fmt={fmt!r}, language='en', labels={{}}, stream=sys.stderr)\n"
        "logs.get_logger().info('heartbeat')\n"
        "print('google.cloud.logging_v2' in sys.modules)\n"
        "print(any(m.startswith('google.cloud.logging_v2.services') for m in sys.modules))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "GOOGLE_CLOUD_DISABLE_GRPC"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True,
        timeout=25, env=env,
    )  # fmt: skip
    assert result.stdout.split() == [str(fmt == "json"), "False"]
    if fmt == "json":
        assert json.loads(result.stderr)["message"] == "💓 Heartbeat"
    else:
        assert "Heartbeat" in result.stderr


@pytest.mark.timeout(30)
def test_json_lines_are_written_by_structured_log_handler_alone() -> None:
    """In a fresh process (where the library's one-off self-description entry would come
    first), the JSON handler is google-cloud-logging's StructuredLogHandler and stdout holds
    exactly the job's entries, shaped by it."""
    code = (
        "import logging, sys\n"
        "from google.cloud.logging.handlers import StructuredLogHandler\n"
        "from app import logs\n"
        "logs.configure_logging(fmt='json', language='en', labels={'job': 'j'})\n"
        "logs.get_logger(account='acme').info('auth_ok')\n"
        "logging.getLogger('urllib3').warning('retrying')\n"
        "handlers = [h for h in logging.getLogger().handlers if isinstance(h, StructuredLogHandler)]\n"
        "print(len(handlers), file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True,
        timeout=25,
    )  # fmt: skip
    assert result.stderr.strip() == "1"
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert (first["event"], first["message"]) == ("auth_ok", "🔑 Account acme authenticated")
    assert first["logging.googleapis.com/labels"]["account"] == "acme"
    assert first["logging.googleapis.com/labels"]["job"] == "j"
    assert (second["event"], second["logger"], second["severity"]) == ("log", "urllib3", "WARNING")
    assert "logging.googleapis.com/diagnostic" not in result.stdout


@pytest.mark.timeout(30)
def test_a_record_whose_arguments_do_not_fit_still_logs() -> None:
    """A library record with arguments its format cannot take logs its format text, and its
    arguments (a secret, maybe) never reach stderr in logging's error dump. In a subprocess:
    pytest's own log handler would raise on such a record first."""
    code = (
        "import logging, sys\n"
        "from app import logs\n"
        "logs.configure_logging(fmt='json', language='en', labels={})\n"
        f"logging.getLogger('urllib3').warning('retry %d of %d', {TOKEN!r})\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True,
        timeout=25,
    )  # fmt: skip
    assert json.loads(result.stdout)["message"] == "retry %d of %d"
    assert TOKEN not in result.stdout + result.stderr
    assert "Logging error" not in result.stderr


@pytest.mark.timeout(60)
def test_google_library_records_still_reach_the_log_after_a_storage_client_is_built(
        gcs_emulator: Any) -> None:
    """google-api-core switches off the "google" logger's propagation when a client is built,
    unless that logger is configured; ours is, so a storage library warning is a JSON line."""
    from app.sinks import GCSSink

    stream = json_stream()
    sink = GCSSink(gcs_emulator.bucket, "p", endpoint=gcs_emulator.host)
    try:
        sink.list("")
        assert logging.getLogger("google").propagate
        logging.getLogger("google.cloud.storage").warning("retrying an upload")
    finally:
        sink.close()
    (entry,) = [e for e in entries(stream) if e.get("logger") == "google.cloud.storage"]
    assert entry["severity"] == "WARNING" and entry["message"] == "retrying an upload"
