"""Log setup: structlog processors build each event; stdlib logging writes it.

Every event goes through one chain of small processors (structlog convention):

    level filter -> context vars -> call site -> exception text -> JSON-safe values
    -> redaction + field caps -> human message -> entry size budget -> hand over to stdlib

and then to one handler on the root logger:

- "json" (Cloud Run, no TTY, LOG_FORMAT=json): google-cloud-logging's `StructuredLogHandler`,
  constructed explicitly (synchronous, writes to the stream, flushes every line). Never
  `Client.setup_logging()`: for a Cloud Run job that picks a background-thread API handler that
  loses entries when the process exits. We pass the event as a dict message, the account label
  through `extra["labels"]` and the app call site through `extra["source_location"]`, and fix the
  handler's output so each line is exactly: severity, message, event, time, labels,
  sourceLocation, then the event's fields. (Left alone it drops `time`, adds a `python_logger`
  label, empty trace/span/httpRequest keys, and a one-off diagnostic line without our fields.)
- "console" (a terminal, LOG_FORMAT=console): one readable line per event, multi-line reports and
  tracebacks below it.

Records from other libraries (urllib3, google-*) reach the same handler and are redacted and
capped the same way.

Human-readable messages come from `app.messages.CATALOG` in the configured language; JSON field
names are English either way.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
import threading
from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import PurePath
from typing import Any, Literal, TextIO, cast
from urllib.parse import quote, quote_plus

import structlog

from app.messages import render_message

LogFormat = Literal["json", "console"]
LanguageCode = Literal["zh", "en"]

LABELS_KEY = "logging.googleapis.com/labels"
SOURCE_KEY = "logging.googleapis.com/sourceLocation"

MAX_ENTRY_BYTES = 256_000
"""Cloud Logging's limit for one entry is about 256 KB; nothing we write comes near it."""
PAYLOAD_BUDGET = 240_000
"""Bytes the event's own fields may take; the rest is room for labels, time and source."""
STACK_CHARS = 64 * 1024
"""Cap on a traceback or a thread stack dump."""
MESSAGE_CHARS = 32 * 1024
"""Cap on the human message (multi-line reports are a few KB)."""
DETAIL_CHARS = 500
"""Cap on fields named like error / body / detail / response: an HTML error page stays short."""
DEFAULT_CHARS = 16 * 1024
"""Cap on any other string field."""
REDACTED = "[REDACTED]"
TRIM_MARGIN = 2048
"""Longer than any secret or token: see `_clean_text`."""

_STACK_KEY = re.compile(r"(?i)(stack|exception|traceback)")
_DETAIL_KEY = re.compile(r"(?i)(error|body|detail|response|reason|text)")
_SENSITIVE_KEY = re.compile(
    r"(?i)^(.*[_-])?(secret|token|password|passwd|authorization|api[_-]?key|cookie|credentials?)$"
)
_TEXT_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization header in any spelling: "Authorization: Bearer x", "'Authorization': 'x'"
    (
        re.compile(
            r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)((?:bearer|basic|token|jwt)\s+)?"
            r"[^\s\"',;{}\[\]]+"
        ),
        r"\1\2" + REDACTED,
    ),
    # a bearer token anywhere else
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/-]+=*"), r"\1 " + REDACTED),
    # a JWT anywhere (the API's tokens are JWTs)
    (re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), REDACTED),
    # form bodies and query strings: secret=..., token=...
    (
        re.compile(
            r"(?i)\b((?:api_|client_|access_|refresh_)?(?:secret|token|password)|api_?key)"
            r"=[^&\s\"']+"
        ),
        r"\1=" + REDACTED,
    ),
    # JSON text: "token": "...", "secret": "..."
    (
        re.compile(
            r"(?i)([\"'](?:api_|client_|access_|refresh_)?(?:secret|token|password)[\"']\s*:\s*"
            r"[\"'])[^\"']*"
        ),
        r"\1" + REDACTED,
    ),
)

_state_lock = threading.Lock()
_language: LanguageCode = "zh"
_handler: logging.Handler | None = None
_secrets: set[str] = set()
_secret_pattern: re.Pattern[str] | None = None


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
    handler: logging.Handler
    if fmt == "json":
        handler = _make_json_handler(out, {str(k): str(v) for k, v in labels.items()})
    else:
        handler = _ConsoleHandler(out, colors=_isatty(out))
    handler.setLevel(logging.NOTSET)
    root = logging.getLogger()
    with _state_lock:
        _language = "en" if language == "en" else "zh"
        if _handler is not None:
            root.removeHandler(_handler)
        _handler = handler
        root.addHandler(handler)
        root.setLevel(level)
    structlog.configure(
        processors=list(PROCESSORS),
        wrapper_class=JobLogger,
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


def register_secret(value: str) -> None:
    """Redact `value` (and its URL-encoded forms) everywhere from now on; < 4 chars is ignored."""
    global _secret_pattern
    if not isinstance(value, str) or len(value) < 4:
        return
    forms = {value, quote_plus(value), quote(value, safe="")}
    with _state_lock:
        if forms <= _secrets:
            return
        _secrets.update(forms)
        ordered = sorted(_secrets, key=len, reverse=True)
        _secret_pattern = re.compile("|".join(re.escape(s) for s in ordered))


def clear_secrets() -> None:
    """Forget every registered secret (for tests)."""
    global _secret_pattern
    with _state_lock:
        _secrets.clear()
        _secret_pattern = None


def redact_text(text: str) -> str:
    """`text` with registered secrets, bearer tokens, JWTs and Authorization values replaced."""
    pattern = _secret_pattern
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    for regex, replacement in _TEXT_PATTERNS:
        text = regex.sub(replacement, text)
    return text


def redact(value: Any, key: str = "") -> Any:
    """A copy of a JSON-safe value with every secret removed; values of secret-named keys go."""
    if key and _SENSITIVE_KEY.match(key) and value not in (None, "", False):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {redact_text(str(k)): redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, key) for v in value]
    return value


class JobLogger(structlog.stdlib.BoundLogger):
    """structlog's stdlib logger, with `exception()` logged at ERROR like structlog's own
    `exception` but without handing the live exception to stdlib (we render it, redacted)."""

    def exception(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
        kw.setdefault("exc_info", True)
        return self._proxy_to_logger("error", event, *args, **kw)


# ---------------------------------------------------------------------------------------------
# Processors


def add_source_location(
    logger: Any, method_name: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """Record the first frame outside structlog, logging and this module: the real call site."""
    frame = sys._getframe(1)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if not (
            module.startswith("structlog")
            or module == "logging"
            or module.startswith("logging.")
            or module == __name__
        ):
            break
        frame = frame.f_back  # type: ignore[assignment]
    if frame is not None:
        event_dict["_source"] = {
            "file": frame.f_code.co_filename,
            "line": frame.f_lineno,
            "function": frame.f_code.co_qualname,
        }
    return event_dict


def add_message(
    logger: Any, method_name: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """Render `message` from the catalog in the configured language unless the caller gave one.

    Runs after redaction and field caps, so the message is built from safe, short values.
    """
    if event_dict.get("message") is None:
        event = str(event_dict.get("event", ""))
        rendered = render_message(event, event_dict, _language)
        event_dict["message"] = _cut(rendered, MESSAGE_CHARS, keep_tail=False)
    return event_dict


def make_json_safe(
    logger: Any, method_name: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """Turn every value into something `json.dumps` takes; anything else becomes its text."""
    return {str(k): (v if k == "_source" else _jsonable(v)) for k, v in event_dict.items()}


def redact_and_cap(
    logger: Any, method_name: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """The one redaction step: secrets, tokens and Authorization values leave every field, and
    long strings are cut per field kind (error bodies to a few hundred chars, stacks to 64 KB).

    Redaction runs before the final cut so half a secret is never left at a cut; a string far
    over its cap is first trimmed with a wide margin so a 5 MB body costs little to redact.
    """
    return {k: (v if k == "_source" else _sanitize(v, k)) for k, v in event_dict.items()}


def fit_budget(
    logger: Any, method_name: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """Keep the whole entry under Cloud Logging's size limit, cutting the longest strings."""
    return _fit_budget(dict(event_dict))


def to_stdlib(
    logger: Any, method_name: str, event_dict: structlog.typing.EventDict
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Hand the finished event to stdlib logging: the dict as message, labels and call site."""
    source = event_dict.pop("_source", None)
    account = event_dict.get("account")
    labels = {"account": str(account) if account not in (None, "") else "-"}
    payload = {
        "event": event_dict.pop("event", ""),
        "message": event_dict.pop("message", ""),
        **event_dict,
    }
    extra: dict[str, Any] = {"labels": labels}
    if source is not None:
        extra["source_location"] = source
    return (payload,), {"extra": extra}


PROCESSORS: tuple[structlog.typing.Processor, ...] = (
    structlog.stdlib.filter_by_level,
    structlog.contextvars.merge_contextvars,
    add_source_location,
    structlog.processors.format_exc_info,
    make_json_safe,
    redact_and_cap,
    add_message,
    fit_budget,
    to_stdlib,  # returns stdlib (args, kwargs), which structlog passes on as a call
)


# ---------------------------------------------------------------------------------------------
# Value helpers


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


def _trim(text: str, limit: int, *, keep_tail: bool) -> str:
    """Like `_cut` without a marker: the part `_cut` to a smaller limit would keep, and more."""
    if len(text) <= limit:
        return text
    if keep_tail:
        head = limit // 8
        return text[:head] + "\n" + text[len(text) - (limit - head) :]
    return text[:limit]


def _limit_for(key: str) -> tuple[int, bool]:
    if key == "message":
        return MESSAGE_CHARS, False
    if _STACK_KEY.search(key):
        return STACK_CHARS, True
    if _DETAIL_KEY.search(key):
        return DETAIL_CHARS, False
    return DEFAULT_CHARS, False


def _clean_text(text: str, key: str) -> str:
    limit, keep_tail = _limit_for(key)
    original = len(text)
    # The trim keeps TRIM_MARGIN more than the final cut on each kept side, so any secret
    # straddling a trim boundary lies in the part the final cut drops anyway.
    trimmed = _trim(text, limit + 8 * TRIM_MARGIN, keep_tail=keep_tail)
    redacted = redact_text(trimmed)
    if len(trimmed) < original and len(redacted) < len(trimmed) - TRIM_MARGIN // 2:
        redacted = redact_text(text)  # redaction shrank it so much the margin may be gone
    text = redacted
    return _cut(text, limit, keep_tail=keep_tail, removed=max(original, len(text)) - limit)


def _sanitize(value: Any, key: str = "") -> Any:
    if key and _SENSITIVE_KEY.match(key) and value not in (None, "", False):
        return REDACTED
    if isinstance(value, str):
        return _clean_text(value, key)
    if isinstance(value, dict):
        return {_clean_text(str(k), "key"): _sanitize(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_sanitize(v, key) for v in value]
    return value


def _rough_chars(value: Any) -> int:
    """Characters of a JSON-safe value before escaping, counting numbers and punctuation
    generously (a number or literal is at most 24 chars)."""
    if isinstance(value, str):
        return len(value) + 2
    if isinstance(value, dict):
        return 2 + sum(len(k) + 4 + _rough_chars(v) for k, v in value.items())
    if isinstance(value, list):
        return 2 + sum(_rough_chars(v) + 1 for v in value)
    return 24


def _encoded_size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False).encode("utf-8"))


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], str]]:
    if isinstance(value, str):
        return [(path, value)]
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in _leaves(v, (*path, k))]
    if isinstance(value, list):
        return [leaf for i, v in enumerate(value) for leaf in _leaves(v, (*path, i))]
    return []


def _replace(root: Any, path: tuple[Any, ...], new: str) -> None:
    target = root
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = new


def _water_level(lengths: list[int], reduce_by: int) -> int:
    """The largest cap L such that cutting every length above L to L saves `reduce_by`."""
    ordered = sorted(lengths, reverse=True)
    total = 0
    for count, length in enumerate(ordered, start=1):
        total += length
        level = (total - reduce_by) // count
        following = ordered[count] if count < len(ordered) else 0
        if level >= following:
            return max(level, 0)
    return 0


def _fit_budget(event_dict: dict[str, Any]) -> dict[str, Any]:
    # Cheap bound first: an escaped char takes at most 6 bytes of JSON.
    if 6 * _rough_chars(event_dict) < PAYLOAD_BUDGET:
        return event_dict
    payload = {k: v for k, v in event_dict.items() if k != "_source"}
    for _ in range(4):
        excess = _encoded_size(payload) - PAYLOAD_BUDGET
        if excess <= 0:
            break
        leaves = _leaves(payload)
        # Each char cut saves at least one byte; the cut markers cost ~40 bytes each.
        level = max(_water_level([len(t) for _, t in leaves], excess + 40 * len(leaves)), 200)
        for path, text in leaves:
            if len(text) > level:
                keep_tail = bool(_STACK_KEY.search(" ".join(map(str, path))))
                _replace(payload, path, _cut(text, level, keep_tail=keep_tail))
        payload["entry_truncated"] = True
    if _encoded_size(payload) > PAYLOAD_BUDGET:  # thousands of small values: keep the essentials
        payload = {
            k: v
            for k, v in payload.items()
            if v is None or isinstance(v, bool | int | float) or (isinstance(v, str) and len(v) < 200)
        }
        payload["event"] = event_dict.get("event", "")
        payload["message"] = _cut(str(event_dict.get("message", "")), 4000, keep_tail=False)
        payload["entry_truncated"] = True
    if "_source" in event_dict:
        payload["_source"] = event_dict["_source"]
    return payload


def _foreign_payload(record: logging.LogRecord) -> dict[str, Any]:
    """A record from another library (urllib3, google-*): redacted and capped like ours."""
    try:
        text = record.getMessage()
    except Exception:
        text = _safe_str(record.msg)
    payload: dict[str, Any] = {"event": "log", "message": text, "logger": record.name}
    if record.exc_info:
        payload["exc_info"] = record.exc_info
        payload = dict(structlog.processors.format_exc_info(None, "", payload))
    return _fit_budget(dict(redact_and_cap(None, "", make_json_safe(None, "", payload))))


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _rfc3339(created: float) -> str:
    moment = datetime.fromtimestamp(created, UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


# ---------------------------------------------------------------------------------------------
# Handlers


class _SafeEncoder(json.JSONEncoder):
    def default(self, o: Any) -> Any:
        return _safe_str(o)


def _make_json_handler(stream: TextIO, labels: dict[str, str]) -> logging.Handler:
    # Imported here: google-cloud-logging costs ~0.3 s to import and only the JSON path needs it.
    # Any module of the package runs its __init__, which pulls the API client; there is no
    # cheaper import path to the handler.
    from google.cloud.logging_v2.handlers.structured_log import StructuredLogHandler

    class CloudRunJsonHandler(StructuredLogHandler):
        """StructuredLogHandler whose lines hold exactly our fields (see the module docstring)."""

        def emit_instrumentation_info(self) -> None:
            # The library's one-off diagnostic entry would be a line without message, event or
            # labels; mark it as sent instead of writing it.
            from google.cloud import logging_v2

            logging_v2._instrumentation_emitted = True

        def format(self, record: logging.LogRecord) -> str:
            if not isinstance(record.msg, Mapping):
                adopted = logging.makeLogRecord(record.__dict__)
                adopted.msg, adopted.args, adopted.exc_info = _foreign_payload(record), (), None
                record = adopted
            text = cast(str, super().format(record))  # type: ignore[no-untyped-call]
            try:
                return _tidy_entry(json.loads(text), record)
            except (ValueError, TypeError):
                return text

    return cast(
        logging.Handler,
        CloudRunJsonHandler(  # type: ignore[no-untyped-call]
            labels=labels, stream=stream, json_encoder_cls=_SafeEncoder
        ),
    )


def _tidy_entry(entry: dict[str, Any], record: logging.LogRecord) -> str:
    """Our field order and content: no empty trace keys, no python_logger label, a `time`."""
    labels = entry.pop(LABELS_KEY, None) or {}
    labels.pop("python_logger", None)
    labels.setdefault("account", "-")
    source = entry.pop(SOURCE_KEY, None)
    for key in ("logging.googleapis.com/trace", "logging.googleapis.com/spanId"):
        if entry.get(key) == "":
            del entry[key]
    if entry.get("logging.googleapis.com/trace_sampled") is False:
        del entry["logging.googleapis.com/trace_sampled"]
    if entry.get("httpRequest") == {}:
        del entry["httpRequest"]
    ordered: dict[str, Any] = {
        "severity": entry.pop("severity", record.levelname),
        "message": entry.pop("message", ""),
        "event": entry.pop("event", ""),
        "time": _rfc3339(record.created),
        LABELS_KEY: labels,
    }
    if source:
        ordered[SOURCE_KEY] = source
    ordered.update(entry)
    line = json.dumps(ordered, ensure_ascii=False, separators=(",", ":"), cls=_SafeEncoder)
    if len(line.encode("utf-8")) > MAX_ENTRY_BYTES:  # last guard; fit_budget keeps us far below
        small = {k: ordered[k] for k in ("severity", "message", "event", "time", LABELS_KEY)}
        small["message"] = _cut(str(small["message"]), 4000, keep_tail=False)
        small["entry_truncated"] = True
        line = json.dumps(small, ensure_ascii=False, separators=(",", ":"))
    return line


CONSOLE_VALUE_CHARS = 80
"""The console's trailing field list shows at most this much of a value (the message has more)."""


def _short(value: object) -> str:
    text = str(value)
    return text if len(text) <= CONSOLE_VALUE_CHARS else text[: CONSOLE_VALUE_CHARS - 1] + "…"


_COLORS = {
    "DEBUG": "\x1b[2m",
    "INFO": "\x1b[32m",
    "WARNING": "\x1b[33m",
    "ERROR": "\x1b[31m",
    "CRITICAL": "\x1b[1;31m",
}
_DIM = "\x1b[2m"
_RESET = "\x1b[0m"


class _ConsoleHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """One readable line per event: time, level, the human message, then the event's scalars."""

    def __init__(self, stream: TextIO, *, colors: bool) -> None:
        super().__init__(stream)
        self.colors = colors

    def format(self, record: logging.LogRecord) -> str:
        payload = record.msg if isinstance(record.msg, Mapping) else _foreign_payload(record)
        when = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        level = record.levelname
        message = str(payload.get("message", ""))
        scalars = " ".join(
            f"{k}={_short(v)}"
            for k, v in payload.items()
            if k not in ("event", "message", "exception", "stacks")
            and (v is None or isinstance(v, str | int | float))
            and not (isinstance(v, str) and "\n" in v)
        )
        details = f"[{payload.get('event', '')}{' ' + scalars if scalars else ''}]"
        first, _, rest = message.partition("\n")
        if self.colors:
            head = f"{_DIM}{when}{_RESET} {_COLORS.get(level, '')}{level:<8}{_RESET} {first}"
            line = f"{head}  {_DIM}{details}{_RESET}"
        else:
            line = f"{when} {level:<8} {first}  {details}"
        parts = [line, rest] if rest else [line]
        exception = payload.get("exception")
        if exception:
            parts.append(str(exception).rstrip("\n"))
        stacks = payload.get("stacks")
        if isinstance(stacks, list):
            for item in stacks:
                if isinstance(item, Mapping):
                    parts.append(f"--- {item.get('name', '?')} ---")
                    parts.append(str(item.get("stack", "")).rstrip("\n"))
        return "\n".join(parts)
