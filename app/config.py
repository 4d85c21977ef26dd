"""Settings: every environment variable the job reads, its default, and its validation.

The environment is read once, in `load_settings`, and the resulting frozen `Settings` is passed
down; nothing else in the package reads `os.environ`. Command-line flags override the variable of
the same name (`--start-date` == `START_DATE`) and nothing more.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from app.errors import ConfigError

DEFAULT_BASE_URL = "https://api.involve.asia/api"
DEFAULT_FETCH_CONCURRENCY = 4
"""Requests in flight per account; chosen by `python -m bench` (see README, Performance)."""


@dataclass(frozen=True)
class Account:
    """One Involve Asia publisher account: a name for logs and paths, and its key/secret."""

    name: str
    key: str
    secret: str = field(repr=False)


@dataclass(frozen=True)
class CloudRunTask:
    """What Cloud Run tells a task about itself (defaults describe a lone local run)."""

    job: str = "local"
    execution: str = "local"
    index: int = 0
    count: int = 1
    attempt: int = 0

    @property
    def on_cloud_run(self) -> bool:
        return self.job != "local"


@dataclass(frozen=True)
class Settings:
    """The validated configuration of one job execution."""

    base_url: str
    accounts: tuple[Account, ...]
    start_date: dt.date
    end_date: dt.date
    timezone: str
    request_timeout: float
    max_retry_attempts: int
    retry_backoff: tuple[float, ...]
    rate_limit_delay: float
    request_delay: float
    requests_per_minute: float
    fetch_concurrency: int
    max_skipped_pages: int
    page_limit: int
    max_records: int | None
    resource_monitor_enabled: bool
    resource_report_interval: float
    stall_timeout: float
    log_format: str | None
    log_language: str
    gcs_bucket: str | None
    gcs_prefix: str
    output_dir: Path
    fail_on_skipped_pages: bool
    task: CloudRunTask = CloudRunTask()

    @property
    def range_name(self) -> str:
        """`{START_DATE}_{END_DATE}`: the folder of this run's output."""
        return f"{self.start_date.isoformat()}_{self.end_date.isoformat()}"

    def days(self) -> list[dt.date]:
        n = (self.end_date - self.start_date).days
        return [self.start_date + dt.timedelta(days=i) for i in range(n + 1)]

    def secrets(self) -> list[str]:
        return [a.secret for a in self.accounts]


# ---------------------------------------------------------------- parsers (value -> typed, or raise)


def _positive_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise ValueError
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise ValueError
    return value


def _int_range(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < low or (high is not None and value > high):
            raise ValueError
        return value

    return parse


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError


def _date(text: str) -> dt.date:
    return dt.date.fromisoformat(text.strip())


def _backoff(text: str) -> tuple[float, ...]:
    values = tuple(_non_negative_float(part) for part in text.split(","))
    if not values:
        raise ValueError
    return values


def _choice(*options: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in options:
            raise ValueError
        return text

    return parse


def _timezone(text: str) -> str:
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError from exc
    return text


def _url(text: str) -> str:
    if not text.startswith(("http://", "https://")):
        raise ValueError
    return text.rstrip("/")


def _name(text: str) -> str:
    cleaned = text.strip()
    if not cleaned or any(c in cleaned for c in "/\\\n") or cleaned in {".", ".."}:
        raise ValueError
    return cleaned


def _accounts(text: str) -> tuple[Account, ...]:
    raw = json.loads(text)
    if not isinstance(raw, list) or not raw:
        raise ValueError
    accounts = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("secret"), str) or not item["secret"]:
            raise ValueError
        accounts.append(
            Account(
                name=_name(str(item.get("name", ""))),
                key=str(item.get("key") or "general"),
                secret=item["secret"],
            )
        )
    if len({a.name for a in accounts}) != len(accounts):
        raise ValueError
    return tuple(accounts)


@dataclass(frozen=True)
class Option:
    """One setting: its variable, default, parser, what a valid value looks like, and its help."""

    env: str
    default: str | None
    parse: Callable[[str], Any]
    expected: str
    help: str
    secret: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.env.lower().replace("_", "-")


OPTIONS: tuple[Option, ...] = (
    Option("INVOLVE_ASIA_BASE_URL", DEFAULT_BASE_URL, _url, "an http(s) URL", "API base URL"),
    Option("INVOLVE_ASIA_API_KEY", "general", str, "a string", "API key"),
    Option("INVOLVE_ASIA_API_SECRET", None, str, "a non-empty string",
           "API secret (required unless INVOLVE_ASIA_ACCOUNTS)", secret=True),
    Option("INVOLVE_ASIA_ACCOUNT_NAME", "default", _name, "a name without '/'",
           "name shown in logs and paths for the single account"),
    Option("INVOLVE_ASIA_ACCOUNTS", None, _accounts,
           'a JSON list of {"name","key","secret"} with unique names',
           "several accounts as JSON (overrides the single-account settings)", secret=True),
    Option("START_DATE", None, _date, "YYYY-MM-DD", "first day, inclusive (default: see DEFAULT_DATE_RANGE)"),
    Option("END_DATE", None, _date, "YYYY-MM-DD", "last day, inclusive (default: yesterday in TIMEZONE)"),
    Option("DEFAULT_DATE_RANGE", "1", _int_range(1, 3660), "an integer from 1 to 3660",
           "days back from yesterday when dates are unset"),
    Option("TIMEZONE", "Asia/Shanghai", _timezone, "an IANA time zone", "time zone for 'yesterday'"),
    Option("REQUEST_TIMEOUT", "30", _positive_float, "seconds > 0",
           "hard cap on one request, whatever the server does"),
    Option("MAX_RETRY_ATTEMPTS", "5", _int_range(0, 100), "an integer from 0 to 100",
           "retries per page after the first try"),
    Option("RETRY_BACKOFF", "10,20,30,40,60", _backoff, "comma-separated seconds >= 0",
           "waits before retry 1..n, seconds (the last repeats)"),
    Option("RATE_LIMIT_DELAY", "30", _non_negative_float, "seconds >= 0",
           "wait after a 429 without Retry-After"),
    Option("REQUEST_DELAY", "0.5", _non_negative_float, "seconds >= 0",
           "minimum spacing between requests of one account"),
    Option("REQUESTS_PER_MINUTE", "60", _positive_float, "a number > 0",
           "client-side throttle per account"),
    Option("FETCH_CONCURRENCY", str(DEFAULT_FETCH_CONCURRENCY), _int_range(1, 32),
           "an integer from 1 to 32", "requests in flight per account"),
    Option("MAX_SKIPPED_PAGES", "10", _int_range(0), "an integer >= 0",
           "more skipped pages than this fails the run"),
    Option("DEFAULT_PAGE_LIMIT", "100", _int_range(1, 100), "an integer from 1 to 100",
           "page size (API max 100)"),
    Option("MAX_RECORDS_LIMIT", None, _int_range(1), "an integer >= 1", "stop after this many records"),
    Option("RESOURCE_MONITOR_ENABLED", "true", _bool, "true or false", "resource reports on/off"),
    Option("RESOURCE_REPORT_INTERVAL", "60", _positive_float, "seconds > 0", "heartbeat period"),
    Option("STALL_TIMEOUT", "120", _positive_float, "seconds > 0",
           "no progress this long: log stacks and resources"),
    Option("LOG_FORMAT", None, _choice("json", "console"), "json or console",
           "default: json on Cloud Run or without a terminal, console on a terminal"),
    Option("LOG_LANGUAGE", "zh", _choice("zh", "en"), "zh or en", "language of human-readable messages"),
    Option("GCS_BUCKET", None, _name, "a bucket name", "result bucket (unset: write to OUTPUT_DIR)"),
    Option("GCS_PREFIX", "conversions", str, "an object prefix", "object prefix in the bucket"),
    Option("OUTPUT_DIR", "./output", Path, "a path", "local output root when GCS_BUCKET is unset"),
    Option("FAIL_ON_SKIPPED_PAGES", "true", _bool, "true or false",
           "exit 3 when pages stayed skipped"),
)

_CLOUD_RUN_VARS = ("CLOUD_RUN_JOB", "CLOUD_RUN_EXECUTION", "CLOUD_RUN_TASK_INDEX",
                   "CLOUD_RUN_TASK_COUNT", "CLOUD_RUN_TASK_ATTEMPT")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m app",
        description=(
            "Fetch Involve Asia conversions for a date range into gzip NDJSON on GCS or a local "
            "folder. Every setting is an environment variable; the flag of the same name overrides it."
        ),
        epilog=(
            "Exit codes: 0 all data written; 1 failed, a retry may help; 2 bad configuration or "
            "credentials; 3 finished but pages stayed skipped. Cloud Run sets CLOUD_RUN_JOB, "
            "CLOUD_RUN_EXECUTION, CLOUD_RUN_TASK_INDEX, CLOUD_RUN_TASK_COUNT, CLOUD_RUN_TASK_ATTEMPT."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--demo", action="store_true",
                        help="run end to end against the bundled simulator, no cloud, no network")
    for opt in OPTIONS:
        default = "(unset)" if opt.default is None else opt.default
        parser.add_argument(opt.flag, dest=opt.env, metavar=opt.env,
                            help=f"{opt.help} [env {opt.env}, default {default}]")
    return parser


def _parse(opt: Option, raw: str) -> Any:
    try:
        return opt.parse(raw)
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        shown = "<hidden>" if opt.secret else raw
        raise ConfigError(opt.env, shown, opt.expected) from exc


def _cloud_run_task(env: Mapping[str, str]) -> CloudRunTask:
    values = {name: env.get(name) for name in _CLOUD_RUN_VARS}
    ints: dict[str, int] = {}
    for name, low in (("CLOUD_RUN_TASK_INDEX", 0), ("CLOUD_RUN_TASK_COUNT", 1),
                      ("CLOUD_RUN_TASK_ATTEMPT", 0)):
        raw = values[name]
        if raw is None or raw == "":
            ints[name] = low
            continue
        try:
            ints[name] = _int_range(low)(raw)
        except ValueError as exc:
            raise ConfigError(name, raw, f"an integer >= {low}") from exc
    if ints["CLOUD_RUN_TASK_INDEX"] >= ints["CLOUD_RUN_TASK_COUNT"]:
        raise ConfigError("CLOUD_RUN_TASK_INDEX", ints["CLOUD_RUN_TASK_INDEX"],
                          f"less than CLOUD_RUN_TASK_COUNT ({ints['CLOUD_RUN_TASK_COUNT']})")
    return CloudRunTask(
        job=values["CLOUD_RUN_JOB"] or "local",
        execution=values["CLOUD_RUN_EXECUTION"] or "local",
        index=ints["CLOUD_RUN_TASK_INDEX"],
        count=ints["CLOUD_RUN_TASK_COUNT"],
        attempt=ints["CLOUD_RUN_TASK_ATTEMPT"],
    )


def load_settings(
    env: Mapping[str, str],
    overrides: Mapping[str, str | None] | None = None,
    *,
    today: dt.date | None = None,
) -> Settings:
    """Validate the environment (plus flag overrides) into Settings, or raise ConfigError.

    `today` is the current date in TIMEZONE; tests pass it, production leaves it to the clock.
    """
    merged: dict[str, str] = {k: v for k, v in env.items() if v != ""}
    for name, value in (overrides or {}).items():
        if value is not None:
            merged[name] = value
    values: dict[str, Any] = {}
    for opt in OPTIONS:
        raw = merged.get(opt.env, opt.default)
        values[opt.env] = None if raw is None else _parse(opt, raw)

    accounts: tuple[Account, ...]
    if values["INVOLVE_ASIA_ACCOUNTS"] is not None:
        accounts = values["INVOLVE_ASIA_ACCOUNTS"]
    else:
        secret = values["INVOLVE_ASIA_API_SECRET"]
        if not secret:
            raise ConfigError("INVOLVE_ASIA_API_SECRET", "(unset)",
                              "the API secret, or INVOLVE_ASIA_ACCOUNTS")
        accounts = (Account(values["INVOLVE_ASIA_ACCOUNT_NAME"],
                            values["INVOLVE_ASIA_API_KEY"], secret),)

    if today is None:
        today = dt.datetime.now(ZoneInfo(values["TIMEZONE"])).date()
    yesterday = today - dt.timedelta(days=1)
    end: dt.date = values["END_DATE"] or yesterday
    start: dt.date = values["START_DATE"] or end - dt.timedelta(days=values["DEFAULT_DATE_RANGE"] - 1)
    if start > end:
        raise ConfigError("START_DATE", start.isoformat(), f"a date on or before END_DATE ({end})")

    return Settings(
        base_url=values["INVOLVE_ASIA_BASE_URL"],
        accounts=accounts,
        start_date=start,
        end_date=end,
        timezone=values["TIMEZONE"],
        request_timeout=values["REQUEST_TIMEOUT"],
        max_retry_attempts=values["MAX_RETRY_ATTEMPTS"],
        retry_backoff=values["RETRY_BACKOFF"],
        rate_limit_delay=values["RATE_LIMIT_DELAY"],
        request_delay=values["REQUEST_DELAY"],
        requests_per_minute=values["REQUESTS_PER_MINUTE"],
        fetch_concurrency=values["FETCH_CONCURRENCY"],
        max_skipped_pages=values["MAX_SKIPPED_PAGES"],
        page_limit=values["DEFAULT_PAGE_LIMIT"],
        max_records=values["MAX_RECORDS_LIMIT"],
        resource_monitor_enabled=values["RESOURCE_MONITOR_ENABLED"],
        resource_report_interval=values["RESOURCE_REPORT_INTERVAL"],
        stall_timeout=values["STALL_TIMEOUT"],
        log_format=values["LOG_FORMAT"],
        log_language=values["LOG_LANGUAGE"],
        gcs_bucket=values["GCS_BUCKET"],
        gcs_prefix=values["GCS_PREFIX"].strip("/"),
        output_dir=values["OUTPUT_DIR"],
        fail_on_skipped_pages=values["FAIL_ON_SKIPPED_PAGES"],
        task=_cloud_run_task(env),
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def overrides_from(args: argparse.Namespace) -> dict[str, str | None]:
    return {opt.env: getattr(args, opt.env) for opt in OPTIONS}
