"""Settings: every environment variable the job reads, its default, and its validation.

The environment is read once, in `load_settings`, and the resulting frozen `Settings` is passed
down; nothing else in the job reads `os.environ` (the library facade `app.involve_asia` passes
it here at each call, with its host's `config` on top). Command-line flags override the variable of
the same name (`--start-date` == `START_DATE`) and nothing more.

Every value is checked before anything is fetched: a bad one raises `InvalidSetting` (a
`ConfigError`, exit 2) naming the variable, the value (secrets shown as `<hidden>`) and what is
expected, the last in both log languages so a message is wholly Chinese or wholly English.
Besides the values themselves, `load_settings` checks that END_DATE and START_DATE are not after
today (in TIMEZONE); when GCS_BUCKET is unset, that OUTPUT_DIR is a folder it can write in
(creating it if missing); when it is set (and no emulator is), that GOOGLE_APPLICATION_CREDENTIALS,
if set, names a file. Storage credentials themselves are checked by `python -m app` when it opens
the sink, before the job starts. A secret given as a command-line flag is refused
(`SecretOnCommandLine`): every user of the machine can read a process's command line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import errno
import os
import secrets
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from app import values as v
from app.errors import ConfigError
from app.messages import in_language
from app.values import CURRENCIES, MAX_REQUEST_TIMEOUT, Account, Invalid, Problem, Text

__all__ = ["CURRENCIES", "MAX_REQUEST_TIMEOUT", "Account", "CloudRunTask", "InvalidSetting",
           "Settings", "Text", "load_settings"]

DEFAULT_BASE_URL = "https://api.involve.asia/api"
DEFAULT_FETCH_CONCURRENCY = 4
"""Requests in flight per account; chosen by `python -m bench` (see README, Performance)."""

class InvalidSetting(ConfigError):
    """A ConfigError whose expectation (and problem, if any) is also given in Chinese
    (`expected` and `problem` stay English). `value` None: the variable is not set."""

    message_key = "config_invalid"
    """The catalog entry (app.messages) of the human message, see `message_event`."""

    def __init__(self, variable: str, value: object, expected: Text, *,
                 problem: Text | None = None) -> None:
        super().__init__(variable, value, expected.en, problem=problem.en if problem else None)
        self.expected_zh = expected.zh
        self.problem_text = problem

    def expected_in(self, language: str) -> str:
        """What a valid value looks like, in `language` ("en", else Chinese)."""
        return in_language(language, self.expected_zh, self.expected)

    def problem_in(self, language: str) -> str | None:
        """What is wrong with the value, in `language`; None when the expectation says it."""
        if self.problem_text is None:
            return None
        return in_language(language, self.problem_text.zh, self.problem_text.en)

    def message_event(self) -> str:
        """Which message says it: the value is missing, wrong in a way `problem` names, or
        not what is expected. None of them writes `VARIABLE=` before a hidden value."""
        if self.value is None:
            return "config_missing"
        if self.problem_text is not None:
            return "config_problem"
        return self.message_key


class SecretOnCommandLine(InvalidSetting):
    """A secret given as a command-line flag: refused, since every user of the machine can
    read a process's command line (`ps`, /proc/PID/cmdline). The value is never shown."""

    message_key = "config_secret_flag"

    def __init__(self, option: Option) -> None:
        super().__init__(option.env, "<hidden>", Text(
            f"the environment variable {option.env}, not the flag {option.flag}",
            f"环境变量 {option.env}，而不是命令行参数 {option.flag}"))
        self.flag = option.flag

    def message_event(self) -> str:
        return self.message_key


@dataclass(frozen=True)
class CloudRunTask:
    """What Cloud Run tells a task about itself (defaults describe a lone local run).

    `load_settings` names a local execution `local-YYYYMMDDTHHMMSSZ-xxxx` (UTC start time and
    4 random hex digits) when CLOUD_RUN_EXECUTION is unset, so two local runs never share one.
    """

    job: str = "local"
    execution: str = "local"
    index: int = 0
    count: int = 1
    attempt: int = 0

    @property
    def on_cloud_run(self) -> bool:
        return self.job != "local"


@dataclass(frozen=True)
class Option:
    """One setting: its variable, default, parser, what a valid value looks like, and its help.

    An empty value counts as unset (the default applies) unless `empty_allowed`: then the
    parser gets the empty string and decides what it means.
    """

    env: str
    default: str | None
    parse: Callable[[str], Any]
    expected: Text
    help: str
    secret: bool = False
    empty_allowed: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.env.lower().replace("_", "-")


_INPUTS: tuple[Option, ...] = (
    Option("INVOLVE_ASIA_API_KEY", "general", str, Text("a string", "字符串"), "API key"),
    Option("INVOLVE_ASIA_API_SECRET", None, str, Text("a non-empty string", "非空字符串"),
           "API secret (required unless INVOLVE_ASIA_ACCOUNTS); environment only: the flag is"
           " refused, since every user of the machine can read a command line", secret=True),
    Option("INVOLVE_ASIA_ACCOUNT_NAME", "default", v.account_name, v.NAME,
           "name shown in logs and paths for the single account (printable, no '/')"),
    Option("INVOLVE_ASIA_ACCOUNTS", None, v.accounts, v.ACCOUNTS_RULE,
           'several accounts as a JSON list of {"name","key","secret"} (overrides the single-account'
           " settings); names unique, printable, no '/'; no key+secret twice; environment only,"
           " like the secret", secret=True),
    Option("START_DATE", None, v.iso_date, v.DATE,
           "first day, YYYY-MM-DD, inclusive (default: see DEFAULT_DATE_RANGE)"),
    Option("END_DATE", None, v.iso_date, v.DATE,
           "last day, YYYY-MM-DD, inclusive, not after today (default: yesterday in TIMEZONE)"),
    Option("DEFAULT_DATE_RANGE", "1", v.int_range(1, 3660), v.int_text(1, 3660),
           "days back from yesterday when dates are unset"),
)
"""Variables that several Settings fields are made of (accounts, the date range)."""


def _setting(env: str, default: str | None, parse: Callable[[str], Any], expected: Text,
             help: str, **flags: bool) -> Any:
    """A Settings field filled from one variable: the variable, default, parser, what a valid
    value looks like and the help text, declared once, beside the field."""
    return field(metadata={"option": Option(env, default, parse, expected, help, **flags)})


@dataclass(frozen=True)
class Settings:
    """The validated configuration of one job execution.

    Each field filled from one variable declares it right here (`_setting`); the rest are made
    of several variables (`_INPUTS`) or come from Cloud Run."""

    accounts: tuple[Account, ...]
    """INVOLVE_ASIA_ACCOUNTS, or the single account of INVOLVE_ASIA_API_KEY/_SECRET/_ACCOUNT_NAME."""
    start_date: dt.date
    end_date: dt.date
    """START_DATE / END_DATE, or DEFAULT_DATE_RANGE days back from yesterday in TIMEZONE."""
    task: CloudRunTask
    """What Cloud Run tells the task (CLOUD_RUN_*), or a lone local execution."""
    storage_emulator_host: str | None
    """STORAGE_EMULATOR_HOST: a GCS emulator's base URL (tests, compose); the GCS sink then uses
    it with anonymous credentials. Unset in production."""
    base_url: str = _setting(
        "INVOLVE_ASIA_BASE_URL", DEFAULT_BASE_URL, v.url, Text("an http(s) URL", "http(s) 网址"),
        "API base URL")
    timezone: str = _setting(
        "TIMEZONE", "Asia/Shanghai", v.timezone,
        Text("an IANA time zone", "IANA 时区名（如 Asia/Shanghai）"),
        "IANA time zone name (e.g. Asia/Shanghai, UTC) for 'yesterday' and 'today'")
    preferred_currency: str | None = _setting(
        "PREFERRED_CURRENCY", "USD", v.currency,
        Text("USD or MYR, or empty for the account's local currency",
             "USD 或 MYR，或留空表示账户的本地货币"),
        "sent as filters[preferred_currency] on every conversions request: USD or MYR (any"
        " case); set it empty for the account's local currency", empty_allowed=True)
    snapshot_max_age: float = _setting(
        "SNAPSHOT_MAX_AGE", "21600", v.non_negative_float, v.SECONDS_NON_NEGATIVE,
        "seconds; a complete day snapshot in the same currency that is younger than this, or"
        " was written by this same execution (a task retry), is reused, not fetched again; 0"
        " fetches every day anew except this execution's own")
    allow_snapshot_shrink: bool = _setting(
        "ALLOW_SNAPSHOT_SHRINK", "false", v.boolean, v.TRUE_FALSE,
        "true lets this execution replace a complete day snapshot with a complete fetch that"
        " lacks some of its records (upstream really deleted them); false keeps the snapshot,"
        " lists the day in kept_days (reason shrank) and exits 3")
    request_timeout: float = _setting(
        "REQUEST_TIMEOUT", "30", v.request_timeout,
        Text(f"seconds > 0, at most {MAX_REQUEST_TIMEOUT:g}",
             f"大于 0、不超过 {MAX_REQUEST_TIMEOUT:g} 的秒数"),
        f"seconds, > 0 and at most {MAX_REQUEST_TIMEOUT:g}; hard cap on one request, whatever the"
        " server does")
    storage_timeout: float = _setting(
        "STORAGE_TIMEOUT", "60", v.request_timeout,
        Text(f"seconds > 0, at most {MAX_REQUEST_TIMEOUT:g}",
             f"大于 0、不超过 {MAX_REQUEST_TIMEOUT:g} 的秒数"),
        "seconds, > 0 and at most 3600; hard cap on one storage request (an upload chunk, a"
        " compose, a read), whatever GCS does; a request cut at it is retried like any"
        " transient storage error (an operation is retried for twice this, at most 120 s)")
    max_retry_attempts: int = _setting(
        "MAX_RETRY_ATTEMPTS", "5", v.int_range(0, 100), v.int_text(0, 100),
        "retries per page after the first try, 0 to 100")
    retry_backoff: tuple[float, ...] = _setting(
        "RETRY_BACKOFF", "10,20,30,40,60", v.backoff,
        Text("comma-separated seconds >= 0", "逗号分隔的秒数（均大于等于 0）"),
        "waits before retry 1..n, seconds (the last repeats)")
    rate_limit_delay: float = _setting(
        "RATE_LIMIT_DELAY", "30", v.non_negative_float, v.SECONDS_NON_NEGATIVE,
        "seconds to wait after a 429 (rate limited) answer without Retry-After")
    request_delay: float = _setting(
        "REQUEST_DELAY", "0.5", v.non_negative_float, v.SECONDS_NON_NEGATIVE,
        "seconds; minimum spacing between two requests of one account (a floor under"
        " REQUESTS_PER_MINUTE's pacing)")
    requests_per_minute: float = _setting(
        "REQUESTS_PER_MINUTE", "60", v.positive_float, Text("a number > 0", "大于 0 的数"),
        "requests per minute per account, sent evenly paced (client-side throttle)")
    fetch_concurrency: int = _setting(
        "FETCH_CONCURRENCY", str(DEFAULT_FETCH_CONCURRENCY), v.int_range(1, 32), v.int_text(1, 32),
        "requests in flight per account, 1 to 32")
    max_skipped_pages: int = _setting(
        "MAX_SKIPPED_PAGES", "10", v.int_range(0), v.int_text(0),
        "more skipped pages than this fails the run")
    page_limit: int = _setting(
        "DEFAULT_PAGE_LIMIT", "100", v.int_range(1, 100), v.int_text(1, 100),
        "records per page, 1 to 100 (the API's maximum)")
    max_records: int | None = _setting(
        "MAX_RECORDS_LIMIT", None, v.int_range(1), v.int_text(1),
        "stop after this many records, counted per task across all its accounts and days: each"
        " record fetched and written once (duplicates and days reused from snapshots do not"
        " count); the run then ends succeeded, the days it cut short stored as incomplete")
    resource_monitor_enabled: bool = _setting(
        "RESOURCE_MONITOR_ENABLED", "true", v.boolean, v.TRUE_FALSE,
        "resource reports on or off: true or false")
    resource_report_interval: float = _setting(
        "RESOURCE_REPORT_INTERVAL", "60", v.positive_float, v.SECONDS_POSITIVE,
        "seconds between two heartbeat resource reports; also the least time between two retry"
        " diagnoses of one account")
    stall_timeout: float = _setting(
        "STALL_TIMEOUT", "120", v.positive_float, v.SECONDS_POSITIVE,
        "seconds without a completed page (declared back-off waits aside) before every"
        " thread's stack and the resources are logged")
    log_format: str | None = _setting(
        "LOG_FORMAT", None, v.choice("json", "console"), Text("json or console", "json 或 console"),
        "json or console; default: json on Cloud Run or without a terminal, console on a"
        " terminal")
    log_language: str = _setting(
        "LOG_LANGUAGE", "zh", v.choice("zh", "en"), Text("zh or en", "zh 或 en"),
        "language of human-readable messages: zh (Chinese) or en (English)")
    gcs_bucket: str | None = _setting(
        "GCS_BUCKET", None, v.bucket, v.BUCKET, "result bucket (unset: write to OUTPUT_DIR)")
    gcs_prefix: str = _setting(
        "GCS_PREFIX", "conversions", v.prefix, Text("an object prefix", "对象前缀"),
        "object prefix in the bucket")
    output_dir: Path = _setting(
        "OUTPUT_DIR", "./output", v.path, Text("a writable folder", "可写的文件夹"),
        "local output root when GCS_BUCKET is unset; must be a writable folder (created if"
        " missing)")
    fail_on_skipped_pages: bool = _setting(
        "FAIL_ON_SKIPPED_PAGES", "true", v.boolean, v.TRUE_FALSE,
        "true or false; true: exit 3 when pages stayed skipped")

    @property
    def range_name(self) -> str:
        """`{START_DATE}_{END_DATE}`: the folder of this run's output."""
        return f"{self.start_date.isoformat()}_{self.end_date.isoformat()}"

    def days(self) -> list[dt.date]:
        n = (self.end_date - self.start_date).days
        return [self.start_date + dt.timedelta(days=i) for i in range(n + 1)]

    def secrets(self) -> list[str]:
        return [a.secret for a in self.accounts]


_DIRECT: tuple[tuple[str, Option], ...] = tuple(
    (f.name, f.metadata["option"]) for f in fields(Settings) if "option" in f.metadata)
OPTIONS: tuple[Option, ...] = (_DIRECT[0][1], *_INPUTS, *(opt for name, opt in _DIRECT[1:]))
"""Every variable, in the order --help and the README list them."""

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
            "credentials; 3 finished but pages stayed skipped, a day stayed short, or a refresh "
            "would have shrunk a snapshot; 130 stopped by Ctrl-C. `python -m app status` shows "
            "the day store. Cloud Run sets CLOUD_RUN_JOB, "
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
    except Invalid as exc:
        raise InvalidSetting(opt.env, "<hidden>" if opt.secret else raw, exc.text) from exc
    except Problem as exc:
        raise InvalidSetting(opt.env, "<hidden>" if opt.secret else raw, opt.expected,
                             problem=exc.text) from exc
    except (ValueError, TypeError) as exc:
        raise InvalidSetting(opt.env, "<hidden>" if opt.secret else raw, opt.expected) from exc


def _local_execution(now: dt.datetime) -> str:
    """`local-YYYYMMDDTHHMMSSZ-xxxx`: the UTC start time and 4 random hex digits."""
    stamp = now.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"local-{stamp}-{secrets.token_hex(2)}"


def _cloud_run_task(env: Mapping[str, str], now: dt.datetime) -> CloudRunTask:
    values = {name: env.get(name) for name in _CLOUD_RUN_VARS}
    ints: dict[str, int] = {}
    for name, low in (("CLOUD_RUN_TASK_INDEX", 0), ("CLOUD_RUN_TASK_COUNT", 1),
                      ("CLOUD_RUN_TASK_ATTEMPT", 0)):
        raw = values[name]
        if raw is None or raw == "":
            ints[name] = low
            continue
        try:
            ints[name] = v.int_range(low)(raw)
        except ValueError as exc:
            raise InvalidSetting(name, raw, v.int_text(low)) from exc
    if ints["CLOUD_RUN_TASK_INDEX"] >= ints["CLOUD_RUN_TASK_COUNT"]:
        count = ints["CLOUD_RUN_TASK_COUNT"]
        raise InvalidSetting("CLOUD_RUN_TASK_INDEX", ints["CLOUD_RUN_TASK_INDEX"],
                             Text(f"less than CLOUD_RUN_TASK_COUNT ({count})",
                                  f"小于 CLOUD_RUN_TASK_COUNT（{count}）"))
    return CloudRunTask(
        job=values["CLOUD_RUN_JOB"] or "local",
        execution=values["CLOUD_RUN_EXECUTION"] or _local_execution(now),
        index=ints["CLOUD_RUN_TASK_INDEX"],
        count=ints["CLOUD_RUN_TASK_COUNT"],
        attempt=ints["CLOUD_RUN_TASK_ATTEMPT"],
    )


def _check_output_dir(raw: str, path: Path) -> None:
    """OUTPUT_DIR must be a folder the job can create files in; created (with parents) if missing.

    Checked by creating and removing a file, as the job will: permission bits alone say nothing
    to root, and a read-only mount refuses writes whatever they say.
    """
    def refuse(en: str, zh: str) -> InvalidSetting:
        return InvalidSetting("OUTPUT_DIR", raw, Text(f"a writable folder; {en}", f"可写的文件夹；{zh}"))

    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise refuse("this path is a file", "该路径是一个文件") from None
    except NotADirectoryError:
        raise refuse("a part of this path is a file", "该路径的上级中有文件") from None
    except OSError as exc:
        code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        raise refuse(f"it cannot be created ({code})", f"无法创建（{code}）") from exc
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except OSError as exc:
        code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        raise refuse(f"cannot create a file in it ({code})", f"无法在其中创建文件（{code}）") from exc


def _date_range(values: Mapping[str, Any], today: dt.date) -> tuple[dt.date, dt.date]:
    """START_DATE..END_DATE (default: DEFAULT_DATE_RANGE days ending yesterday), none after today."""
    yesterday = today - dt.timedelta(days=1)
    end: dt.date = values["END_DATE"] or yesterday
    start: dt.date = values["START_DATE"] or end - dt.timedelta(days=values["DEFAULT_DATE_RANGE"] - 1)
    not_after_today = Text(f"a date on or before today ({today}, {values['TIMEZONE']})",
                           f"不晚于今天（{today}，{values['TIMEZONE']}）的日期")
    if values["START_DATE"] is not None and start > today:
        raise InvalidSetting("START_DATE", start.isoformat(), not_after_today)
    if end > today:
        raise InvalidSetting("END_DATE", end.isoformat(), not_after_today)
    if start > end:
        raise InvalidSetting("START_DATE", start.isoformat(),
                             Text(f"a date on or before END_DATE ({end})", f"不晚于 END_DATE（{end}）的日期"))
    return start, end


def _check_credentials_file(raw: str | None) -> None:
    """GOOGLE_APPLICATION_CREDENTIALS, when set, must name a file: the storage client would
    only say "not found" deep in a traceback, after the job has started."""
    if not raw:
        return
    path = Path(raw)
    expected = Text("the path of a service-account key file (JSON)", "服务账号密钥文件（JSON）的路径")
    full = "" if path.is_absolute() else os.path.abspath(raw)
    en, zh = (f" ({full})", f"（{full}）") if full else ("", "")
    if not path.exists():
        raise InvalidSetting("GOOGLE_APPLICATION_CREDENTIALS", raw, expected, problem=Text(
            f"this file does not exist{en}", f"该文件不存在{zh}"))
    if not path.is_file():
        raise InvalidSetting("GOOGLE_APPLICATION_CREDENTIALS", raw, expected, problem=Text(
            f"this is not a file{en}", f"该路径不是文件{zh}"))


def refuse_secret_flags(overrides: Mapping[str, str | None]) -> None:
    """A secret given as a command-line flag raises SecretOnCommandLine: the command line of a
    process is readable by every user of the machine. Secrets come from the environment."""
    for opt in OPTIONS:
        if opt.secret and overrides.get(opt.env) is not None:
            raise SecretOnCommandLine(opt)


def load_settings(
    env: Mapping[str, str],
    overrides: Mapping[str, str | None] | None = None,
    *,
    today: dt.date | None = None,
    now: dt.datetime | None = None,
    require_secret: bool = True,
    check_output_dir: bool = True,
) -> Settings:
    """Validate the environment (plus flag overrides) into Settings, or raise InvalidSetting.

    `now` (timezone-aware) is the start time: it names a local execution and gives today's date
    in TIMEZONE. `today` overrides just the date. Tests pass them; production leaves them to
    the clock. When GCS_BUCKET is unset this creates OUTPUT_DIR if it is missing.

    A library caller (`app.involve_asia`) passes `require_secret=False` (no secret gives an
    account with an empty secret, refused when it authenticates) and `check_output_dir=False`
    (nothing is created until it writes).
    """
    merged: dict[str, str] = dict(env)
    for name, value in (overrides or {}).items():
        if value is not None:
            merged[name] = value
    raws: dict[str, str | None] = {}
    values: dict[str, Any] = {}
    for opt in OPTIONS:
        raw = merged.get(opt.env)
        if raw is None or (raw == "" and not opt.empty_allowed):
            raw = opt.default
        raws[opt.env] = raw
        values[opt.env] = None if raw is None else _parse(opt, raw)

    accounts: tuple[Account, ...]
    if values["INVOLVE_ASIA_ACCOUNTS"] is not None:
        accounts = values["INVOLVE_ASIA_ACCOUNTS"]
    else:
        secret = values["INVOLVE_ASIA_API_SECRET"]
        if not secret and require_secret:
            raise InvalidSetting("INVOLVE_ASIA_API_SECRET", None,
                                 Text("the API secret, or INVOLVE_ASIA_ACCOUNTS",
                                      "API 密钥（secret）或 INVOLVE_ASIA_ACCOUNTS"))
        accounts = (Account(values["INVOLVE_ASIA_ACCOUNT_NAME"],
                            values["INVOLVE_ASIA_API_KEY"], secret),)

    if now is None:
        now = dt.datetime.now(dt.UTC)
    if today is None:
        today = now.astimezone(ZoneInfo(values["TIMEZONE"])).date()
    start, end = _date_range(values, today)

    task = _cloud_run_task(env, now)
    if values["GCS_BUCKET"] is None:
        if check_output_dir:
            _check_output_dir(str(raws["OUTPUT_DIR"]), values["OUTPUT_DIR"])
    elif not env.get("STORAGE_EMULATOR_HOST"):  # an emulator is reached without credentials
        _check_credentials_file(env.get("GOOGLE_APPLICATION_CREDENTIALS"))

    return Settings(
        accounts=accounts,
        start_date=start,
        end_date=end,
        task=task,
        storage_emulator_host=env.get("STORAGE_EMULATOR_HOST") or None,
        **{name: values[opt.env] for name, opt in _DIRECT},
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def overrides_from(args: argparse.Namespace) -> dict[str, str | None]:
    return {opt.env: getattr(args, opt.env) for opt in OPTIONS}
