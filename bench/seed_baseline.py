"""The old script's approach, rebuilt for the benchmark: `python -m bench.seed_baseline`.

Not for use. It exists so every figure of `python -m bench` has the old approach beside it,
measured on the same simulator, the same machine and the same scaled waits. It is written from
the description of how the old module worked, not copied from it:

- one account, the whole date range in one paged query, pages requested one after another;
- after each request, a fixed `REQUEST_DELAY` sleep;
- a failed request waits a fixed step of `RETRY_BACKOFF` (the seed's 10, 20, 30, 40, 60 s,
  the last repeating), a 429 waits `RATE_LIMIT_DELAY`; after `MAX_RETRY_ATTEMPTS` retries
  the page is skipped;
- each request runs in a new thread that the caller joins for `REQUEST_TIMEOUT +
  THREAD_JOIN_MARGIN` seconds (the seed's margin was 5 s); `requests` inside it gets
  `timeout=REQUEST_TIMEOUT`, which bounds each socket read, not the request. A request still
  running at the join deadline is abandoned (its thread keeps running; it is a daemon here so the
  benchmark can exit) and the page is retried;
- every record is kept in one list; at the end one JSON file
  `OUTPUT_DIR/conversions_{START_DATE}_{END_DATE}.json` is written with `json.dump`.

Settings are environment variables with the job's names (`INVOLVE_ASIA_BASE_URL`,
`INVOLVE_ASIA_API_KEY`, `INVOLVE_ASIA_API_SECRET`, `START_DATE`, `END_DATE`, `REQUEST_TIMEOUT`,
`MAX_RETRY_ATTEMPTS`, `RETRY_BACKOFF`, `RATE_LIMIT_DELAY`, `REQUEST_DELAY`, `DEFAULT_PAGE_LIMIT`,
`OUTPUT_DIR`) plus `THREAD_JOIN_MARGIN`. The last stdout line is a JSON report
(`total_records`, `pages`, `skipped_pages`).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests


class _Retry(Exception):
    """This attempt failed; wait `wait` seconds (None: the backoff step) and try again."""

    def __init__(self, reason: str, wait: float | None = None) -> None:
        super().__init__(reason)
        self.wait = wait


@dataclass(frozen=True)
class SeedConfig:
    base_url: str
    key: str
    secret: str
    start_date: str
    end_date: str
    request_timeout: float = 30.0
    max_retries: int = 5
    backoff: tuple[float, ...] = (10.0, 20.0, 30.0, 40.0, 60.0)
    rate_limit_delay: float = 30.0
    request_delay: float = 0.5
    page_limit: int = 100
    output_dir: Path = Path("./output")
    thread_join_margin: float = 5.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SeedConfig:
        return cls(
            base_url=env.get("INVOLVE_ASIA_BASE_URL", "https://api.involve.asia/api").rstrip("/"),
            key=env.get("INVOLVE_ASIA_API_KEY", "general"),
            secret=env["INVOLVE_ASIA_API_SECRET"],
            start_date=env["START_DATE"],
            end_date=env["END_DATE"],
            request_timeout=float(env.get("REQUEST_TIMEOUT", "30")),
            max_retries=int(env.get("MAX_RETRY_ATTEMPTS", "5")),
            backoff=tuple(float(x) for x in env.get("RETRY_BACKOFF", "10,20,30,40,60").split(",")),
            rate_limit_delay=float(env.get("RATE_LIMIT_DELAY", "30")),
            request_delay=float(env.get("REQUEST_DELAY", "0.5")),
            page_limit=int(env.get("DEFAULT_PAGE_LIMIT", "100")),
            output_dir=Path(env.get("OUTPUT_DIR", "./output")),
            thread_join_margin=float(env.get("THREAD_JOIN_MARGIN", "5")),
        )


class SeedClient:
    """Sequential pages, fixed sleeps, a thread per request, every record in one list."""

    def __init__(self, config: SeedConfig) -> None:
        self.config = config
        self.token: str | None = None
        self.skipped_pages: list[int] = []
        self.pages = 0

    # -- one request, in its own thread

    def _post(self, path: str, data: dict[str, str]) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["response"] = requests.post(f"{self.config.base_url}{path}", data=data,
                                                headers=headers,
                                                timeout=self.config.request_timeout)
            except Exception as exc:
                box["error"] = exc

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        thread.join(self.config.request_timeout + self.config.thread_join_margin)
        if thread.is_alive():
            raise _Retry("request thread still running at the join deadline")
        if "error" in box:
            raise _Retry(f"{type(box['error']).__name__}")
        response: requests.Response = box["response"]
        return response

    def authenticate(self) -> None:
        self.token = None
        response = self._post("/authenticate", {"key": self.config.key,
                                                "secret": self.config.secret})
        response.raise_for_status()
        self.token = response.json()["data"]["token"]

    # -- one page, with the fixed waits

    def _page_once(self, page: int) -> dict[str, Any]:
        response = self._post("/conversions/range", {
            "start_date": self.config.start_date, "end_date": self.config.end_date,
            "page": str(page), "limit": str(self.config.page_limit)})
        if response.status_code == 429:
            raise _Retry("HTTP 429", wait=self.config.rate_limit_delay)
        if response.status_code == 401:
            self.authenticate()
            raise _Retry("HTTP 401")
        if response.status_code != 200:
            raise _Retry(f"HTTP {response.status_code}")
        try:
            body = response.json()
        except ValueError as exc:
            raise _Retry("bad JSON") from exc
        if not isinstance(body, dict) or body.get("status") != "success":
            raise _Retry("API status error")
        data: dict[str, Any] = body["data"]
        return data

    def fetch_page(self, page: int) -> dict[str, Any] | None:
        backoff = self.config.backoff
        for attempt in range(self.config.max_retries + 1):
            try:
                data = self._page_once(page)
            except _Retry as exc:
                if attempt == self.config.max_retries:
                    break
                wait = exc.wait if exc.wait is not None else backoff[min(attempt, len(backoff) - 1)]
                time.sleep(wait)
                continue
            time.sleep(self.config.request_delay)
            return data
        self.skipped_pages.append(page)
        return None

    # -- the whole range

    def get_conversions(self) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        page = 1
        while True:
            data = self.fetch_page(page)
            if data is None:
                if page == 1:
                    break  # unknown size: nothing more can be done
                page += 1
                continue
            self.pages += 1
            records.extend(data.get("data") or [])
            if not data.get("nextPage"):
                break
            page += 1
        return records


def main(env: Mapping[str, str] | None = None) -> int:
    config = SeedConfig.from_env(os.environ if env is None else env)
    client = SeedClient(config)
    client.authenticate()
    records = client.get_conversions()
    config.output_dir.mkdir(parents=True, exist_ok=True)
    target = config.output_dir / f"conversions_{config.start_date}_{config.end_date}.json"
    with open(target, "w", encoding="utf-8") as handle:
        json.dump({"data": records, "total_records": len(records), "pages": client.pages,
                   "skipped_pages": client.skipped_pages}, handle, ensure_ascii=False)
    print(json.dumps({"total_records": len(records), "pages": client.pages,
                      "skipped_pages": client.skipped_pages, "output": str(target)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
