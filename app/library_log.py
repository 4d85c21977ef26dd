"""Log lines of the job's code used as a library (`app.involve_asia`) inside another program.

A library must not configure the host's logging: no root handler, nothing added to the host's
loggers, no structlog configuration. `LibraryLog` is the fetch core's event log (`info(event,
**fields)`...) for that case. Each event becomes one human-readable line (the message catalog,
in the chosen language, secrets removed) on the stdlib logger `app`, the one logger the library
owns:

- The host configured logging (a handler on `app` or on an ancestor, `logging.basicConfig`
  included): the line is a record of `app`, formatted and routed by the host's handlers, once.
  The record carries `event` (the event name) and `fields` (its fields) for structured
  formatters.
- Nobody configured anything: the line is printed on stdout, as the original module printed its
  progress, once (Python's last-resort handler, which would print warnings a second time on
  stderr, is not used).

Which levels show: the `app` logger's own level when the host set one, else INFO and above
(the original module printed its progress whatever the host's root level).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any

from app.messages import render_message
from app.redaction import redact_text

LOGGER_NAME = "app"
"""The library's logger: a host routes or silences the library's lines through it."""
DEFAULT_LEVEL = logging.INFO
"""The lines shown while the host has not set a level on the `app` logger."""


def emit(level: int, event: str, message: str, fields: Mapping[str, Any]) -> None:
    """Show one line of the library (see the module docstring); never raises."""
    logger = logging.getLogger(LOGGER_NAME)
    if logger.disabled or level < (logger.level or DEFAULT_LEVEL):
        return
    try:
        if not logger.hasHandlers():
            print(message, file=sys.stdout, flush=True)
            return
        record = logger.makeRecord(logger.name, level, __name__, 0, message, (), None,
                                   extra={"event": event, "fields": dict(fields)})
        logger.handle(record)
    except Exception:  # a log line must never break the host's run
        return


class LibraryLog:
    """The fetch core's event log, as human-readable lines of the `app` logger.

    `bound` fields go with every event; the mapping is read at each event, so an owner may keep
    it and change it (the account label of the current call) without rebinding.
    """

    def __init__(self, language: str, bound: Mapping[str, Any] | None = None) -> None:
        self.language = language
        self.bound: Mapping[str, Any] = bound if bound is not None else {}

    def bind(self, **fields: Any) -> LibraryLog:
        return LibraryLog(self.language, {**self.bound, **fields})

    def debug(self, event: str, **fields: Any) -> None:
        self.log(logging.DEBUG, event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self.log(logging.INFO, event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self.log(logging.WARNING, event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self.log(logging.ERROR, event, fields)

    def log(self, level: int, event: str, fields: Mapping[str, Any]) -> None:
        """One event: `message` when given (a report block), else the catalog's text."""
        merged = {**self.bound, **fields}
        given = merged.pop("message", None)
        clean = {k: redact_text(v) if isinstance(v, str) else v for k, v in merged.items()}
        text = str(given) if given is not None else render_message(event, clean, self.language)
        emit(level, event, redact_text(text), clean)
