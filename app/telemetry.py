"""The job's telemetry, one listener object: what the fetch layer tells it (a page fetched, a retry, a
skip), turned into progress lines (`app.progress`), stall-watchdog progress, and retry and skip diagnoses
handed to the watchdog's thread (`app.watchdog`), which takes the resource snapshots. Called on fetch
workers, it only counts and hands over: no snapshot or probe ever runs there."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from app.logs import current_language
from app.messages import render_message
from app.models import Page
from app.progress import Progress
from app.watchdog import Watchdog

PROGRESS_EVERY = 10
"""A progress line every this many pages done of a day, and when the day's last page is in."""


class Telemetry:
    """The `FetchListener` of a job run (see the module docstring)."""

    def __init__(self, *, progress: Progress, log: Any, records: Callable[[], int | None],
                 status: Callable[[], dict[str, Any]]) -> None:
        self.progress = progress
        self.log = log
        self._records = records
        self._status = status
        self.watchdog: Watchdog | None = None
        """Set while the fetch runs."""

    def page_fetched(self, account: str, day: dt.date, page: Page) -> None:
        if self.watchdog is not None:
            self.watchdog.progress()
        progress = self.progress
        with progress.lock:  # one report at a time, so the lines come out in order
            done, day_done = progress.page_done(account, day.isoformat(), page.page, page.pages)
            if day_done or (done % PROGRESS_EVERY == 0 and done < page.pages):
                self._report_progress(account, day)

    def _report_progress(self, account: str, day: dt.date) -> None:
        """A progress line: the day's pages done (not the page number) and percentage, the
        account's own rate and ETAs, and the run's (app.progress)."""
        date = day.isoformat()
        self.log.info("progress", account=account, date=date, records=self._records(),
                      **self.progress.line(account, date))

    def trouble(self, kind: str, fields: dict[str, Any]) -> None:
        """A retry or a skip, on a fetch worker: handed to the watchdog's thread, which takes the
        resource snapshot and logs the diagnosis (a retry's as one line, rate-limited per
        account; a skip's in full). This thread never snapshots or probes."""
        if self.watchdog is not None:
            title = render_message(f"trouble_{kind}", fields, current_language())
            self.watchdog.trouble(kind, title, fields)

    def status(self) -> dict[str, Any]:
        """The heartbeat's view of the run."""
        return {**self._status(), "progress": self.progress.status()}
