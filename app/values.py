"""Setting values: the parsers that turn a variable's text into a typed value (or raise), and
what a valid value looks like, in both log languages. `app.config` declares which variable each
parser reads; this module knows nothing of the environment.
"""

from __future__ import annotations

import calendar
import datetime as dt
import ipaddress
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MAX_REQUEST_TIMEOUT = 3600.0
"""REQUEST_TIMEOUT's upper bound (the contract's): a page that takes an hour is not coming."""

CURRENCIES = ("USD", "MYR")
"""The values PREFERRED_CURRENCY accepts (besides empty: the account's local currency)."""


@dataclass(frozen=True)
class Text:
    """A human-readable text in both log languages."""

    en: str
    zh: str


class Invalid(ValueError):
    """Raised by a parser that can say more precisely than its Option what is wrong."""

    def __init__(self, expected: Text) -> None:
        super().__init__(expected.en)
        self.text = expected


class Problem(ValueError):
    """Raised by a parser when the value has the expected shape but cannot be right: saying
    what is wrong with it (a date that does not exist) helps more than restating the shape."""

    def __init__(self, problem: Text) -> None:
        super().__init__(problem.en)
        self.text = problem


@dataclass(frozen=True)
class Account:
    """One Involve Asia publisher account: a name for logs and paths, and its key/secret."""

    name: str
    key: str
    secret: str = field(repr=False)


def positive_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise ValueError
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise ValueError
    return value


def request_timeout(text: str) -> float:
    value = positive_float(text)
    if value > MAX_REQUEST_TIMEOUT:
        raise ValueError
    return value


def int_range(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < low or (high is not None and value > high):
            raise ValueError
        return value

    return parse


def boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError


_ISO_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")


def iso_date(text: str) -> dt.date:
    """A date: YYYY-MM-DD (other ISO 8601 spellings Python reads pass too). A YYYY-MM-DD that
    names no day of the calendar (2025-02-30, 2025-13-01) raises Problem saying so."""
    cleaned = text.strip()
    shape = _ISO_DATE.fullmatch(cleaned)
    if shape is None:
        return dt.date.fromisoformat(cleaned)
    year, month, day = (int(part) for part in shape.groups())
    try:
        return dt.date(year, month, day)
    except ValueError:
        raise Problem(_no_such_date(year, month)) from None


def _no_such_date(year: int, month: int) -> Text:
    if not 1 <= month <= 12:
        return Text("no such date (months run from 01 to 12)", "该日期不存在（月份只有 01 到 12）")
    if year < dt.MINYEAR:
        return Text("no such date (years start at 0001)", "该日期不存在（年份从 0001 开始）")
    days = calendar.monthrange(year, month)[1]
    return Text(f"no such date ({_MONTHS[month - 1]} {year} has {days} days)",
                f"该日期不存在（{year}年{month}月只有{days}天）")


def backoff(text: str) -> tuple[float, ...]:
    values = tuple(non_negative_float(part) for part in text.split(","))
    if not values:
        raise ValueError
    return values


def choice(*options: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in options:
            raise ValueError
        return text

    return parse


def currency(text: str) -> str | None:
    """`USD` / `MYR` in any case (`usd` -> `USD`); empty or blank: the local currency (None)."""
    code = text.strip().upper()
    if not code:
        return None
    if code not in CURRENCIES:
        raise ValueError
    return code


def timezone(text: str) -> str:
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError from exc
    return text


def url(text: str) -> str:
    if not text.startswith(("http://", "https://")):
        raise ValueError
    return text.rstrip("/")


def path(text: str) -> Path:
    return Path(text)


def prefix(text: str) -> str:
    return text.strip("/")


def account_name(text: str) -> str:
    """An account name: trimmed, non-empty, printable, no path separators, not `.` or `..`."""
    cleaned = text.strip()
    if (not cleaned or not cleaned.isprintable() or any(c in cleaned for c in "/\\")
            or cleaned in {".", ".."}):
        raise ValueError
    return cleaned


_BUCKET_CHARS = re.compile(r"[a-z0-9](?:[a-z0-9._-]*[a-z0-9])?")


def bucket(text: str) -> str:
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


ACCOUNTS_RULE = Text(
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


def accounts(text: str) -> tuple[Account, ...]:
    """INVOLVE_ASIA_ACCOUNTS; every error says which entry is wrong and how, never a secret."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        where = Text(f"line {exc.lineno} column {exc.colno} (char {exc.pos})",
                     f"第{exc.lineno}行第{exc.colno}列（第{exc.pos}个字符）")
        raise Invalid(Text(f"valid JSON, but it is not ({exc.msg} at {where.en}); {ACCOUNTS_RULE.en}",
                            f"合法的 JSON，但解析失败（位置：{where.zh}）；{ACCOUNTS_RULE.zh}")) from exc
    if not isinstance(raw, list):
        got = _json_type(raw)
        raise Invalid(Text(f"{ACCOUNTS_RULE.en}; got {got.en}",
                            f"{ACCOUNTS_RULE.zh}；实际是{got.zh}"))
    if not raw:
        raise Invalid(Text(f"at least one account; got an empty list. {ACCOUNTS_RULE.en}",
                            f"至少一个账户，实际是空列表。{ACCOUNTS_RULE.zh}"))
    accounts: list[Account] = []
    by_name: dict[str, int] = {}
    by_credentials: dict[tuple[str, str], int] = {}
    for index, item in enumerate(raw, start=1):
        if not isinstance(item, dict):
            got = _json_type(item)
            raise Invalid(Text(f'entry {index}: a {{"name","key","secret"}} object; got {got.en}',
                                f'第{index}项：应为 {{"name","key","secret"}} 对象，实际是{got.zh}'))
        where = _entry(index, item.get("name"))
        name_value = item.get("name")
        try:
            if not isinstance(name_value, str):
                raise ValueError
            name = account_name(name_value)
        except ValueError:
            raise Invalid(Text(
                f'{where.en}: a "name" that is a non-empty printable string without "/", "\\"'
                ' or control characters, not "." or ".."',
                f'{where.zh}："name" 应为非空、可打印的字符串，不含 "/"、"\\" 或控制字符，'
                '且不是 "." 或 ".."',
            )) from None
        secret = item.get("secret")
        if not isinstance(secret, str) or not secret:
            raise Invalid(Text(f'{where.en}: a non-empty "secret" string',
                                f'{where.zh}："secret" 应为非空字符串'))
        key = item.get("key")
        if key is not None and not isinstance(key, str):
            raise Invalid(Text(f'{where.en}: a "key" string (or none: "general")',
                                f'{where.zh}："key" 应为字符串（省略时为 "general"）'))
        account = Account(name=name, key=key or "general", secret=secret)
        if name in by_name:
            first = by_name[name]
            raise Invalid(Text(f"{where.en}: a name not already used by entry {first}",
                                f"{where.zh}：名称与第{first}项重复"))
        if (account.key, account.secret) in by_credentials:
            first = by_credentials[(account.key, account.secret)]
            other = _entry(first, accounts[first - 1].name)
            raise Invalid(Text(
                f"{where.en}: a key and secret not already used by {other.en}"
                " (the same account twice would land every conversion twice)",
                f"{where.zh}：key 和 secret 与{other.zh}相同（同一账户出现两次会使每条记录重复）",
            ))
        by_name[name] = index
        by_credentials[(account.key, account.secret)] = index
        accounts.append(account)
    return tuple(accounts)


SECONDS_POSITIVE = Text("seconds > 0", "大于 0 的秒数")
SECONDS_NON_NEGATIVE = Text("seconds >= 0", "大于等于 0 的秒数")
TRUE_FALSE = Text("true or false", "true 或 false")
DATE = Text("YYYY-MM-DD", "YYYY-MM-DD 格式的日期")
NAME = Text('a printable name without "/", "\\" or control characters, not "." or ".."',
             '可打印的名称，不含 "/"、"\\" 或控制字符，且不是 "." 或 ".."')
BUCKET = Text(
    "a GCS bucket name: 3-63 characters (up to 222 with dots, at most 63 between two dots) of"
    ' lowercase letters, digits, "-", "_" and ".", starting and ending with a letter or digit;'
    ' not an IP address, not starting with "goog", not containing "google"',
    "GCS 存储桶名称：3-63 个字符（含点号时最多 222 个，点号之间最多 63 个），只含小写字母、"
    '数字、"-"、"_" 和 "."，以字母或数字开头和结尾；不能是 IP 地址，不能以 "goog" 开头，'
    '不能包含 "google"',
)


def int_text(low: int, high: int | None = None) -> Text:
    if high is None:
        return Text(f"an integer >= {low}", f"大于等于 {low} 的整数")
    return Text(f"an integer from {low} to {high}", f"{low} 到 {high} 之间的整数")
