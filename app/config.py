"""Settings: every environment variable the job reads, its default, and its validation.

The environment is read once, in `load_settings`, and the resulting frozen `Settings` is passed
down; nothing else in the package reads `os.environ`. Command-line flags override the variable of
the same name (`--start-date` == `START_DATE`) and nothing more.

Every value is checked before anything is fetched: a bad one raises `InvalidSetting` (a
`ConfigError`, exit 2) naming the variable, the value (secrets shown as `<hidden>`) and what is
expected, the last in both log languages so a message is wholly Chinese or wholly English.
Besides the values themselves, `load_settings` checks that END_DATE and START_DATE are not after
today (in TIMEZONE) and, when GCS_BUCKET is unset, that OUTPUT_DIR is a folder it can write in
(creating it if missing). Storage credentials are checked by `python -m app` when it opens the
sink, before the job starts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import errno
import ipaddress
import json
import math
import re
import secrets
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from app.errors import ConfigError

DEFAULT_BASE_URL = "https://api.involve.asia/api"
DEFAULT_FETCH_CONCURRENCY = 4
"""Requests in flight per account; chosen by `python -m bench` (see README, Performance)."""

MAX_REQUEST_TIMEOUT = 3600.0
"""REQUEST_TIMEOUT's upper bound (the contract's): a page that takes an hour is not coming."""

CURRENCIES = ("USD", "MYR")
"""The values PREFERRED_CURRENCY accepts (besides empty: the account's local currency)."""


@dataclass(frozen=True)
class Text:
    """A human-readable text in both log languages."""

    en: str
    zh: str

    def pick(self, language: str) -> str:
        """English for "en", Chinese otherwise (the default language)."""
        return self.en if language == "en" else self.zh


class InvalidSetting(ConfigError):
    """A ConfigError whose expectation is also given in Chinese (`expected` stays English)."""

    def __init__(self, variable: str, value: object, expected: Text) -> None:
        super().__init__(variable, value, expected.en)
        self.expected_zh = expected.zh

    def expected_in(self, language: str) -> str:
        """What a valid value looks like, in `language` ("en", else Chinese)."""
        return self.expected if language == "en" else self.expected_zh


class _Invalid(ValueError):
    """Raised by a parser that can say more precisely than its Option what is wrong."""

    def __init__(self, expected: Text) -> None:
        super().__init__(expected.en)
        self.text = expected


@dataclass(frozen=True)
class Account:
    """One Involve Asia publisher account: a name for logs and paths, and its key/secret."""

    name: str
    key: str
    secret: str = field(repr=False)


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
    preferred_currency: str | None = "USD"
    """Sent as `filters[preferred_currency]`; None: the account's local currency (nothing sent)."""
    snapshot_max_age: float = 21600.0
    """Seconds: a complete day snapshot younger than this is reused, not fetched again."""
    storage_emulator_host: str | None = None
    """STORAGE_EMULATOR_HOST: a GCS emulator's base URL (tests, compose); the GCS sink then uses
    it with anonymous credentials. Unset in production."""

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


def _request_timeout(text: str) -> float:
    value = _positive_float(text)
    if value > MAX_REQUEST_TIMEOUT:
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


def _currency(text: str) -> str | None:
    """`USD` / `MYR` in any case (`usd` -> `USD`); empty or blank: the local currency (None)."""
    code = text.strip().upper()
    if not code:
        return None
    if code not in CURRENCIES:
        raise ValueError
    return code


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
    """An account name: trimmed, non-empty, printable, no path separators, not `.` or `..`."""
    cleaned = text.strip()
    if (not cleaned or not cleaned.isprintable() or any(c in cleaned for c in "/\\")
            or cleaned in {".", ".."}):
        raise ValueError
    return cleaned


_BUCKET_CHARS = re.compile(r"[a-z0-9](?:[a-z0-9._-]*[a-z0-9])?")


def _bucket(text: str) -> str:
    """A bucket name GCS accepts (https://cloud.google.com/storage/docs/buckets#naming)."""
    if not _BUCKET_CHARS.fullmatch(text):
        raise ValueError
    if "." in text:
        if len(text) > 222 or any(not part or len(part) > 63 for part in text.split(".")):
            raise ValueError
    elif len(text) > 63:
        raise ValueError
    if len(text) < 3:
        raise ValueError
    try:
        ipaddress.ip_address(text)
    except ValueError:
        pass
    else:
        raise ValueError
    if text.startswith("goog") or "google" in text or "g00gle" in text:
        raise ValueError
    return text


_ACCOUNTS_RULE = Text(
    'a JSON list of {"name","key","secret"} objects: names unique and printable, without "/",'
    ' no key+secret twice',
    '由 {"name","key","secret"} 对象组成的 JSON 列表：名称唯一、可打印、不含 "/"，'
    "同一组 key+secret 不得出现两次",
)


def _json_type(value: object) -> Text:
    for kind, en, zh in ((dict, "an object", "对象"), (list, "a list", "列表"), (str, "a string", "字符串"),
                         (bool, "a boolean", "布尔值"), (int, "a number", "数字"),
                         (float, "a number", "数字")):
        if isinstance(value, kind):
            return Text(en, zh)
    return Text("null", "null")


def _entry(index: int, name: object = None) -> Text:
    """"entry 2 ("b")" / "第2项（"b"）": which entry of INVOLVE_ASIA_ACCOUNTS, 1-based."""
    if isinstance(name, str) and name.strip():
        shown = json.dumps(name.strip(), ensure_ascii=False)  # escapes control characters
        return Text(f"entry {index} ({shown})", f"第{index}项（{shown}）")
    return Text(f"entry {index}", f"第{index}项")


def _accounts(text: str) -> tuple[Account, ...]:
    """INVOLVE_ASIA_ACCOUNTS; every error says which entry is wrong and how, never a secret."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        where = Text(f"line {exc.lineno} column {exc.colno} (char {exc.pos})",
                     f"第{exc.lineno}行第{exc.colno}列（第{exc.pos}个字符）")
        raise _Invalid(Text(f"valid JSON, but it is not ({exc.msg} at {where.en}); {_ACCOUNTS_RULE.en}",
                            f"合法的 JSON，但解析失败（位置：{where.zh}）；{_ACCOUNTS_RULE.zh}")) from exc
    if not isinstance(raw, list):
        got = _json_type(raw)
        raise _Invalid(Text(f"{_ACCOUNTS_RULE.en}; got {got.en}",
                            f"{_ACCOUNTS_RULE.zh}；实际是{got.zh}"))
    if not raw:
        raise _Invalid(Text(f"at least one account; got an empty list. {_ACCOUNTS_RULE.en}",
                            f"至少一个账户，实际是空列表。{_ACCOUNTS_RULE.zh}"))
    accounts: list[Account] = []
    by_name: dict[str, int] = {}
    by_credentials: dict[tuple[str, str], int] = {}
    for index, item in enumerate(raw, start=1):
        if not isinstance(item, dict):
            got = _json_type(item)
            raise _Invalid(Text(f'entry {index}: a {{"name","key","secret"}} object; got {got.en}',
                                f'第{index}项：应为 {{"name","key","secret"}} 对象，实际是{got.zh}'))
        where = _entry(index, item.get("name"))
        name_value = item.get("name")
        try:
            if not isinstance(name_value, str):
                raise ValueError
            name = _name(name_value)
        except ValueError:
            raise _Invalid(Text(
                f'{where.en}: a "name" that is a non-empty printable string without "/", "\\"'
                ' or control characters, not "." or ".."',
                f'{where.zh}："name" 应为非空、可打印的字符串，不含 "/"、"\\" 或控制字符，'
                '且不是 "." 或 ".."',
            )) from None
        secret = item.get("secret")
        if not isinstance(secret, str) or not secret:
            raise _Invalid(Text(f'{where.en}: a non-empty "secret" string',
                                f'{where.zh}："secret" 应为非空字符串'))
        key = item.get("key")
        if key is not None and not isinstance(key, str):
            raise _Invalid(Text(f'{where.en}: a "key" string (or none: "general")',
                                f'{where.zh}："key" 应为字符串（省略时为 "general"）'))
        account = Account(name=name, key=key or "general", secret=secret)
        if name in by_name:
            first = by_name[name]
            raise _Invalid(Text(f"{where.en}: a name not already used by entry {first}",
                                f"{where.zh}：名称与第{first}项重复"))
        if (account.key, account.secret) in by_credentials:
            first = by_credentials[(account.key, account.secret)]
            other = _entry(first, accounts[first - 1].name)
            raise _Invalid(Text(
                f"{where.en}: a key and secret not already used by {other.en}"
                " (the same account twice would land every conversion twice)",
                f"{where.zh}：key 和 secret 与{other.zh}相同（同一账户出现两次会使每条记录重复）",
            ))
        by_name[name] = index
        by_credentials[(account.key, account.secret)] = index
        accounts.append(account)
    return tuple(accounts)


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


_SECONDS_POSITIVE = Text("seconds > 0", "大于 0 的秒数")
_SECONDS_NON_NEGATIVE = Text("seconds >= 0", "大于等于 0 的秒数")
_TRUE_FALSE = Text("true or false", "true 或 false")
_DATE = Text("YYYY-MM-DD", "YYYY-MM-DD 格式的日期")
_NAME = Text('a printable name without "/", "\\" or control characters, not "." or ".."',
             '可打印的名称，不含 "/"、"\\" 或控制字符，且不是 "." 或 ".."')
_BUCKET = Text(
    "a GCS bucket name: 3-63 characters (up to 222 with dots, at most 63 between two dots) of"
    ' lowercase letters, digits, "-", "_" and ".", starting and ending with a letter or digit;'
    ' not an IP address, not starting with "goog", not containing "google"',
    "GCS 存储桶名称：3-63 个字符（含点号时最多 222 个，点号之间最多 63 个），只含小写字母、"
    '数字、"-"、"_" 和 "."，以字母或数字开头和结尾；不能是 IP 地址，不能以 "goog" 开头，'
    '不能包含 "google"',
)


def _int_text(low: int, high: int | None = None) -> Text:
    if high is None:
        return Text(f"an integer >= {low}", f"大于等于 {low} 的整数")
    return Text(f"an integer from {low} to {high}", f"{low} 到 {high} 之间的整数")


OPTIONS: tuple[Option, ...] = (
    Option("INVOLVE_ASIA_BASE_URL", DEFAULT_BASE_URL, _url, Text("an http(s) URL", "http(s) 网址"),
           "API base URL"),
    Option("INVOLVE_ASIA_API_KEY", "general", str, Text("a string", "字符串"), "API key"),
    Option("INVOLVE_ASIA_API_SECRET", None, str, Text("a non-empty string", "非空字符串"),
           "API secret (required unless INVOLVE_ASIA_ACCOUNTS)", secret=True),
    Option("INVOLVE_ASIA_ACCOUNT_NAME", "default", _name, _NAME,
           "name shown in logs and paths for the single account (printable, no '/')"),
    Option("INVOLVE_ASIA_ACCOUNTS", None, _accounts, _ACCOUNTS_RULE,
           'several accounts as a JSON list of {"name","key","secret"} (overrides the single-account'
           " settings); names unique, printable, no '/'; no key+secret twice", secret=True),
    Option("START_DATE", None, _date, _DATE, "first day, inclusive (default: see DEFAULT_DATE_RANGE)"),
    Option("END_DATE", None, _date, _DATE,
           "last day, inclusive, not after today (default: yesterday in TIMEZONE)"),
    Option("DEFAULT_DATE_RANGE", "1", _int_range(1, 3660), _int_text(1, 3660),
           "days back from yesterday when dates are unset"),
    Option("TIMEZONE", "Asia/Shanghai", _timezone,
           Text("an IANA time zone", "IANA 时区名（如 Asia/Shanghai）"),
           "time zone for 'yesterday' and 'today'"),
    Option("PREFERRED_CURRENCY", "USD", _currency,
           Text("USD or MYR, or empty for the account's local currency",
                "USD 或 MYR，或留空表示账户的本地货币"),
           "sent as filters[preferred_currency] on every conversions request: USD or MYR (any case);"
           " set it empty for the account's local currency", empty_allowed=True),
    Option("SNAPSHOT_MAX_AGE", "21600", _non_negative_float, _SECONDS_NON_NEGATIVE,
           "seconds; a complete day snapshot in the same currency that is younger than this, or was"
           " written by this same execution (a task retry), is reused, not fetched again; 0 fetches"
           " every day anew except this execution's own"),
    Option("REQUEST_TIMEOUT", "30", _request_timeout,
           Text(f"seconds > 0, at most {MAX_REQUEST_TIMEOUT:g}",
                f"大于 0、不超过 {MAX_REQUEST_TIMEOUT:g} 的秒数"),
           f"hard cap on one request, whatever the server does (at most {MAX_REQUEST_TIMEOUT:g}s)"),
    Option("MAX_RETRY_ATTEMPTS", "5", _int_range(0, 100), _int_text(0, 100),
           "retries per page after the first try"),
    Option("RETRY_BACKOFF", "10,20,30,40,60", _backoff,
           Text("comma-separated seconds >= 0", "逗号分隔的秒数（均大于等于 0）"),
           "waits before retry 1..n, seconds (the last repeats)"),
    Option("RATE_LIMIT_DELAY", "30", _non_negative_float, _SECONDS_NON_NEGATIVE,
           "wait after a 429 without Retry-After"),
    Option("REQUEST_DELAY", "0.5", _non_negative_float, _SECONDS_NON_NEGATIVE,
           "minimum spacing between requests of one account"),
    Option("REQUESTS_PER_MINUTE", "60", _positive_float, Text("a number > 0", "大于 0 的数"),
           "client-side throttle per account"),
    Option("FETCH_CONCURRENCY", str(DEFAULT_FETCH_CONCURRENCY), _int_range(1, 32), _int_text(1, 32),
           "requests in flight per account"),
    Option("MAX_SKIPPED_PAGES", "10", _int_range(0), _int_text(0),
           "more skipped pages than this fails the run"),
    Option("DEFAULT_PAGE_LIMIT", "100", _int_range(1, 100), _int_text(1, 100),
           "page size (API max 100)"),
    Option("MAX_RECORDS_LIMIT", None, _int_range(1), _int_text(1), "stop after this many records"),
    Option("RESOURCE_MONITOR_ENABLED", "true", _bool, _TRUE_FALSE, "resource reports on/off"),
    Option("RESOURCE_REPORT_INTERVAL", "60", _positive_float, _SECONDS_POSITIVE, "heartbeat period"),
    Option("STALL_TIMEOUT", "120", _positive_float, _SECONDS_POSITIVE,
           "no progress this long: log stacks and resources"),
    Option("LOG_FORMAT", None, _choice("json", "console"), Text("json or console", "json 或 console"),
           "default: json on Cloud Run or without a terminal, console on a terminal"),
    Option("LOG_LANGUAGE", "zh", _choice("zh", "en"), Text("zh or en", "zh 或 en"),
           "language of human-readable messages"),
    Option("GCS_BUCKET", None, _bucket, _BUCKET, "result bucket (unset: write to OUTPUT_DIR)"),
    Option("GCS_PREFIX", "conversions", str, Text("an object prefix", "对象前缀"),
           "object prefix in the bucket"),
    Option("OUTPUT_DIR", "./output", Path, Text("a writable folder", "可写的文件夹"),
           "local output root when GCS_BUCKET is unset; must be a writable folder (created if missing)"),
    Option("FAIL_ON_SKIPPED_PAGES", "true", _bool, _TRUE_FALSE,
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
    except _Invalid as exc:
        raise InvalidSetting(opt.env, "<hidden>" if opt.secret else raw, exc.text) from exc
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
            ints[name] = _int_range(low)(raw)
        except ValueError as exc:
            raise InvalidSetting(name, raw, _int_text(low)) from exc
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


def load_settings(
    env: Mapping[str, str],
    overrides: Mapping[str, str | None] | None = None,
    *,
    today: dt.date | None = None,
    now: dt.datetime | None = None,
) -> Settings:
    """Validate the environment (plus flag overrides) into Settings, or raise InvalidSetting.

    `now` (timezone-aware) is the start time: it names a local execution and gives today's date
    in TIMEZONE. `today` overrides just the date. Tests pass them; production leaves them to
    the clock. When GCS_BUCKET is unset this creates OUTPUT_DIR if it is missing.
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
        if not secret:
            raise InvalidSetting("INVOLVE_ASIA_API_SECRET", "(unset)",
                                 Text("the API secret, or INVOLVE_ASIA_ACCOUNTS",
                                      "API 密钥（secret），或设置 INVOLVE_ASIA_ACCOUNTS"))
        accounts = (Account(values["INVOLVE_ASIA_ACCOUNT_NAME"],
                            values["INVOLVE_ASIA_API_KEY"], secret),)

    if now is None:
        now = dt.datetime.now(dt.UTC)
    if today is None:
        today = now.astimezone(ZoneInfo(values["TIMEZONE"])).date()
    start, end = _date_range(values, today)

    task = _cloud_run_task(env, now)
    if values["GCS_BUCKET"] is None:
        _check_output_dir(str(raws["OUTPUT_DIR"]), values["OUTPUT_DIR"])

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
        task=task,
        preferred_currency=values["PREFERRED_CURRENCY"],
        snapshot_max_age=values["SNAPSHOT_MAX_AGE"],
        storage_emulator_host=env.get("STORAGE_EMULATOR_HOST") or None,
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def overrides_from(args: argparse.Namespace) -> dict[str, str | None]:
    return {opt.env: getattr(args, opt.env) for opt in OPTIONS}
