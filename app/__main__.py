"""`python -m app`: read the settings once, run one job execution, exit with the contract's code.

0 all data written · 1 failed, a retry may help · 2 bad configuration or credentials ·
3 finished but pages stayed skipped (FAIL_ON_SKIPPED_PAGES=true).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

from app.config import (
    CloudRunTask,
    InvalidSetting,
    Settings,
    load_settings,
    overrides_from,
    parse_args,
)
from app.errors import ConfigError, JobError, StorageCredentialsError
from app.summary import EXIT_CONFIG, EXIT_RETRY

if TYPE_CHECKING:
    from app.sinks import Sink

SIGTERM_GRACE = 9.0
"""After SIGTERM the job stops itself; if it has not exited after this long, exit 1 regardless."""

MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # glibc's mallopt parameter number


def limit_malloc_arenas(env: Mapping[str, str]) -> bool:
    """Cap glibc's malloc arenas, as MALLOC_ARENA_MAX=2 would, unless that variable is set.

    glibc gives threads that allocate at once their own arenas (up to 8 per core), and a freed
    page body in one arena is not reused by another. With the job's ~20 threads each parsing
    45 KB bodies, peak RSS of a 1 M-record run grew by ~13 MB over a 10 k-record run's with the
    default, and stayed flat with 2 arenas at the same CPU (bench `volume`). Done here so it
    holds however the job is started. Returns whether the cap was applied (glibc only).
    """
    if "MALLOC_ARENA_MAX" in env or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(_M_ARENA_MAX, MALLOC_ARENAS))


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


def _error_class(exc: JobError) -> str:
    """The contract's error class: missing storage credentials are bad configuration."""
    return "config" if isinstance(exc, StorageCredentialsError) else exc.error_class


def open_sink(settings: Settings) -> Sink:
    """The job's sink, opened and probed with one cheap listing, before anything is fetched.

    The listing (of this execution's own run folder, empty for a new execution) makes the GCS
    client find its credentials and reach the bucket now, not after a day of fetching.
    """
    from app.sinks import make_sink

    sink = make_sink(bucket=settings.gcs_bucket, prefix=settings.gcs_prefix,
                     output_dir=settings.output_dir)
    sink.list(f"runs/{settings.range_name}/{settings.task.execution}/")
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
    except StorageCredentialsError as exc:
        log.error("storage_credentials_missing", error_class="config", variable="GCS_BUCKET",
                  bucket=settings.gcs_bucket, error=str(exc))
        return EXIT_CONFIG
    except JobError as exc:
        log.error("run_failed", error_class=exc.error_class, error=str(exc))
        return EXIT_RETRY
    try:
        job = Job(settings, sink=sink)
    except JobError as exc:
        log.error("run_failed", error_class=_error_class(exc), error=str(exc))
        return EXIT_CONFIG if isinstance(exc, StorageCredentialsError) else EXIT_RETRY

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
        log.error("run_failed", error_class=_error_class(exc), error=str(exc))
        return EXIT_CONFIG if isinstance(exc, StorageCredentialsError) else EXIT_RETRY
    except Exception as exc:
        log.exception("run_failed", error_class="other", error=f"{type(exc).__name__}: {exc}")
        return EXIT_RETRY
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


def _report_config_error(exc: ConfigError, env: Mapping[str, str]) -> None:
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


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    environ = dict(os.environ if env is None else env)
    limit_malloc_arenas(environ)  # before any thread starts
    args = parse_args(argv)
    if args.demo:
        from app.demo import run_demo

        return run_demo(environ, overrides_from(args))
    overrides = overrides_from(args)
    try:
        settings = load_settings(environ, overrides)
    except ConfigError as exc:
        _report_config_error(exc, {**environ, **{k: v for k, v in overrides.items() if v is not None}})
        return EXIT_CONFIG
    setup_logging(settings, environ)
    return run(settings, env=environ)


if __name__ == "__main__":
    sys.exit(main())
