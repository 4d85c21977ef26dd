"""The original WeeklyReporter module (`modules/involve_asia_api.py`), drop-in: a host program
replaces that file with `from app.involve_asia import *` and runs unchanged (see the contract,
"The original interface"), on this job's fetch core: the API client (`app.api`), the page plans,
the throttle and the retry policy.

Settings, in this order (the first that has a value wins; None counts as no value):

1. the constructor's `api_secret` / `api_key`;
2. the host program's `config` module (`import config`, when the host has one), read where the
   original read it: the URLs, key, secret, REQUEST_TIMEOUT, MAX_RETRY_ATTEMPTS and REQUEST_DELAY
   when a client is built (they become its attributes); PREFERRED_CURRENCY, DEFAULT_PAGE_LIMIT,
   MAX_RECORDS_LIMIT, MAX_SKIPPED_PAGES, RATE_LIMIT_DELAY, OUTPUT_DIR, DEFAULT_START_DATE /
   DEFAULT_END_DATE (/ DEFAULT_DATE_RANGE) and RESOURCE_MONITOR_ENABLED at each call, so a host
   that sets `config.MAX_RECORDS_LIMIT` after importing (its `--limit N`) is obeyed;
3. the job's environment variables (same names; START_DATE / END_DATE for the dates);
4. the job's defaults.

It is a library: importing it or building a client configures no logging of the host's (its
lines go through the `app` logger, see `app.library_log`), creates no folder (save_to_json
creates OUTPUT_DIR when it writes), and raises nothing for missing credentials
(`authenticate()` then returns False and says why).
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import psutil

from app.config import DEFAULT_BASE_URL, InvalidSetting, Settings, Text, load_settings
from app.errors import ApiUnreachable, FatalFetchError, FetchError
from app.fetch import AccountStack, DayEnded, FetchLoop, PageArrived, PageFetch, open_account
from app.library_log import LibraryLog
from app.messages import label, language_code
from app.models import Page, id_key
from app.outcome import StopReason
from app.plans import Query
from app.redaction import register_secret
from app.reports import render_final_summary, render_original_resource_report, render_skip_report
from app.resources import ResourceMonitor as SnapshotMonitor
from app.runstate import FetchTally, RunStop
from app.window import Window

__all__ = ["InvolveAsiaAPI", "ResourceMonitor"]

AUTH_PATH = "/authenticate"
CONVERSIONS_PATH = "/conversions/range"
MB = 1024 * 1024
GB = 1024 * MB

CONFIG_NAMES: tuple[tuple[str, str], ...] = (
    ("INVOLVE_ASIA_API_SECRET", "INVOLVE_ASIA_API_SECRET"),
    ("INVOLVE_ASIA_API_KEY", "INVOLVE_ASIA_API_KEY"),
    ("INVOLVE_ASIA_BASE_URL", "INVOLVE_ASIA_BASE_URL"),
    ("REQUEST_TIMEOUT", "REQUEST_TIMEOUT"),
    ("MAX_RETRY_ATTEMPTS", "MAX_RETRY_ATTEMPTS"),
    ("REQUEST_DELAY", "REQUEST_DELAY"),
    ("RATE_LIMIT_DELAY", "RATE_LIMIT_DELAY"),
    ("PREFERRED_CURRENCY", "PREFERRED_CURRENCY"),
    ("DEFAULT_PAGE_LIMIT", "DEFAULT_PAGE_LIMIT"),
    ("MAX_RECORDS_LIMIT", "MAX_RECORDS_LIMIT"),
    ("MAX_SKIPPED_PAGES", "MAX_SKIPPED_PAGES"),
    ("OUTPUT_DIR", "OUTPUT_DIR"),
    ("RESOURCE_MONITOR_ENABLED", "RESOURCE_MONITOR_ENABLED"),
    ("DEFAULT_START_DATE", "START_DATE"),
    ("DEFAULT_END_DATE", "END_DATE"),
    ("DEFAULT_DATE_RANGE", "DEFAULT_DATE_RANGE"),
)
"""(the host config's constant, the job's variable it stands for). The endpoint URLs,
INVOLVE_ASIA_AUTH_URL and INVOLVE_ASIA_CONVERSIONS_URL, stand for INVOLVE_ASIA_BASE_URL (they
win over the config's INVOLVE_ASIA_BASE_URL: the original used them)."""


# -- the host's settings ------------------------------------------------------------------------


def host_config() -> ModuleType | None:
    """The host program's `config` module (`import config`), or None when it has none."""
    try:
        return importlib.import_module("config")
    except ModuleNotFoundError as exc:
        if exc.name != "config":
            raise  # the host's config itself imports something missing: its bug, shown as is
        return None


def _as_text(value: object) -> str | None:
    """A config constant as the text of the variable it stands for; None for None."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def base_url_of(auth_url: object, conversions_url: object, *, source: str = "") -> str | None:
    """The API base URL two endpoint URLs share (None when neither is given); InvalidSetting
    when one does not end in its path or they name different bases."""
    bases: list[str] = []
    for name, url, path in (("INVOLVE_ASIA_AUTH_URL", auth_url, AUTH_PATH),
                            ("INVOLVE_ASIA_CONVERSIONS_URL", conversions_url, CONVERSIONS_PATH)):
        text = _as_text(url)
        if text is None:
            continue
        text = text.strip().rstrip("/")
        if not text.endswith(path):
            raise InvalidSetting(source + name, text,
                                 Text(f"a URL ending in {path}", f"以 {path} 结尾的网址"))
        bases.append(text[: -len(path)])
    if len(set(bases)) > 1:
        raise InvalidSetting(source + "INVOLVE_ASIA_AUTH_URL", _as_text(auth_url),
                             Text("the base URL of INVOLVE_ASIA_CONVERSIONS_URL",
                                  "与 INVOLVE_ASIA_CONVERSIONS_URL 相同的基础网址"))
    return bases[0] if bases else None


def _host_values() -> tuple[dict[str, str], dict[str, str]]:
    """What the host config gives, by the job's variable, and where each came from."""
    module = host_config()
    values: dict[str, str] = {}
    origin: dict[str, str] = {}
    if module is None:
        return values, origin
    for name, variable in CONFIG_NAMES:
        text = _as_text(getattr(module, name, None))
        if text is not None:
            values[variable], origin[variable] = text, f"config.{name}"
    base = base_url_of(getattr(module, "INVOLVE_ASIA_AUTH_URL", None),
                       getattr(module, "INVOLVE_ASIA_CONVERSIONS_URL", None), source="config.")
    if base is not None:
        values["INVOLVE_ASIA_BASE_URL"] = base
        origin["INVOLVE_ASIA_BASE_URL"] = "config.INVOLVE_ASIA_CONVERSIONS_URL"
    return values, origin


def _raw(variable: str, default: str) -> str:
    """One variable's text, host config first, then the environment (not validated)."""
    values, _ = _host_values()
    text = values.get(variable) or os.environ.get(variable) or ""
    return text.strip() or default


_DATE_VARIABLES = ("START_DATE", "END_DATE", "DEFAULT_DATE_RANGE")


def load_host_settings(api_secret: str | None = None, api_key: str | None = None, *,
                       dates: bool = False) -> Settings:
    """The settings in the order of the module docstring, validated as the job validates them
    (an invalid config constant is named as `config.NAME`). Needs no secret; creates nothing.

    The default range is read only with `dates` (for `get_conversions_default_range`): a call
    with its own dates does not depend on it. Without, the range is yesterday."""
    values, origin = _host_values()
    env = {**os.environ, **values}
    if not dates:
        for variable in _DATE_VARIABLES:
            env.pop(variable, None)
    for variable, given in (("INVOLVE_ASIA_API_SECRET", api_secret),
                            ("INVOLVE_ASIA_API_KEY", api_key)):
        if given:
            env[variable] = given
            origin.pop(variable, None)
    if api_secret or "INVOLVE_ASIA_API_SECRET" in values:
        env.pop("INVOLVE_ASIA_ACCOUNTS", None)  # one explicit account replaces the job's list
    try:
        return load_settings(env, require_secret=False, check_output_dir=False)
    except InvalidSetting as exc:
        where = origin.get(exc.variable)
        if where is None:
            raise
        raise InvalidSetting(where, exc.value, Text(exc.expected, exc.expected_zh)) from exc


def _language() -> str:
    return language_code(os.environ.get("LOG_LANGUAGE", "").strip().lower())


# -- the original's resource monitor ------------------------------------------------------------


class ResourceMonitor:
    """The original module's resource monitor, as its async sibling imports it
    (`from modules.involve_asia_api import ResourceMonitor`), on the job's own resource
    snapshots (`app.resources.ResourceMonitor`): the original's methods and result shapes (MB, GB,
    percent), and its report (`print_resource_status`), in Chinese, or English with
    LOG_LANGUAGE=en. Connectivity is checked against the API's own host (the host config's
    URLs, else INVOLVE_ASIA_BASE_URL), not a public DNS server.

    `api_url` overrides that host, `output_dir` the folder of the JSON files (default:
    OUTPUT_DIR at each call), `language` ("zh" / "en") the report's language."""

    def __init__(self, api_url: str | None = None, *,
                 output_dir: str | os.PathLike[str] | None = None,
                 language: str | None = None) -> None:
        self.api_url = api_url or _raw("INVOLVE_ASIA_BASE_URL", DEFAULT_BASE_URL)
        self.output_dir = output_dir
        self.language = language
        folder = Path(output_dir if output_dir is not None else _raw("OUTPUT_DIR", "./output"))
        self._snapshots = SnapshotMonitor(output_dir=folder, api_url=self.api_url)
        self.start_time = time.time()
        self.initial_memory = self.get_memory_usage()

    def get_memory_usage(self) -> dict[str, Any]:
        """{"rss": MB, "vms": MB, "percent"} of this process, or {"error": text}."""
        memory = self._snapshots.measure("memory")
        if "error" in memory:
            return {"error": memory["error"]}
        return {"rss": _number(memory["rss_bytes"]) / MB, "vms": _number(memory["vms_bytes"]) / MB,
                "percent": memory["percent"]}

    def get_cpu_usage(self) -> dict[str, Any]:
        """{"process_cpu", "system_cpu", "cpu_count"}: percent since the previous reading (the
        original blocked two seconds to measure one), or {"error": text}."""
        cpu = self._snapshots.measure("cpu")
        if "error" in cpu:
            return {"error": cpu["error"]}
        return {"process_cpu": cpu["process_percent"], "system_cpu": cpu["system_percent"],
                "cpu_count": cpu["cores"]}

    def get_network_info(self) -> dict[str, Any]:
        """{"total_connections", "established_connections"} of this process's internet sockets
        and the host's "network_io" counters, or {"error": text}."""
        connections = self._snapshots.measure("connections")
        if "error" in connections:
            return {"error": connections["error"]}
        try:
            counters = psutil.net_io_counters()
            io: dict[str, Any] = counters._asdict() if counters is not None else {}
        except Exception:  # counters are extra: the connection counts still stand
            io = {}
        return {"total_connections": connections["total"],
                "established_connections": connections["established"], "network_io": io}

    def get_disk_usage(self) -> dict[str, Any]:
        """{"total", "used", "free": GB, "percent"} of the disk holding OUTPUT_DIR, or
        {"error": text}."""
        disk = self._snapshots.measure("disk")
        if "error" in disk:
            return {"error": disk["error"]}
        total, used = _number(disk["total_bytes"]), _number(disk["used_bytes"])
        return {"total": total / GB, "used": used / GB, "free": _number(disk["free_bytes"]) / GB,
                "percent": used / total * 100 if total else 0.0}

    def get_json_files_info(self, output_dir: str | os.PathLike[str] | None = None
                            ) -> dict[str, Any]:
        """The .json files in `output_dir` (default OUTPUT_DIR), oldest first: {"files":
        [{"name", "size_mb", "modified"}], "total_size_mb", "count"}, or {"error": text}."""
        if output_dir is None:
            output_dir = self.output_dir
        folder = Path(output_dir if output_dir is not None else _raw("OUTPUT_DIR", "./output"))
        files: list[dict[str, Any]] = []
        try:
            if folder.is_dir():
                with os.scandir(folder) as entries:
                    for entry in entries:
                        if entry.name.endswith(".json") and entry.is_file():
                            stat = entry.stat()
                            files.append({"name": entry.name, "size_mb": stat.st_size / MB,
                                          "modified": dt.datetime.fromtimestamp(stat.st_mtime)})
        except OSError as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}
        files.sort(key=lambda item: (item["modified"], item["name"]))
        return {"files": files, "total_size_mb": sum(f["size_mb"] for f in files),
                "count": len(files)}

    def get_runtime_info(self) -> dict[str, Any]:
        """{"runtime_seconds", "runtime_formatted": "0h 25m 30s"} since this monitor was built."""
        seconds = self._snapshots.uptime()
        whole = int(seconds)
        return {"runtime_seconds": seconds,
                "runtime_formatted": f"{whole // 3600}h {whole % 3600 // 60}m {whole % 60}s"}

    def check_connectivity(self, host: str | None = None, port: int | None = None,
                           timeout: float = 5.0) -> bool:
        """Whether `host`:`port` accepts a TCP connection within `timeout` seconds; by default
        the API's own host and port."""
        if host is None:
            parts = urlsplit(self.api_url)
            host = parts.hostname or ""
            if port is None:
                port = parts.port or (443 if parts.scheme == "https" else 80)
        target = f"[{host}]" if ":" in host else host
        probe = SnapshotMonitor(output_dir=None, api_url=f"tcp://{target}:{port or 443}",
                                enabled=False, connect_timeout=timeout)
        return probe.measure("api_connectivity").get("reachable") is True

    def status(self) -> dict[str, Any]:
        """Every reading of the report, as the get_* methods return them."""
        network = self.get_network_info()
        reachable = None
        if "error" not in network:
            reachable = self._snapshots.measure("api_connectivity").get("reachable") is True
        return {"runtime": self.get_runtime_info(), "memory": self.get_memory_usage(),
                "cpu": self.get_cpu_usage(), "network": network, "connectivity": reachable,
                "disk": self.get_disk_usage(), "json_files": self.get_json_files_info()}

    def render_status(self, prefix: str = "", show_details: bool = True) -> str:
        """The report `print_resource_status` prints, as text."""
        language = self.language or _language()
        return render_original_resource_report(prefix, self.status(), language,
                                               show_details=show_details)

    def print_resource_status(self, prefix: str = "", show_details: bool = True) -> None:
        """Print the original's resource report (a blank line before and after, as it did)."""
        print(f"\n{self.render_status(prefix, show_details)}\n", flush=True)


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


# -- the original's API client ------------------------------------------------------------------


class InvolveAsiaAPI:
    """The original WeeklyReporter module's API client, on this job's fetch core.

    `get_conversions(start, end)` pages the range as one `/conversions/range` query (the job
    pages one day at a time), retries each page with RETRY_BACKOFF's waits (RATE_LIMIT_DELAY
    after a 429 without Retry-After), skips a page after its last retry, retries the skipped
    pages once more at the end, stops after more than MAX_SKIPPED_PAGES skips or at
    MAX_RECORDS_LIMIT records. It returns the original envelope, or None when nothing came back
    or `authenticate()` has not succeeded. `iter_conversions` streams the same records instead.

    The original's attributes: `api_secret`, `api_key`, `auth_url`, `conversions_url`, `token`
    (set by a successful `authenticate()`), `resource_monitor`, `request_timeout`, `max_retries`,
    `request_delay` (read at each call: a host may change them), `skipped_pages` (the numbers of
    the pages that stayed skipped, over every call).

    `settings` (instead of the host config and the environment), `sleep` and `clock` are hooks
    for tests.
    """

    def __init__(self, api_secret: str | None = None, api_key: str | None = None, *,
                 settings: Settings | None = None, sleep: Callable[[float], object] | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        self._fixed = settings
        if settings is None:
            settings = load_host_settings(api_secret, api_key)
        self.settings = settings
        first = settings.accounts[0]
        self.api_secret: str | None = api_secret or first.secret or None
        self.api_key: str = api_key or first.key
        self.account_name = first.name
        base = settings.base_url.rstrip("/")
        self.auth_url = base + AUTH_PATH
        self.conversions_url = base + CONVERSIONS_PATH
        self.token: str | None = None
        self.request_timeout: float = settings.request_timeout
        self.max_retries: int = settings.max_retry_attempts
        self.request_delay: float = settings.request_delay
        self.skipped_pages: list[int] = []
        self.resource_monitor = ResourceMonitor(
            api_url=base, language=settings.log_language,
            output_dir=settings.output_dir if self._fixed is not None else None)
        self._stats_lock = threading.Lock()
        self.stats: dict[str, Any] = {"pages": 0, "requests": 0, "auth_requests": 0,
                                      "retries": {}, "rereads": 0,
                                      "records": 0, "duration_seconds": 0.0}
        if self.api_secret:
            register_secret(self.api_secret)
        self._sleep = sleep or time.sleep
        self._clock = clock or time.monotonic
        self._context: dict[str, Any] = {"account": first.name}
        """The account label of the current call: the API client's own lines name it too."""
        self._log = LibraryLog(settings.log_language, self._context)
        self._stack: AccountStack | None = None
        self._built: tuple[object, ...] | None = None
        self._skips: list[dict[str, Any]] = []
        self._labels: list[str] = []
        self._last: dict[str, Any] = {}
        self._range: tuple[dt.date, dt.date] = (settings.start_date, settings.end_date)

    @property
    def base_url(self) -> str:
        """The API base URL `auth_url` and `conversions_url` share."""
        return base_url_of(self.auth_url, self.conversions_url) or self.settings.base_url

    def _settings_now(self, *, dates: bool = False) -> Settings:
        """The settings read at each call (the host may have changed its config since); the
        default range only with `dates`."""
        return self._fixed if self._fixed is not None else load_host_settings(dates=dates)

    def _api_client(self, settings: Settings | None = None) -> AccountStack:
        """The account's client stack (`fetch.open_account`, as the job opens it) for the current
        attributes and settings; opened again when the host changed one (it then signs in again
        on its first request)."""
        settings = settings or self.settings
        base = self.base_url
        key = (base, self.api_key, self.api_secret, float(self.request_timeout),
               float(self.request_delay), int(self.max_retries), settings.retry_backoff,
               settings.rate_limit_delay)
        if self._stack is None or key != self._built:
            if self._stack is not None:
                self._stack.close()
            self._stack = open_account(
                base_url=base, key=self.api_key, secret=self.api_secret or "",
                request_timeout=float(self.request_timeout),
                requests_per_minute=self.settings.requests_per_minute,
                request_delay=float(self.request_delay),
                currency=self.settings.preferred_currency, max_retries=int(self.max_retries),
                backoff=settings.retry_backoff, rate_limit_delay=settings.rate_limit_delay,
                clock=self._clock, sleep=self._sleep, log=self._log, on_token=self._took_token,
                requests=_RequestStats(self.stats, self._stats_lock))
            self._built = key
        return self._stack

    def _took_token(self, token: str) -> None:
        register_secret(token)
        self.token = token

    def authenticate(self) -> bool:
        """Exchange key and secret for a token now: True on success, False otherwise (logged,
        also when there is no secret at all)."""
        self._context["account"] = self.account_name
        if not self.api_secret:
            self._log.error("auth_no_credentials", error_class="auth")
            return False
        try:
            self._api_client().client.sign_in()
        except FetchError as exc:
            self._log.error("auth_failed", error_class=exc.error_class, error=str(exc))
            return False
        return True

    def iter_conversions(self, start_date: str | dt.date, end_date: str | dt.date, *,
                         currency: str | None = None, api_name: str | None = None
                         ) -> Iterator[dict[str, Any]]:
        """Every conversion of `start_date`..`end_date` (one query), each once, as it arrives
        (signing in first when needed).

        Raises what the fetch core raises: InvalidCredentials / RequestRejected (retrying cannot
        help) and ApiUnreachable (the API was never reached).
        """
        return self._iterate(self._settings_now(), start_date, end_date, currency, api_name)

    def _iterate(self, settings: Settings, start_date: str | dt.date, end_date: str | dt.date,
                 currency: str | None, api_name: str | None) -> Iterator[dict[str, Any]]:
        start = _as_date(start_date)
        end = _as_date(end_date)
        self._range = (start, end)
        label_ = api_name or self.account_name
        if label_ not in self._labels:
            self._labels.append(label_)
        self._context["account"] = label_
        log = self._log.bind(account=label_, api_name=label_)
        stack = self._api_client(settings)
        stack.client.currency = self._currency(currency, settings)
        stop = RunStop()
        tally = FetchTally(max_skipped_pages=settings.max_skipped_pages, stop=stop)
        fetch = PageFetch(client=stack.client, policy=stack.policy, stop=stop, tally=tally,
                          sleep=self._sleep, clock=self._clock, log=log, page_limit=settings.page_limit,
                          account=label_, listener=_SkipReports(self, settings, log))
        loop = FetchLoop(window=Window(fetch), stop=stop, tally=tally, account=label_, log=log)
        query = Query(start, end)
        limit = settings.max_records
        self._last = {"count": 0, "total_pages": 0, "pages_fetched": 0, "skipped_pages": [],
                      "records": 0}
        seen: set[object] = set()
        started = self._clock()

        try:
            # a generator: closed with ours, so an abandoned stream leaves no page in flight
            with closing(loop.run([query])) as events:
                for event in events:
                    if isinstance(event, DayEnded):
                        # the pages still skipped, as the job reads them: dead in both passes, or
                        # never retried (stopped)
                        outcome = event.outcome
                        self._note_outcome(outcome.count, outcome.total_pages, outcome.pages,
                                           outcome.skipped)
                    if not isinstance(event, PageArrived):
                        continue
                    for record in event.page.records:  # a page that stayed short: its records too
                        if limit is not None and self._last["records"] >= limit:
                            break
                        key = id_key(record.get("conversion_id"))
                        if key is not None and key in seen:
                            continue
                        seen.add(key)
                        self._last["records"] += 1
                        if limit is not None and self._last["records"] >= limit:
                            # as the original: the limit ends the query (no further page asked)
                            log.warning("max_records_reached", limit=limit)
                            loop.stop(StopReason.MAX_RECORDS)
                        yield record
        finally:
            self._finish(tally.as_dict(), stop.reason, self._clock() - started)
            if stop.reason == StopReason.SKIP_CAP:
                log.error("skip_cap_reached", skipped=len(tally.skipped),
                          max_skipped=settings.max_skipped_pages)

    def _resource_report(self, title: str, log: LibraryLog) -> None:
        log.info("resource_status", title=title, message=self.resource_monitor.render_status(title))

    def _note_outcome(self, count: int | None, total_pages: int, pages: int,
                      skipped: list[int]) -> None:
        if count is not None:
            self._last["count"], self._last["total_pages"] = count, total_pages
        self._last["pages_fetched"] = pages
        self._last["skipped_pages"] = sorted(skipped)

    def _finish(self, numbers: dict[str, Any], stop_reason: StopReason | None, seconds: float) -> None:
        """Add a query's tally (`FetchTally.as_dict()`) and how long it took to `stats`."""
        self.stats["duration_seconds"] = round(self.stats["duration_seconds"] + seconds, 3)
        self._skips.extend(numbers["skipped_pages"])
        self.skipped_pages.extend(int(s["page"]) for s in numbers["skipped_pages"])
        for name in ("pages", "rereads"):
            self.stats[name] += numbers[name]
        retries = self.stats["retries"]
        for error_class, n in numbers["retries"].items():
            retries[error_class] = retries.get(error_class, 0) + n
        self.stats["records"] += self._last.get("records", 0)
        if stop_reason is not None:
            self.stats["stop_reason"] = str(stop_reason)

    @staticmethod
    def _currency(currency: str | None, settings: Settings) -> str | None:
        if currency is None:
            return settings.preferred_currency
        return currency.strip().upper() or None

    def get_conversions(self, start_date: str | dt.date, end_date: str | dt.date,
                        currency: str | None = None, api_name: str | None = None
                        ) -> dict[str, Any] | None:
        """The range's conversions in the original envelope, or None: before a successful
        `authenticate()`, when nothing came back, or when the query failed (bad credentials,
        an unreachable API), each logged.

        `currency` defaults to PREFERRED_CURRENCY ("" asks for the account's local currency);
        `api_name` names the account in the log lines and skip records.
        """
        name = api_name or self.account_name
        self._context["account"] = name
        log = self._log.bind(account=name, api_name=name)
        if not self.token:
            log.error("not_authenticated", error_class="auth")
            return None
        settings = self._settings_now()
        language = settings.log_language
        prefix = f"[{api_name}] " if api_name else ""
        log.info("fetch_started", start_date=str(start_date), end_date=str(end_date))
        if settings.resource_monitor_enabled:
            self._resource_report(prefix + label("orig_fetch_started", language), log)
        try:
            records = list(self._iterate(settings, start_date, end_date, currency, api_name))
        except (FatalFetchError, ApiUnreachable) as exc:
            log.error("run_failed", error_class=exc.error_class, error=str(exc))
            return None
        finally:
            if settings.resource_monitor_enabled:
                self._resource_report(prefix + label("orig_fetch_finished", language), log)
        last = self._last
        if not records:
            log.error("nothing_fetched", start_date=str(start_date), end_date=str(end_date))
            return None
        log.info("fetch_finished", records=len(records), pages=last["pages_fetched"],
                 skipped=len(last["skipped_pages"]))
        return {
            "status": "success",
            "message": "Success",
            "data": {
                "page": 1,
                "limit": settings.page_limit,
                "count": last["count"],
                "total_pages": last["total_pages"],
                "pages_fetched": last["pages_fetched"],
                "skipped_pages": list(last["skipped_pages"]),
                "current_page_count": len(records),
                "data": records,
            },
        }

    def get_conversions_default_range(self, currency: str | None = None
                                      ) -> dict[str, Any] | None:
        """`get_conversions` over the default range: DEFAULT_START_DATE..DEFAULT_END_DATE of the
        host config, else START_DATE..END_DATE, else yesterday."""
        settings = self._settings_now(dates=True)
        return self.get_conversions(settings.start_date.isoformat(),
                                    settings.end_date.isoformat(), currency)

    def save_to_json(self, data: Any, filename: str | None = None) -> str | None:
        """Write `data` as indented UTF-8 JSON (not ASCII-escaped) under OUTPUT_DIR (created
        now if missing); return the path, or None when there is nothing to save (None, empty)
        or it could not be written (logged)."""
        if not data:
            self._log.warning("save_nothing", kind=type(data).__name__)
            return None
        name = filename or dt.datetime.now().strftime("conversions_%Y%m%d_%H%M%S.json")
        path = Path(self._settings_now().output_dir) / name
        try:
            text = json.dumps(data, ensure_ascii=False, indent=2)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        except (OSError, TypeError, ValueError) as exc:
            self._log.error("save_failed", path=str(path), error_class="storage",
                            error=f"{type(exc).__name__}: {exc}")
            return None
        self._log.info("saved", path=str(path), bytes=path.stat().st_size)
        return str(path)

    def get_skipped_pages_summary(self) -> str:
        """The pages that stayed skipped, over every call: account, range, page, error."""
        return render_skip_report(self._skips, self.settings.log_language)

    def print_final_summary(self) -> None:
        """Print the run summary over every call, then the resource report (as the original)."""
        start, end = self._range
        language = self.settings.log_language
        print(render_final_summary({
            "status": "partial" if self.skipped_pages else "succeeded",
            "start_date": start.isoformat(),
            "end_date": end.isoformat(),
            "accounts": self._labels or [self.account_name],
            "currency": (self._stack.client.currency if self._stack
                         else self.settings.preferred_currency),
            "skipped_pages": self._skips,
            **self.stats,
        }, language), flush=True)
        self.resource_monitor.print_resource_status(label("orig_final", language))


class _RequestStats:
    """Counts the requests of the facade's client stack in its `stats` (a `fetch.RequestCounter`): the
    stack outlives each query's tally, and `authenticate()` sends requests outside any query."""

    def __init__(self, stats: dict[str, Any], lock: threading.Lock) -> None:
        self._stats, self._lock = stats, lock

    def count_request(self, authentication: bool) -> None:
        """Every API request sent, from any thread (`stats`: requests, auth_requests)."""
        with self._lock:
            self._stats["requests"] += 1
            if authentication:
                self._stats["auth_requests"] += 1


class _SkipReports:
    """The fetch layer's listener for the original interface: a skipped page shows the resource
    report, as the original did (the query runs on the caller's thread: no fetch workers)."""

    def __init__(self, api: InvolveAsiaAPI, settings: Settings, log: LibraryLog) -> None:
        self._api, self._settings, self._log = api, settings, log

    def page_fetched(self, account: str, day: dt.date, page: Page) -> None:
        pass

    def trouble(self, kind: str, fields: dict[str, Any]) -> None:
        if kind == "skip" and self._settings.resource_monitor_enabled:
            title = label("orig_page_skipped", self._settings.log_language).format(
                page=fields.get("page"))
            self._api._resource_report(title, self._log)


def _as_date(value: str | dt.date) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value).strip()[:10])

