"""Human-readable report blocks for a person reading the logs: resources, skipped pages, final summary.

Pure functions from plain mappings to multi-line text, in Chinese ("zh", the default) or English
("en"). They never raise on odd input: a missing value shows as "?", a field that failed to be
measured shows its error text, and everything else in the block still prints.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence

from app.messages import (
    MISSING,
    error_class_label,
    has_label,
    human_bytes,
    human_duration,
    in_language,
    label,
    render_message,
    status_label,
)

_INDENT = "  "



def display_width(text: str) -> int:
    """Terminal columns `text` takes: CJK and other wide characters count two."""
    width = 0
    for char in text:
        if unicodedata.combining(char) or char == "\ufe0f":
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


def _rows(rows: Sequence[tuple[str, str]], indent: str = _INDENT) -> list[str]:
    """Aligned "label: value" lines; continuation lines of a value line up under it."""
    width = max((display_width(name) for name, _ in rows), default=0)
    lines: list[str] = []
    for name, value in rows:
        pad = " " * (width - display_width(name))
        head = f"{indent}{name}:{pad} "
        value_lines = value.split("\n")
        lines.append(head + value_lines[0])
        lines.extend(" " * display_width(head) + more for more in value_lines[1:])
    return lines


def _num(value: object, fmt: str = "") -> str:
    if value is None:
        return MISSING
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return format(value, fmt or ",")
        except (TypeError, ValueError):
            return str(value)
    return str(value)


def _pct(value: object) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:.1f}%"
    return MISSING if value is None else str(value)


def _field(snapshot: Mapping[str, object], key: str) -> Mapping[str, object] | None:
    value = snapshot.get(key)
    return value if isinstance(value, Mapping) else None


def _failed(part: Mapping[str, object] | None, language: str) -> str | None:
    """The failure text of a snapshot field, or None when it holds values."""
    if part is None:
        return f"{label('failed', language)}: {MISSING}"
    if "error" in part and part.get("error") is not None and len(part) == 1:
        return f"{label('failed', language)}: {part['error']}"
    return None


def _memory(part: Mapping[str, object], language: str) -> str:
    return (
        f"RSS {human_bytes(part.get('rss_bytes'))} · VMS {human_bytes(part.get('vms_bytes'))}"
        f" · {_pct(part.get('percent'))}"
    )


def _cpu(part: Mapping[str, object], language: str) -> str:
    sep = in_language(language, "", " ")
    return (
        f"{label('process', language)} {_pct(part.get('process_percent'))} · "
        f"{label('system', language)} {_pct(part.get('system_percent'))}"
        f" ({_num(part.get('cores'))}{sep}{label('cores', language)})"
    )


def _connections(part: Mapping[str, object], language: str) -> str:
    return (
        f"{label('established', language)} {_num(part.get('established'))} · "
        f"{label('total', language)} {_num(part.get('total'))}"
    )


def _disk(part: Mapping[str, object], language: str) -> str:
    return (
        f"{label('used', language)} {human_bytes(part.get('used_bytes'))} / "
        f"{human_bytes(part.get('total_bytes'))} ({_pct(part.get('percent'))}) · "
        f"{label('free', language)} {human_bytes(part.get('free_bytes'))}"
        f" · {part.get('path', MISSING)}"
    )


def _output_files(part: Mapping[str, object], language: str) -> str:
    if "dir" in part and part.get("dir") is None:
        return label("no_local_output", language)
    sep = in_language(language, "", " ")
    text = (
        f"{_num(part.get('count'))}{sep}{label('files', language)} · "
        f"{human_bytes(part.get('total_bytes'))}"
    )
    newest = part.get("newest")
    if isinstance(newest, Sequence) and not isinstance(newest, str):
        for item in newest:
            if isinstance(item, Mapping):
                name = item.get("name", MISSING)
                text += f"\n{label('newest', language)}: {name} ({human_bytes(item.get('bytes'))})"
    return text


def _api(part: Mapping[str, object], language: str) -> str:
    if part.get("configured") is False:
        return label("not_configured", language)
    target = f"{part.get('host', MISSING)}:{part.get('port', MISSING)}"
    if part.get("reachable"):
        return f"{label('reachable', language)} {target} ({_num(part.get('latency_ms'), '.0f')} ms)"
    return f"{label('unreachable', language)} {target}: {part.get('detail', MISSING)}"


_RESOURCE_FIELDS = (
    ("memory", "memory", _memory),
    ("cpu", "cpu", _cpu),
    ("connections", "connections", _connections),
    ("disk", "disk", _disk),
    ("output_files", "output_files", _output_files),
    ("api_connectivity", "api", _api),
)


def _field_values(fields: Iterable[tuple[str, str, Callable[[Mapping[str, object], str], str]]],
                  snapshot: Mapping[str, object], language: str) -> list[tuple[str, str]]:
    """(label, rendered value) of each snapshot field; a failed field shows its error, and an odd
    value its repr, never hiding the others."""
    values: list[tuple[str, str]] = []
    for key, name, render in fields:
        part = _field(snapshot, key)
        failure = _failed(part, language)
        if failure is None and part is not None:
            try:
                value = render(part, language)
            except Exception as exc:
                value = f"{label('failed', language)}: {exc!r}"
        else:
            value = failure or MISSING
        values.append((label(name, language), value))
    return values


def render_resource_report(title: str, snapshot: Mapping[str, object], language: str) -> str:
    """The resource block: one aligned row per snapshot field, a failed field shows its error."""
    shown_title = render_message(title, {}, language) if title in ("heartbeat",) else title
    rows = _field_values(_RESOURCE_FIELDS, snapshot, language)
    uptime = snapshot.get("uptime_seconds")
    rows.insert(0, (label("uptime", language), human_duration(uptime, language)
                    if uptime is not None else MISSING))
    header = f"{label('resource_title', language)} · {shown_title}"
    return "\n".join([header, *_rows(rows)])


def _rss(part: Mapping[str, object], language: str) -> str:
    return f"RSS {human_bytes(part.get('rss_bytes'))} ({_pct(part.get('percent'))})"


def _cpu_short(part: Mapping[str, object], language: str) -> str:
    return (f"{label('process', language)} {_pct(part.get('process_percent'))} · "
            f"{label('system', language)} {_pct(part.get('system_percent'))}")


def _established(part: Mapping[str, object], language: str) -> str:
    return f"{label('established', language)} {_num(part.get('established'))}"


_RESOURCE_LINE_FIELDS = (
    ("memory", "memory", _rss),
    ("cpu", "cpu", _cpu_short),
    ("connections", "connections", _established),
    ("api_connectivity", "api_short", _api),
)


def render_resource_line(title: str, snapshot: Mapping[str, object], language: str,
                         unreported: int = 0) -> str:
    """The resource diagnosis in one line (a retry's): memory, CPU, connections and whether the
    API accepts a connection; a failed field shows its error. `unreported`: retries of the
    same account since its last such line, which got none."""
    parts = [f"{name} {value}" for name, value in
             _field_values(_RESOURCE_LINE_FIELDS, snapshot, language)]
    colon = ": " if language == "en" else "："
    text = f"{label('resource_title', language)} · {title}{colon}" + " · ".join(parts)
    if unreported:
        text += label("retries_unreported", language).format(n=unreported)
    return text


def _table(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    widths = [display_width(h) for h in header]
    for row in body:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], display_width(cell))

    def line(cells: Sequence[str]) -> str:
        padded = [c + " " * (w - display_width(c)) for c, w in zip(cells, widths, strict=True)]
        return (_INDENT + "  ".join(padded)).rstrip()

    return [line(header), *(line(row) for row in body)]


def render_skip_report(skipped: Sequence[Mapping[str, object]], language: str) -> str:
    """The skipped-pages block: a table of account, date, page, error and attempts."""
    if not skipped:
        return label("no_skips", language)
    header = [label(k, language) for k in ("account", "date", "page", "error", "attempts")]
    body = [
        [
            str(item.get("account", MISSING)),
            str(item.get("date", MISSING)),
            str(item.get("page", MISSING)),
            error_class_label(str(item.get("error_class", "other")), language),
            str(item.get("attempts", MISSING)),
        ]
        for item in skipped
    ]
    title = f"{label('skip_title', language)} ({len(skipped)})"
    return "\n".join([title, *_table(header, body)])


def _retries(retries: object, language: str) -> str:
    if not isinstance(retries, Mapping) or not retries:
        return label("no_retries", language)
    counts = sorted(retries.items(), key=lambda kv: (-_as_int(kv[1]), str(kv[0])))
    return " · ".join(f"{error_class_label(str(k), language)} ×{v}" for k, v in counts)


def _as_int(value: object) -> int:
    return value if isinstance(value, int) else 0


def _result(result: object, language: str) -> str:
    if not isinstance(result, Mapping):
        return label("no_result", language)
    return (
        f"{result.get('uri', MISSING)}\n"
        f"{human_bytes(result.get('size'))} · crc32c {result.get('crc32c', MISSING)}"
    )


def _changes(changes: object, language: str) -> str:
    if not isinstance(changes, Mapping):
        return MISSING
    text = label("changes_value", language).format(added=_num(changes.get("added")),
                                                removed=_num(changes.get("removed")))
    transitions = changes.get("transitions")
    if isinstance(transitions, Mapping) and transitions:
        moves = sorted(transitions.items(), key=lambda kv: (-_as_int(kv[1]), str(kv[0])))
        text += " · " + " · ".join(
            "→".join(_conversion_status(part, language) for part in str(k).split("->"))
            + f" ×{v}" for k, v in moves)
    return text


def _conversion_status(status: str, language: str) -> str:
    key = f"conversion_{status}"
    return label(key, language) if has_label(key) else status


def _count(days: object) -> str:
    return str(len(days)) if isinstance(days, Sequence) and not isinstance(days, str) else MISSING


def _requests(summary: Mapping[str, object], language: str) -> str:
    """Every API request sent, and how many of them authenticated (when the summary says)."""
    total = _num(summary.get("requests"))
    auth = summary.get("auth_requests")
    if auth is None:
        return total
    return label("requests_value", language).format(total=total, auth=_num(auth))


def render_final_summary(summary: Mapping[str, object], language: str) -> str:
    """The end-of-run block: status, range, counts, retries, output, then skips and resources."""
    status = str(summary.get("status", MISSING))
    accounts = summary.get("accounts")
    account_text = (
        ", ".join(str(a) for a in accounts)
        if isinstance(accounts, Sequence) and not isinstance(accounts, str)
        else str(accounts if accounts is not None else MISSING)
    )
    units = summary.get("units")
    if isinstance(units, Mapping):
        unit_text = label("units_value", language).format(
            total=units.get("total", MISSING),
            done=units.get("done", MISSING),
            failed=units.get("failed", MISSING),
        )
    else:
        unit_text = MISSING
    skipped = summary.get("skipped_pages")
    skipped_list: list[Mapping[str, object]] = (
        [s for s in skipped if isinstance(s, Mapping)]
        if isinstance(skipped, Sequence) and not isinstance(skipped, str)
        else []
    )
    duration = summary.get("duration_seconds")
    rows = [
        (label("status", language), status_label(status, language)),
        (label("range", language),
         f"{summary.get('start_date', MISSING)} → {summary.get('end_date', MISSING)}"),
        (label("accounts", language), account_text),
        (label("runtime", language),
         human_duration(duration, language) if duration is not None else MISSING),
        (label("currency", language), str(summary.get("currency") or label("local_currency", language))),
        (label("records", language), _num(summary.get("records"))),
        (label("pages", language), _num(summary.get("pages"))),
        (label("requests", language), _requests(summary, language)),
        (label("units", language), unit_text),
        (label("reused", language), _count(summary.get("reused_days"))),
        (label("kept", language), _count(summary.get("kept_days"))),
        (label("changes", language), _changes(summary.get("changes"), language)),
        (label("skipped", language), str(len(skipped_list))),
        (label("retries", language), _retries(summary.get("retries"), language)),
        (label("bytes_written", language), human_bytes(summary.get("bytes_written"))),
        (label("result", language), _result(summary.get("result"), language)),
    ]
    title = f"{label('summary_title', language)} · {status_label(status, language)}"
    blocks = ["\n".join([title, *_rows(rows)]), render_skip_report(skipped_list, language)]
    resources = summary.get("resources")
    if isinstance(resources, Mapping) and resources:
        final_title = in_language(language, "最终", "final")
        blocks.append(render_resource_report(final_title, resources, language))
    return "\n\n".join(blocks)



ORIGINAL_RULE = "=" * 60
"""The original module's report frame."""
ORIGINAL_DETAIL_FILES = 3
"""The original report lists the last three JSON files."""


def _real(part: Mapping[str, object], key: str) -> float:
    """A reading's number (an odd value raises: its line then shows as failed)."""
    value = part[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{key}: not a number")
    return float(value)


def render_original_resource_report(prefix: str, status: Mapping[str, object], language: str,
                                     *, show_details: bool = True) -> str:
    """The original module's resource report (`print_resource_status`), line for line, from the
    original monitor's readings: `runtime`, `memory`, `cpu`, `network`, `connectivity` (bool),
    `disk`, `json_files`, each shaped as that monitor's `get_*` method returns it (a failed one
    holds "error"). A reading missing or odd shows as failed in its line; the rest still print."""

    def text(key: str) -> str:
        return label(key, language)

    def failed(part: object) -> str:
        error = part.get("error") if isinstance(part, Mapping) else None
        return f"{text('orig_failed')} - {error if error is not None else MISSING}"

    def line(icon: str, key: str, render: Callable[[Mapping[str, object]], str],
             part: object) -> str:
        head = f"{icon} {text(key)}: "
        if not isinstance(part, Mapping) or "error" in part:
            return head + failed(part)
        try:
            return head + render(part)
        except Exception as exc:  # an odd reading must not hide the other lines
            return head + failed({"error": f"{type(exc).__name__}: {exc}"})

    def memory(m: Mapping[str, object]) -> str:
        return (f"{_real(m, 'rss'):.1f}MB (RSS), {_real(m, 'vms'):.1f}MB (VMS),"
                f" {_real(m, 'percent'):.1f}%")

    def cpu(c: Mapping[str, object]) -> str:
        return text("orig_cpu_value").format(process=_real(c, "process_cpu"),
                                             system=_real(c, "system_cpu"),
                                             cores=int(_real(c, "cpu_count")))

    def connections(n: Mapping[str, object]) -> str:
        return text("orig_connections_value").format(
            established=int(_real(n, "established_connections")),
            total=int(_real(n, "total_connections")))

    def disk(d: Mapping[str, object]) -> str:
        return (f"{_real(d, 'used'):.1f}GB/{_real(d, 'total'):.1f}GB"
                f" ({_real(d, 'percent'):.1f}%)")

    def files(part: Mapping[str, object]) -> str:
        value = text("orig_json_value").format(count=int(_real(part, "count")),
                                               size=_real(part, "total_size_mb"))
        listed = part.get("files")
        if show_details and isinstance(listed, Sequence) and listed:
            value += f"\n   {text('orig_details')}:"
            for item in list(listed)[-ORIGINAL_DETAIL_FILES:]:
                if isinstance(item, Mapping):
                    name = item.get("name", MISSING)
                    value += f"\n     - {name}: {_real(item, 'size_mb'):.1f}MB"
        return value

    runtime = status.get("runtime")
    runtime_text = (runtime.get("runtime_formatted", MISSING) if isinstance(runtime, Mapping)
                    else MISSING)
    lines = [ORIGINAL_RULE, f"🔍 {prefix} {text('orig_report')}", ORIGINAL_RULE,
             f"⏱️  {text('orig_runtime')}: {runtime_text}",
             line("💾", "orig_memory", memory, status.get("memory")),
             line("⚡", "orig_cpu", cpu, status.get("cpu"))]
    network = status.get("network")
    if isinstance(network, Mapping) and "error" not in network:
        lines.append(line("🌐", "orig_connections", connections, network))
        reachable = status.get("connectivity") is True
        lines.append(f"🌐 {text('orig_connectivity')}: "
                     f"{text('orig_connectivity_ok' if reachable else 'orig_connectivity_down')}")
    else:
        lines.append(f"🌐 {text('orig_network')}: {failed(network)}")
    lines.append(line("💿", "orig_disk", disk, status.get("disk")))
    lines.append(line("📄", "orig_json", files, status.get("json_files")))
    lines.append(ORIGINAL_RULE)
    return "\n".join(lines)
