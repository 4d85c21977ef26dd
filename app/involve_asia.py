"""The original WeeklyReporter module's interface, `InvolveAsiaAPI`, for code written against
it (see the contract, "The original interface"), on this job's fetch core: the API client
(`app.api`), the pager, the throttle and the retry policy.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import structlog

from app.api import AccountClient
from app.config import Account, Settings, load_settings
from app.errors import ApiUnreachable, FatalFetchError, FetchError
from app.fetch import FetchLoop, PageFetch
from app.http import HttpClient
from app.logs import configure_logging, get_logger, register_secret, resolve_format
from app.models import Page
from app.pager import Query, RunState, UnitOutcome, Window
from app.ratelimit import RateLimiter
from app.retry import RetryPolicy

__all__ = ["InvolveAsiaAPI"]


class InvolveAsiaAPI:
    """The original WeeklyReporter module's interface (`modules/involve_asia_api.py`), on this
    job's fetch core: the same pager, retry policy, throttle and error classes as the job.

    `get_conversions(start, end)` pages the range as one `/conversions/range` query (the job
    pages one day at a time), retries each page with RETRY_BACKOFF's waits (RATE_LIMIT_DELAY
    after a 429), skips a page after its last retry, retries the skipped pages once more at the
    end, and stops after more than MAX_SKIPPED_PAGES skips. It returns the original envelope, or
    None when nothing came back. `iter_conversions` streams the same records instead.

    `api_secret` / `api_key` replace the settings' account (INVOLVE_ASIA_ACCOUNTS included);
    None reads them from the settings (the environment). `settings`, `sleep` and `clock` are
    hooks for tests. Skipped pages and counters accumulate over the instance's calls, for
    `get_skipped_pages_summary` and `print_final_summary`.
    """

    def __init__(self, api_secret: str | None = None, api_key: str | None = None, *,
                 settings: Settings | None = None, sleep: Callable[[float], object] | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        if settings is None:
            settings = _settings_from_environment(api_secret, api_key)
        self.settings = settings
        first = settings.accounts[0]
        self.account = Account(first.name, api_key or first.key, api_secret or first.secret)
        self.api_key = self.account.key
        self.base_url = settings.base_url
        _ensure_logging(settings)
        register_secret(self.account.secret)
        self.log = get_logger(account=self.account.name)
        self._sleep = sleep or time.sleep
        self._clock = clock or time.monotonic
        self.http = HttpClient(timeout=settings.request_timeout, clock=self._clock)
        self.limiter = RateLimiter(
            per_minute=settings.requests_per_minute,
            min_interval=settings.request_delay,
            clock=self._clock,
            sleep=self._sleep,
        )
        self.client = AccountClient(
            base_url=settings.base_url, key=self.account.key, secret=self.account.secret,
            http=self.http, limiter=self.limiter, clock=self._clock,
            on_token=register_secret, on_request=self._count_request, log=self.log,
            currency=settings.preferred_currency,
        )
        self.skipped_pages: list[dict[str, Any]] = []
        self._stats_lock = threading.Lock()
        self.stats: dict[str, Any] = {"pages": 0, "requests": 0, "auth_requests": 0,
                                      "retries": {}, "rereads": 0,
                                      "records": 0, "duration_seconds": 0.0}
        self._last: dict[str, Any] = {}
        self._range: tuple[dt.date, dt.date] = (settings.start_date, settings.end_date)

    def _count_request(self, authentication: bool) -> None:
        """Every API request sent, from any thread (`stats`: requests, auth_requests)."""
        with self._stats_lock:
            self.stats["requests"] += 1
            if authentication:
                self.stats["auth_requests"] += 1

    def authenticate(self) -> bool:
        """Exchange key and secret for a token now: True on success, False otherwise (logged)."""
        try:
            self.client.sign_in()
        except FetchError as exc:
            self.log.error("auth_failed", error_class=exc.error_class, error=str(exc))
            return False
        return True

    def iter_conversions(self, start_date: str | dt.date, end_date: str | dt.date, *,
                         currency: str | None = None, api_name: str | None = None
                         ) -> Iterator[dict[str, Any]]:
        """Every conversion of `start_date`..`end_date` (one query), each once, as it arrives.

        Raises what the fetch core raises: InvalidCredentials / RequestRejected (retrying cannot
        help) and ApiUnreachable (the API was never reached).
        """


        start = _as_date(start_date)
        end = _as_date(end_date)
        self._range = (start, end)
        label = api_name or self.account.name
        log = self.log.bind(account=label, api_name=label)
        self.client.currency = self._currency(currency)
        state = RunState(max_skipped_pages=self.settings.max_skipped_pages)
        fetch = PageFetch(
            client=self.client,
            policy=RetryPolicy(max_retries=self.settings.max_retry_attempts,
                               backoff=self.settings.retry_backoff,
                               rate_limit_delay=self.settings.rate_limit_delay),
            state=state, sleep=self._sleep, clock=self._clock, log=log,
            page_limit=self.settings.page_limit, account=label,
        )
        loop = FetchLoop(window=Window(fetch), state=state, account=label, log=log)
        query = Query(start, end)
        self._last = {"count": 0, "total_pages": 0, "pages_fetched": 0, "skipped_pages": [],
                      "records": 0}
        seen: set[object] = set()
        started = self._clock()

        def ended(outcome: UnitOutcome) -> None:
            # what the run state still lists: dead twice, or never retried (stopped)
            still = [s.page for s in state.skipped_for(label, query.label)]
            self._note_outcome(outcome.count, outcome.total_pages, outcome.pages, still)

        try:
            for arrival in loop.run([query], _OnEnd(ended)):
                if isinstance(arrival.result, Page):
                    for record in arrival.result.records:
                        key = record.get("conversion_id")
                        if key is None or key not in seen:
                            seen.add(key)
                            self._last["records"] += 1
                            yield record
        finally:
            self._finish(state, self._clock() - started)

    def _note_outcome(self, count: int | None, total_pages: int, pages: int,
                      skipped: list[int]) -> None:
        if count is not None:
            self._last["count"], self._last["total_pages"] = count, total_pages
        self._last["pages_fetched"] = pages
        self._last["skipped_pages"] = sorted(skipped)

    def _finish(self, state: Any, seconds: float) -> None:
        numbers = state.as_dict()
        self.stats["duration_seconds"] = round(self.stats["duration_seconds"] + seconds, 3)
        self.skipped_pages.extend(numbers["skipped_pages"])
        for name in ("pages", "rereads"):
            self.stats[name] += numbers[name]
        retries = self.stats["retries"]
        for error_class, n in numbers["retries"].items():
            retries[error_class] = retries.get(error_class, 0) + n
        self.stats["records"] += self._last.get("records", 0)
        if state.stop_reason is not None:
            self.stats["stop_reason"] = state.stop_reason

    def _currency(self, currency: str | None) -> str | None:
        if currency is None:
            return self.settings.preferred_currency
        return currency.strip().upper() or None

    def get_conversions(self, start_date: str | dt.date, end_date: str | dt.date,
                        currency: str | None = None, api_name: str | None = None
                        ) -> dict[str, Any] | None:
        """The range's conversions in the original envelope, or None when none came back.

        `currency` defaults to PREFERRED_CURRENCY ("" asks for the account's local currency);
        `api_name` labels the log lines and skip records. A failure that ends the query (bad
        credentials, an unreachable API) is logged and gives None, as the original did.
        """
        try:
            records = list(self.iter_conversions(start_date, end_date, currency=currency,
                                                 api_name=api_name))
        except (FatalFetchError, ApiUnreachable) as exc:
            self.log.error("run_failed", account=api_name or self.account.name,
                           error_class=exc.error_class, error=str(exc))
            return None
        if not records:
            return None
        last = self._last
        return {
            "status": "success",
            "message": "Success",
            "data": {
                "page": 1,
                "limit": self.settings.page_limit,
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
        """`get_conversions` over the settings' range (START_DATE..END_DATE, else yesterday)."""
        return self.get_conversions(self.settings.start_date, self.settings.end_date,
                                    currency=currency)

    def save_to_json(self, data: Any, filename: str | None = None) -> str | None:
        """Write `data` as indented UTF-8 JSON (not ASCII-escaped) under OUTPUT_DIR; return the
        path, or None when it could not be written (logged)."""
        name = filename or dt.datetime.now().strftime("conversions_%Y%m%d_%H%M%S.json")
        path = Path(self.settings.output_dir) / name
        try:
            text = json.dumps(data, ensure_ascii=False, indent=2)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        except (OSError, TypeError, ValueError) as exc:
            self.log.error("save_failed", path=str(path), error_class="storage",
                           error=f"{type(exc).__name__}: {exc}")
            return None
        self.log.info("saved", path=str(path), bytes=path.stat().st_size)
        return str(path)

    def get_skipped_pages_summary(self) -> str:
        from app.reports import render_skip_report

        return render_skip_report(self.skipped_pages, self.settings.log_language)

    def print_final_summary(self) -> None:
        from app.reports import render_final_summary

        start, end = self._range
        print(render_final_summary({
            "status": "partial" if self.skipped_pages else "succeeded",
            "start_date": start.isoformat(),
            "end_date": end.isoformat(),
            "accounts": [self.account.name],
            "currency": self.client.currency,
            "skipped_pages": self.skipped_pages,
            **self.stats,
        }, self.settings.log_language))


class _OnEnd:
    """The fetch loop's hooks for one query of the original interface: its records are
    yielded as they arrive, so only how the query ended is kept."""

    def __init__(self, ended: Callable[[UnitOutcome], None]) -> None:
        self._ended = ended

    def start(self, query: Query) -> None:
        pass

    def page(self, query: Query, page: Page) -> None:
        pass

    def end(self, query: Query, outcome: UnitOutcome) -> None:
        self._ended(outcome)

    def missing(self, query: Query) -> None:
        pass


def _as_date(value: str | dt.date) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value).strip()[:10])


def _settings_from_environment(api_secret: str | None, api_key: str | None) -> Settings:
    """The settings from the environment; explicit credentials stand in for the env's."""
    env = dict(os.environ)
    overrides: dict[str, str | None] = {"INVOLVE_ASIA_API_SECRET": api_secret,
                                        "INVOLVE_ASIA_API_KEY": api_key}
    if api_secret is not None:
        env.pop("INVOLVE_ASIA_ACCOUNTS", None)  # one explicit account replaces the list
    return load_settings(env, overrides)


def _ensure_logging(settings: Settings) -> None:
    """A script that set up no logging gets the job's (JSON or console, LOG_LANGUAGE,
    secrets redacted); one that did keeps its own."""
    if structlog.is_configured():
        return
    task = settings.task
    configure_logging(
        fmt=resolve_format(settings.log_format, on_cloud_run=task.on_cloud_run,
                           stdout_isatty=sys.stdout.isatty()),
        language="en" if settings.log_language == "en" else "zh",
        labels={"job": task.job, "execution": task.execution, "task_index": str(task.index),
                "attempt": str(task.attempt)},
    )
