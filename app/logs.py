"""Log setup: structlog processors shape every event, stdlib logging carries it, one handler
writes it.

Every event goes through one chain of small processors:

    call site -> exception text -> JSON-safe values -> redaction + field caps -> human message

- "json" (Cloud Run, no TTY, LOG_FORMAT=json): google-cloud-logging's `StructuredLogHandler`
  (stdout, synchronous) writes each entry as one line of Cloud Logging's structured format:
  severity, `logging.googleapis.com/labels` (its `labels`: the job's labels, the account per
  entry), `logging.googleapis.com/sourceLocation` (its `source_location`), and the event as the
  entry's payload (message, event, then the event's own fields). structlog events are shaped
  by structlog's own chain and reach the handler as a dict message; records of other libraries
  (urllib3, google-*) are shaped by the same processors in a `ProcessorFormatter` that the
  handler calls. An entry that would exceed Cloud Logging's entry limit keeps only its scalar
  fields (`entry_truncated`).
- "console" (a terminal, LOG_FORMAT=console): structlog's `ConsoleRenderer`, one readable line
  per event (time, level, message, [event and the fields the message does not say]);
  multi-line reports and tracebacks below it.

Secrets are removed by `app.redaction`, the one place that knows what a secret looks like.
Human-readable messages come from `app.messages.CATALOG` in the configured language; JSON field
names are English either way.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
import threading
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import PurePath
from typing import Any, Literal, TextIO, cast

import orjson
import structlog
from structlog.dev import DIM, GREEN, RED, RESET_ALL, YELLOW, Column, KeyValueColumnFormatter
from structlog.processors import CallsiteParameter
from structlog.typing import EventDict, Processor

from app.messages import LanguageCode, language_code, message_fields, render_message
from app.redaction import (
    REDACTED,
    clear_secrets,
    is_secret_name,
    redact_text,
    register_secret,
)

__all__ = [
    "REDACTED",
    "LanguageCode",
    "LogFormat",
    "clear_secrets",
    "configure_logging",
    "current_language",
    "get_logger",
    "redact_text",
    "register_secret",
    "reset_logging",
    "resolve_format",
]

LogFormat = Literal["json", "console"]

MAX_ENTRY_BYTES = 256_000
"""Cloud Logging's limit for one entry is about 256 KB."""
ENVELOPE_BYTES = 4096
"""Room left for what the handler adds around the payload (severity, labels, call site, its
trace and httpRequest keys)."""
STACK_CHARS = 64 * 1024
"""Cap on a traceback or a thread stack dump."""
MESSAGE_CHARS = 32 * 1024
"""Cap on the human message (multi-line reports are a few KB)."""
DETAIL_CHARS = 500
"""Cap on fields named like error / body / detail / response: an HTML error page stays short."""
DEFAULT_CHARS = 16 * 1024
"""Cap on any other string field."""
TRIM_MARGIN = 2048
"""Longer than any secret or token: see `_clean_text`."""
CONSOLE_VALUE_CHARS = 80
"""The console's trailing field list shows at most this much of a value (the message has more)."""
DIAGNOSTIC_KEY = "logging.googleapis.com/diagnostic"
"""The key of the one-off entry in which google-cloud-logging describes itself."""

_STACK_KEY = re.compile(r"(?i)(stack|exception|traceback)")
_DETAIL_KEY = re.compile(r"(?i)(error|body|detail|response|reason|text)")
_CALLSITE = [
    CallsiteParameter.PATHNAME,
    CallsiteParameter.LINENO,
    CallsiteParameter.FUNC_NAME,
    CallsiteParameter.QUAL_NAME,  # set for structlog events; stdlib records have FUNC_NAME only
]
_OWN_KEYS = frozenset({"level", *(p.value for p in _CALLSITE)})
"""Fields the pipeline itself adds (level, call site): nothing there to redact or cap."""
_SHAPED = "app_log_entry"
"""Set on the stdlib records of structlog events: their dict message is already shaped."""
_SAID = "_said_by_message"
"""Console only: the fields the catalog message shows (see `note_said_fields`)."""

_state_lock = threading.Lock()
_language: LanguageCode = "zh"
_handler: logging.Handler | None = None


# ---------------------------------------------------------------------------------------------
# Public API


def resolve_format(configured: str | None, *, on_cloud_run: bool, stdout_isatty: bool) -> LogFormat:
    """LOG_FORMAT if set; else JSON on Cloud Run or when stdout is not a terminal, else console."""
    if configured:
        value = configured.strip().lower()
        if value == "json":
            return "json"
        if value == "console":
            return "console"
        raise ValueError(f"LOG_FORMAT={configured!r}: expected json or console")
    if on_cloud_run or not stdout_isatty:
        return "json"
    return "console"


def configure_logging(
    *,
    fmt: LogFormat,
    language: LanguageCode,
    labels: Mapping[str, str],
    stream: TextIO | None = None,
    level: int = logging.INFO,
) -> None:
    """Route structlog and stdlib logging to one handler on the root logger; callable again.

    `labels` (job, execution, task_index, attempt) go on every entry; `stream` defaults to the
    current `sys.stdout`.
    """
    global _language, _handler
    out = stream if stream is not None else sys.stdout
    shape: list[Processor] = [
        structlog.processors.format_exc_info,
        make_json_safe,
        redact_and_cap,
    ]
    handler: logging.Handler
    last: list[Processor]
    if fmt == "json":
        handler = _structured_handler(out, labels)
        handler.setFormatter(
            structlog.stdlib.ProcessorFormatter(  # records of other libraries only
                foreign_pre_chain=[foreign_event],
                processors=[
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    *shape,
                    add_message,
                    render_payload,
                ],
            )
        )
        last = [
            structlog.processors.CallsiteParameterAdder(_CALLSITE),
            *shape,
            add_message,
            to_structured_record,
        ]
    else:
        handler = logging.StreamHandler(out)
        handler.addFilter(_readable)
        handler.setFormatter(
            structlog.stdlib.ProcessorFormatter(
                foreign_pre_chain=[foreign_event],
                processors=[
                    structlog.stdlib.add_log_level,
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    *shape,
                    note_said_fields,
                    add_message,
                    structlog.processors.TimeStamper(fmt="%H:%M:%S", utc=False, key="time"),
                    console_columns,
                    _console_renderer(colors=_isatty(out)),
                ],
            )
        )
        last = [structlog.stdlib.ProcessorFormatter.wrap_for_formatter]
    root = logging.getLogger()
    with _state_lock:
        _language = language_code(language)
        if _handler is not None:
            root.removeHandler(_handler)
        _handler = handler
        root.addHandler(handler)
        root.setLevel(level)
        # google-api-core turns off propagation of the "google" logger when a client is built,
        # unless that logger is already configured (it checks level, handlers and propagate):
        # configured here, the libraries' records (storage retries, auth) reach our handler as
        # JSON lines instead of Python's last-resort plain text on stderr.
        google = logging.getLogger("google")
        google.setLevel(level)
        google.propagate = True
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.contextvars.merge_contextvars,
            *last,
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
        logger_factory=structlog.stdlib.LoggerFactory(),
        context_class=dict,
        cache_logger_on_first_use=False,
    )


def reset_logging() -> None:
    """Remove our handler and structlog's configuration (tests call this between cases)."""
    global _handler, _language
    with _state_lock:
        if _handler is not None:
            logging.getLogger().removeHandler(_handler)
        _handler = None
        _language = "zh"
    structlog.reset_defaults()


def get_logger(**bound: object) -> structlog.stdlib.BoundLogger:
    """A logger for app code, with `bound` fields (e.g. account="acme") on every event.

    Resolved against the configuration at each call, so a logger made at import time follows a
    later `configure_logging` (and `structlog.testing.capture_logs`).
    """
    return cast(structlog.stdlib.BoundLogger, structlog.get_logger("app", **bound))


def current_language() -> LanguageCode:
    """The language human-readable messages are rendered in."""
    return _language


# ---------------------------------------------------------------------------------------------
# Processors shared by both formats


def foreign_event(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
    """A record from another library: event "log", its text as the message, its logger's name."""
    record = event_dict.get("_record")
    event_dict["message"] = event_dict.pop("event", "")
    event_dict["event"] = "log"
    if isinstance(record, logging.LogRecord):
        event_dict["logger"] = record.name
    return event_dict


def _readable(record: logging.LogRecord) -> bool:
    """A stdlib record whose arguments do not fit its format is logged as its bare format text,
    instead of logging's "--- Logging error ---" dump of the arguments (a secret may be one)."""
    if not isinstance(record.msg, dict):  # structlog's events are dicts with no arguments
        try:
            record.getMessage()
        except Exception:
            record.msg, record.args = _safe_str(record.msg), ()
    return True


def make_json_safe(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
    """Turn every value into something `json.dumps` takes; anything else becomes its text."""
    return {str(k): _jsonable(v) for k, v in event_dict.items()}


def redact_and_cap(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
    """Secrets leave every field (values of secret-named fields go whole), and long strings are
    cut per field kind: error bodies to a few hundred chars, stacks to 64 KB (keeping the end)."""
    return {k: v if k in _OWN_KEYS else _sanitize(v, k) for k, v in event_dict.items()}


def add_message(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
    """Render `message` from the catalog in the configured language unless the caller gave one.

    Runs after redaction and field caps, so the message is built from safe, short values.
    """
    if event_dict.get("message") is None:
        event = str(event_dict.get("event", ""))
        rendered = render_message(event, event_dict, _language)
        event_dict["message"] = _cut(rendered, MESSAGE_CHARS, keep_tail=False)
    return event_dict


# ---------------------------------------------------------------------------------------------
# JSON: written by google-cloud-logging's StructuredLogHandler


def _structured_handler(out: TextIO, labels: Mapping[str, str]) -> logging.Handler:
    """The vendor's handler for Cloud Logging's structured stdout lines, with the job's labels.

    Imported here, so that a console run does not pay for loading google-cloud-logging. The
    handler writes to stdout and never calls the Logging API, so the package is told (before its
    first import, through google-cloud-core's documented switch) not to load the API's generated
    gRPC clients: about 3 MB less resident memory, unless the environment says otherwise.
    """
    from google.cloud.environment_vars import DISABLE_GRPC

    os.environ.setdefault(DISABLE_GRPC, "true")
    from google.cloud.logging.handlers import StructuredLogHandler

    job_labels = {str(k): str(v) for k, v in labels.items()}
    handler: logging.Handler = StructuredLogHandler(  # type: ignore[no-untyped-call]
        labels={**job_labels, "account": "-"}, stream=out
    )
    handler.addFilter(_not_diagnostic)
    handler.addFilter(_readable)
    handler.addFilter(_shaped_or_text)
    return handler


def _not_diagnostic(record: logging.LogRecord) -> bool:
    """Drop the entry in which the library describes itself (once per process): every line on
    stdout is one of the job's events or another library's log record."""
    return not (isinstance(record.msg, Mapping) and DIAGNOSTIC_KEY in record.msg)


def _shaped_or_text(record: logging.LogRecord) -> bool:
    """The handler writes a dict message as it is: another library's record with one is logged
    as its text instead, so that it goes through the formatter's redaction like any other."""
    if isinstance(record.msg, Mapping) and not getattr(record, _SHAPED, False):
        record.msg, record.args = _safe_str(record.msg), ()
    return True


def _payload(event_dict: EventDict) -> dict[str, Any]:
    """The entry's payload: message and event first, then the event's own fields as given."""
    fields = dict(event_dict)
    payload = {"message": fields.pop("message", ""), "event": fields.pop("event", "")}
    payload.update(fields)
    return _within_entry_limit(payload)


def to_structured_record(
    logger: Any, method_name: str, event_dict: EventDict
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The last processor for structlog events: the stdlib call that carries the entry to the
    handler, as its documented inputs: the payload as a dict message, the account in `labels`
    and the call site in `source_location`."""
    path = event_dict.pop("pathname", None)
    line = event_dict.pop("lineno", None)
    function = event_dict.pop("qual_name", None)
    function = event_dict.pop("func_name", None) if function is None else function
    event_dict.pop("func_name", None)
    account = event_dict.get("account")
    extra: dict[str, Any] = {
        "labels": {"account": "-" if account in (None, "") else str(account)},
        _SHAPED: True,
    }
    if path is not None:
        extra["source_location"] = {"file": path, "line": line, "function": function}
    return (_payload(event_dict),), {"extra": extra}


def render_payload(logger: Any, method_name: str, event_dict: EventDict) -> str:
    """Another library's record, shaped, as the JSON text the handler turns into the payload."""
    return json.dumps(_payload(event_dict), ensure_ascii=False)


def _json_bytes(payload: Mapping[str, Any]) -> int:
    """The payload's size as the handler writes it (the standard library's spacing, UTF-8)."""
    text = json.dumps(payload, ensure_ascii=False)
    return len(text.encode("utf-8", "surrogatepass"))


def _within_entry_limit(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload, or, over Cloud Logging's entry limit, only its scalar fields."""
    limit = MAX_ENTRY_BYTES - ENVELOPE_BYTES
    try:  # fast: compact JSON, plus half again for the spaces the handler's encoding adds
        small_enough = len(orjson.dumps(payload)) * 3 // 2 <= limit
    except TypeError:  # orjson refuses integers past 64 bits and lone surrogates
        small_enough = False
    if small_enough or _json_bytes(payload) <= limit:
        return payload
    small = {
        k: v
        for k, v in payload.items()
        if v is None
        or isinstance(v, bool | int | float)
        or (isinstance(v, str) and len(v) < 200)
    }
    small["message"] = _cut(str(payload.get("message", "")), 4000, keep_tail=False)
    small["event"] = payload.get("event", "")
    small["entry_truncated"] = True
    return small


# ---------------------------------------------------------------------------------------------
# Console


_NOT_SHOWN = frozenset({"time", "level", "event", "message", "exception", "stacks", _SAID})


def note_said_fields(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
    """Console: before the message is rendered, note which fields the catalog message will
    show (none when the caller wrote the message), so the line does not repeat them."""
    if event_dict.get("message") is None:
        event_dict[_SAID] = message_fields(str(event_dict.get("event", "")), _language)
    return event_dict


def console_columns(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
    """What the console line shows: time, level, the message's first line and
    "[event field=value ...]" with only the short scalar fields the message does not already
    say; the message's other lines, the traceback and any thread stacks go below the line
    (ConsoleRenderer prints `exception` there)."""
    message = str(event_dict.get("message", ""))
    first, _, rest = message.partition("\n")
    said = event_dict.get(_SAID) or frozenset()
    scalars = " ".join(
        f"{k}={_short(v)}"
        for k, v in event_dict.items()
        if k not in _NOT_SHOWN
        and k not in said
        and (v is None or isinstance(v, str | int | float))
        and not (isinstance(v, str) and "\n" in v)
    )
    below = [rest] if rest else []
    if event_dict.get("exception"):
        below.append(str(event_dict["exception"]).rstrip("\n"))
    stacks = event_dict.get("stacks")
    if isinstance(stacks, list):
        for item in stacks:
            if isinstance(item, Mapping):
                below.append(f"--- {item.get('name', '?')} ---")
                below.append(str(item.get("stack", "")).rstrip("\n"))
    columns: EventDict = {
        "time": event_dict.get("time", ""),
        "level": str(event_dict.get("level", method_name)).upper(),
        "message": first,
        "details": f"[{event_dict.get('event', '')}{' ' + scalars if scalars else ''}]",
    }
    if below:
        columns["exception"] = "\n".join(below)
    return columns


_LEVEL_COLORS = {"DEBUG": DIM, "INFO": GREEN, "WARNING": YELLOW, "ERROR": RED, "CRITICAL": RED}


def _console_renderer(*, colors: bool) -> structlog.dev.ConsoleRenderer:
    dim, reset = (DIM, RESET_ALL) if colors else ("", "")

    def level(key: str, value: object) -> str:
        color = _LEVEL_COLORS.get(str(value), "") if colors else ""
        return f"{color}{value!s:<8}{reset}"

    def plain(style: str, prefix: str = "") -> KeyValueColumnFormatter:
        return KeyValueColumnFormatter(
            key_style=None, value_style=style, reset_style=reset, value_repr=str, prefix=prefix
        )

    def omitted(key: str, value: object) -> str:  # every key has a column above
        return ""

    return structlog.dev.ConsoleRenderer(
        columns=[
            Column("time", plain(dim)),
            Column("level", level),
            Column("message", plain("")),
            Column("details", plain(dim, prefix=" ")),  # two spaces before "[event ...]"
            Column("", omitted),
        ]
    )


def _short(value: object) -> str:
    text = str(value)
    return text if len(text) <= CONSOLE_VALUE_CHARS else text[: CONSOLE_VALUE_CHARS - 1] + "…"


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


# ---------------------------------------------------------------------------------------------
# Values: JSON-safe, redacted, capped


def _safe_str(value: object) -> str:
    try:
        return str(value)
    except Exception:
        try:
            return repr(value)
        except Exception:
            return f"<unprintable {type(value).__name__}>"


def _jsonable(value: Any, depth: int = 0) -> Any:  # noqa: PLR0911  # one return per kind
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth > 10:
        return _safe_str(value)
    if isinstance(value, Mapping):
        return {_safe_str(k): _jsonable(v, depth + 1) for k, v in list(value.items())}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v, depth + 1) for v in list(value)]
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {_safe_str(value)}"
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, PurePath):
        return str(value)
    return _safe_str(value)


def _cut(text: str, limit: int, *, keep_tail: bool, removed: int | None = None) -> str:
    if len(text) <= limit:
        return text
    cut = removed if removed is not None else len(text) - limit
    marker = f" …[{cut} chars cut]… "
    if keep_tail:  # tracebacks and stacks: the innermost frames and the error are at the end
        head = limit // 8
        return text[:head] + marker + text[len(text) - (limit - head) :]
    return text[:limit] + marker


def _limit_for(key: str) -> tuple[int, bool]:
    if key == "message":
        return MESSAGE_CHARS, False
    if _STACK_KEY.search(key):
        return STACK_CHARS, True
    if _DETAIL_KEY.search(key):
        return DETAIL_CHARS, False
    return DEFAULT_CHARS, False


def _clean_text(text: str, key: str) -> str:
    """Redacted, then cut to the field's cap, so half a secret is never left at a cut.

    A string far over its cap is first trimmed (without a marker) to the cap plus a wide margin
    on each kept side, so a 5 MB body costs little to redact: a secret straddling a trim point
    lies in the part the final cut drops anyway, unless redaction shrank the text by more than
    the margin, in which case the whole text is redacted.
    """
    limit, keep_tail = _limit_for(key)
    original = len(text)
    wide = limit + 8 * TRIM_MARGIN
    trimmed = text
    if original > wide:
        head = wide // 8 if keep_tail else wide
        trimmed = text[:head] + ("\n" + text[original - (wide - head) :] if keep_tail else "")
    redacted = redact_text(trimmed)
    if len(trimmed) < original and len(redacted) < len(trimmed) - TRIM_MARGIN // 2:
        redacted = redact_text(text)
    return _cut(redacted, limit, keep_tail=keep_tail, removed=max(original, len(redacted)) - limit)


def _sanitize(value: Any, key: str) -> Any:
    if is_secret_name(key) and value not in (None, "", False):
        return REDACTED
    if isinstance(value, str):
        return _clean_text(value, key)
    if isinstance(value, dict):
        return {_clean_text(str(k), "key"): _sanitize(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_sanitize(v, key) for v in value]
    return value
