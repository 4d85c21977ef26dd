"""One execution with everything around it: logging set up from the settings, storage opened
and probed, the SIGTERM handler, the job run, its summary logged. Shared by `python -m app`
and the demo, so neither entry point imports the other.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Mapping
from types import FrameType
from typing import TYPE_CHECKING, Any

from app.config import CloudRunTask, InvalidSetting, Settings
from app.errors import (
    ConfigError,
    JobError,
    StorageConfigError,
    StorageCredentialsError,
    StorageError,
)
from app.outcome import EXIT_RETRY, StopReason, decide
from app.store import RunLayout

if TYPE_CHECKING:
    from app.sinks import Sink

SIGTERM_GRACE = 9.0
"""After SIGTERM the job stops itself; if it has not exited after this long, exit 1 regardless."""


def _exit_code(error: BaseException) -> int:
    """A run that ended on `error` before the job could decide: the one decision, in outcome."""
    return decide([], StopReason.FATAL, error, fail_on_skipped=True).exit_code


def setup_logging(settings: Settings | None, env: Mapping[str, str]) -> None:
    from app.logs import configure_logging, register_secret, resolve_format

    task = settings.task if settings else CloudRunTask(job=env.get("CLOUD_RUN_JOB") or "local")
    configured = settings.log_format if settings else env.get("LOG_FORMAT")
    language = settings.log_language if settings else env.get("LOG_LANGUAGE", "zh")
    fmt = resolve_format(configured if configured in ("json", "console") else None,
                         on_cloud_run=task.on_cloud_run, stdout_isatty=sys.stdout.isatty())
    configure_logging(
        fmt=fmt,
        language="en" if language == "en" else "zh",
        labels={"job": task.job, "execution": task.execution, "task_index": str(task.index),
                "attempt": str(task.attempt)},
    )
    if settings is not None:
        for secret in settings.secrets():
            register_secret(secret)


def open_sink(settings: Settings) -> Sink:
    """The job's sink, opened and probed with one cheap listing, before anything is fetched.

    The listing (of this execution's own run folder, empty for a new execution) makes the GCS
    client find its credentials and reach the bucket now, not after a day of fetching. A bucket
    that does not exist (404) or storage that refuses the job (401/403) is configuration:
    StorageConfigError (exit 2).
    """
    from app.logs import get_logger
    from app.sinks import StorageRetry, make_sink

    sink = make_sink(bucket=settings.gcs_bucket, prefix=settings.gcs_prefix,
                     output_dir=settings.output_dir, endpoint=settings.storage_emulator_host,
                     request_timeout=settings.storage_timeout)
    probing = threading.Event()
    probing.set()

    def log_retry(retry: StorageRetry) -> None:  # the job logs those that come later
        if probing.is_set():
            get_logger().warning("storage_retry", error_class="storage",
                                 operation=retry.operation, object=retry.object, error=retry.error)

    sink.health.watch(on_retry=log_retry)
    try:
        sink.list(RunLayout(settings.range_name, settings.task.execution).prefix)
    except StorageError as exc:
        sink.close()
        if exc.status == 404:
            raise StorageConfigError(f"the bucket {settings.gcs_bucket} does not exist ({exc})",
                                     status=exc.status) from exc
        if exc.status in (401, 403):
            raise StorageConfigError(f"storage refuses access to the bucket {settings.gcs_bucket}"
                                     f" ({exc})", status=exc.status) from exc
        raise
    finally:
        probing.clear()
    return sink


def run(settings: Settings, *, env: Mapping[str, str]) -> int:
    """Run one execution with logging set up; returns the exit code.

    Storage is opened and probed first: missing credentials exit 2 before the job exists.
    """
    from app.job import Job
    from app.logs import get_logger
    from app.reports import render_final_summary, render_skip_report

    log = get_logger()
    try:
        sink = open_sink(settings)
    except StorageConfigError as exc:
        log.error("storage_config_invalid", error_class=exc.error_class, variable="GCS_BUCKET",
                  bucket=settings.gcs_bucket, status=exc.status, error=str(exc))
        return _exit_code(exc)
    except StorageCredentialsError as exc:
        log.error("storage_credentials_missing", error_class=exc.error_class,
                  variable="GCS_BUCKET", bucket=settings.gcs_bucket, error=str(exc))
        return _exit_code(exc)
    except JobError as exc:
        log.error("run_failed", error_class=exc.error_class, error=str(exc))
        return _exit_code(exc)
    job = Job(settings, sink=sink)

    done = threading.Event()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        job.interrupt()

        def hard_exit() -> None:
            if not done.wait(SIGTERM_GRACE):
                log.error("run_failed", error_class="interrupted",
                          error=f"still running {SIGTERM_GRACE:g}s after SIGTERM")
                os._exit(EXIT_RETRY)

        threading.Thread(target=hard_exit, name="sigterm-deadline", daemon=True).start()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        result = job.run()
    except JobError as exc:
        log.error("run_failed", error_class=exc.error_class, error=str(exc))
        return _exit_code(exc)
    except Exception as exc:
        log.exception("run_failed", error_class="other", error=f"{type(exc).__name__}: {exc}")
        return _exit_code(exc)
    finally:
        done.set()
        signal.signal(signal.SIGTERM, previous)

    summary: dict[str, Any] = result.summary
    language = settings.log_language
    level = {"succeeded": "info", "partial": "warning"}.get(result.status, "error")
    getattr(log, level)("run_summary", message=render_final_summary(summary, language),
                        summary_status=result.status, exit_code=result.exit_code,
                        **{k: summary.get(k) for k in ("records", "pages", "requests", "retries",
                                                       "duration_seconds", "result")})
    if summary.get("skipped_pages"):
        log.warning("skip_report", message=render_skip_report(summary["skipped_pages"], language),
                    skipped_pages=summary["skipped_pages"])
    return result.exit_code


def report_config_error(exc: ConfigError, env: Mapping[str, str]) -> None:
    """One ERROR entry (and a line on stderr) naming the variable, the value and what is
    expected, wholly in the log language (Chinese unless LOG_LANGUAGE=en, even when
    LOG_LANGUAGE itself is the bad value). The `expected` field stays English."""
    from app.logs import get_logger
    from app.messages import render_message

    setup_logging(None, env)
    language = "en" if env.get("LOG_LANGUAGE") == "en" else "zh"
    expected = exc.expected_in(language) if isinstance(exc, InvalidSetting) else exc.expected
    message = render_message("config_invalid", {"variable": exc.variable, "value": str(exc.value),
                                                "expected": expected}, language)
    get_logger().error("config_invalid", message=message, error_class="config",
                       variable=exc.variable, value=str(exc.value), expected=exc.expected)
    print(message, file=sys.stderr)


