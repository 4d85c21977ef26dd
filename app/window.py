"""An account's requests in flight (`Window`): at most `concurrency` requests at a time, from up to `depth`
pages handed out, results in arrival order. A page waiting out a back-off keeps its worker, not its request
slot, so the pages behind it go ahead; a page that sizes a query goes out beside a full window. Without
threads (the original interface) a page is fetched when it is handed out."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from app.plans import PageResult, Query


@dataclass(frozen=True)
class Arrival:
    """Page `page` of `query` came back; `result` is how it ended (or raises what it raised)."""

    query: Query
    page: int
    sizing: bool
    future: Future[PageResult]

    @property
    def result(self) -> PageResult:
        return self.future.result()


P = ParamSpec("P")
T = TypeVar("T")


class _Inline(Executor):
    """Runs each call at once, in the caller's thread."""

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:  # handed to whoever asks, as a pool would
            future.set_exception(exc)
        return future


class Window:
    """An account's requests in flight (see the module docstring); `threads` 0: inline."""

    def __init__(self, fetch: Callable[[Query, int, AbstractContextManager[Any]], PageResult], *,
                 concurrency: int = 1, depth: int = 1, threads: int = 0, name: str = "fetch") -> None:
        self._fetch = fetch
        self._slots = threading.BoundedSemaphore(max(1, concurrency))
        self.depth = max(1, depth)
        self._pool: Executor = (ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)
                                if threads > 0 else _Inline())
        self._landed: queue.SimpleQueue[Arrival] = queue.SimpleQueue()
        self._out: set[Future[PageResult]] = set()
        self.pending = self._in_window = 0  # pages handed out, not returned by `next()` yet

    def __enter__(self) -> Window:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """No page in flight any more (see `abandon`), no worker left."""
        self.abandon()
        self._pool.shutdown()

    def has_room(self) -> bool:
        """Another page (one that does not size a query) may be handed out."""
        return self._in_window < self.depth

    def has_landed(self) -> bool:
        """A page came back that `next()` has not returned yet."""
        return not self._landed.empty()

    def submit(self, query: Query, page: int, *, sizing: bool = False) -> None:
        self.pending += 1
        self._in_window += not sizing
        future = self._pool.submit(self._fetch, query, page, self._slots)
        self._out.add(future)
        future.add_done_callback(lambda f: self._landed.put(Arrival(query, page, sizing, f)))

    def next(self) -> Arrival:
        """The next page back, in arrival order (waiting for it)."""
        assert self.pending > 0, "nothing handed out"
        arrival = self._landed.get()
        self._out.discard(arrival.future)
        self.pending -= 1
        self._in_window -= not arrival.sizing
        return arrival

    def abandon(self) -> None:
        """Forget what is handed out: pages not started never are, the others are waited for (no request
        outlives its loop)."""
        for future in list(self._out):
            future.cancel()
        for future in list(self._out):
            if not future.cancelled():
                future.exception()
        self._out.clear()
        self._landed = queue.SimpleQueue()
        self.pending = self._in_window = 0
