"""One execution with everything around it: logging set up from the settings, storage opened
and probed, the SIGTERM and SIGINT (Ctrl-C) handlers, the job run, its summary logged. Shared
by `python -m app` and the demo, so neither entry point imports the other.
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
from app.messages import language_code
from app.outcome import EXIT_INTERRUPTED, EXIT_RETRY, StopReason, decide
from app.store import RunLayout

if TYPE_CHECKING:
    from app.sinks import Sink

SIGTERM_GRACE = 9.0
"""After SIGTERM (or SIGINT) the job stops itself; if it has not exited after this long, exit 1
(130 after SIGINT) regardless."""

STOP_SIGNALS = {signal.SIGTERM: EXIT_RETRY, signal.SIGINT: EXIT_INTERRUPTED}
"""The signals that stop a run, and the exit code of a run one of them stopped."""


def _exit_code(error: BaseException) -> int:
    """A run that ended on `error` before the job could decide: the one decision, in outcome."""
    return decide([], StopReason.FATAL, error, fail_on_skipped=True).exit_code


def setup_logging(settings: Settings | None, env: Mapping[str, str]) -> None:
    """The one log setup of every entry point: format, language and labels from the settings
    (or, before settings exist, from `env`), and the settings' secrets registered for redaction."""
    from app.logs import configure_logging, register_secret, resolve_format

    task = settings.task if settings else CloudRunTask(job=env.get("CLOUD_RUN_JOB") or "local")
    configured = settings.log_format if settings else env.get("LOG_FORMAT")
    language = settings.log_language if settings else env.get("LOG_LANGUAGE", "zh")
    fmt = resolve_format(configured if configured in ("json", "console") else None,
                         on_cloud_run=task.on_cloud_run, stdout_isatty=sys.stdout.isatty())
    configure_logging(
        fmt=fmt,
        language=language_code(language),
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


def open_sink_or_exit_code(settings: Settings) -> Sink | int:
    """`open_sink`, or the exit code of its failure, logged: a bucket that does not exist or
    storage answering 403 (storage_config_invalid) and missing credentials
    (storage_credentials_missing) exit 2 naming GCS_BUCKET. For the job and `status` alike."""
    from app.logs import get_logger

    log = get_logger()
    try:
        return open_sink(settings)
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


def run(settings: Settings, *, env: Mapping[str, str]) -> int:
    """Run one execution with logging set up; returns the exit code.

    Storage is opened and probed first: missing credentials exit 2 before the job exists.
    """
    from app.job import Job
    from app.logs import get_logger
    from app.reports import render_final_summary, render_skip_report

    log = get_logger()
    sink = open_sink_or_exit_code(settings)
    if isinstance(sink, int):
        return sink
    job = Job(settings, sink=sink)

    done = threading.Event()
    received: list[signal.Signals] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        """SIGTERM or SIGINT: the first one stops the job; a later one (a second Ctrl-C) changes
        nothing. No exception is raised into the main thread, so no traceback."""
        if received:
            return
        received.append(signal.Signals(signum))
        job.interrupt(received[0].name)

        def hard_exit() -> None:
            if not done.wait(SIGTERM_GRACE):
                log.error("run_failed", error_class="interrupted",
                          error=f"still running {SIGTERM_GRACE:g}s after {received[0].name}")
                os._exit(STOP_SIGNALS[received[0]])

        threading.Thread(target=hard_exit, name="sigterm-deadline", daemon=True).start()

    # SIGINT stays ignored where the parent ignores it (a background job of a shell script).
    previous = {signum: signal.signal(signum, on_signal) for signum in STOP_SIGNALS
                if signum != signal.SIGINT or signal.getsignal(signum) != signal.SIG_IGN}
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
        for signum, handler in previous.items():
            # Once stopped, the process is on its way out: a further Ctrl-C changes nothing.
            signal.signal(signum, signal.SIG_IGN if received and signum == signal.SIGINT
                          else handler)

    summary: dict[str, Any] = result.summary
    language = settings.log_language
    level = {"succeeded": "info", "partial": "warning"}.get(result.status, "error")
    getattr(log, level)("run_summary", message=render_final_summary(summary, language),
                        summary_status=result.status, exit_code=result.exit_code,
                        **{k: summary.get(k) for k in ("records", "pages", "requests",
                                                       "auth_requests", "retries",
                                                       "duration_seconds", "result")})
    if summary.get("skipped_pages"):
        log.warning("skip_report", message=render_skip_report(summary["skipped_pages"], language),
                    skipped_pages=summary["skipped_pages"])
    return STOP_SIGNALS[signal.SIGINT] if signal.SIGINT in received else result.exit_code


def config_error_message(exc: ConfigError, language: str) -> str:
    """The human message of a configuration error, wholly in `language`, redacted as the log
    pipeline would redact it, so the stderr line and the log entry say the same words."""
    from app.messages import render_message
    from app.redaction import redact_text

    fields: dict[str, Any] = {"variable": exc.variable, "value": str(exc.value),
                              "expected": exc.expected, "problem": exc.problem}
    event = "config_invalid"
    if isinstance(exc, InvalidSetting):
        event = exc.message_event()
        fields.update(expected=exc.expected_in(language), problem=exc.problem_in(language),
                      flag=getattr(exc, "flag", None))
    return redact_text(render_message(event, fields, language))


def report_config_error(exc: ConfigError, env: Mapping[str, str]) -> None:
    """One ERROR entry (and the same line on stderr) naming the variable, the value and what is
    expected or what is wrong, wholly in the log language (Chinese unless LOG_LANGUAGE=en, even
    when LOG_LANGUAGE itself is the bad value). The `expected` and `problem` fields stay
    English; `value` is null for a variable that is not set."""
    from app.logs import get_logger

    setup_logging(None, env)
    language = language_code(env.get("LOG_LANGUAGE"))
    message = config_error_message(exc, language)
    extra = {"problem": exc.problem} if exc.problem else {}
    get_logger().error("config_invalid", message=message, error_class="config",
                       variable=exc.variable, value=None if exc.value is None else str(exc.value),
                       expected=exc.expected, **extra)
    print(message, file=sys.stderr)
