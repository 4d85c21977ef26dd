"""Human-readable report blocks for a person reading the logs: resources, skipped pages, final summary.

Pure functions from plain mappings to multi-line text, in Chinese ("zh", the default) or English
("en"). They never raise on odd input: a missing value shows as "?", a field that failed to be
measured shows its error text, and everything else in the block still prints.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence

from app.messages import (
    MISSING,
    error_class_label,
    human_bytes,
    human_duration,
    render_message,
    status_label,
)

_INDENT = "  "

_LABELS: dict[str, tuple[str, str]] = {
    # resource report
    "resource_title": ("📊 资源报告", "📊 Resource report"),
    "memory": ("内存", "Memory"),
    "cpu": ("CPU", "CPU"),
    "connections": ("网络连接", "Connections"),
    "disk": ("磁盘", "Disk"),
    "output_files": ("输出文件", "Output files"),
    "uptime": ("运行时长", "Uptime"),
    "api": ("API连通性", "API reachable"),
    "failed": ("❌ 获取失败", "❌ unavailable"),
    "process": ("进程", "process"),
    "system": ("系统", "system"),
    "cores": ("核", "cores"),
    "established": ("已建立", "established"),
    "total": ("总计", "total"),
    "used": ("已用", "used"),
    "free": ("可用", "free"),
    "files": ("个文件", "files"),
    "newest": ("最新", "newest"),
    "no_local_output": ("未使用本地输出", "no local output"),
    "reachable": ("✅ 可达", "✅ reachable"),
    "unreachable": ("❌ 不可达", "❌ unreachable"),
    "not_configured": ("未配置", "not configured"),
    # skip report
    "skip_title": ("⏭️ 跳过的页面", "⏭️ Skipped pages"),
    "no_skips": ("✅ 没有跳过的页面", "✅ No skipped pages"),
    "account": ("账户", "Account"),
    "date": ("日期", "Date"),
    "page": ("页码", "Page"),
    "error": ("错误", "Error"),
    "attempts": ("尝试次数", "Attempts"),
    # final summary
    "summary_title": ("🏁 运行摘要", "🏁 Run summary"),
    "status": ("状态", "Status"),
    "range": ("日期范围", "Date range"),
    "accounts": ("账户", "Accounts"),
    "runtime": ("总用时", "Runtime"),
    "records": ("记录数", "Records"),
    "pages": ("页数", "Pages"),
    "requests": ("请求数", "Requests"),
    "units": ("任务单元", "Units"),
    "units_value": ("共{total}个，完成{done}个，失败{failed}个", "{done}/{total} done, {failed} failed"),
    "skipped": ("跳过页数", "Skipped pages"),
    "retries": ("重试", "Retries"),
    "no_retries": ("无", "none"),
    "currency": ("币种", "Currency"),
    "local_currency": ("账户本币", "local"),
    "reused": ("沿用快照", "Reused days"),
    "kept": ("保留快照", "Kept days"),
    "changes": ("数据变化", "Changes"),
    "changes_value": ("新增{added}条 · 移除{removed}条", "{added} added · {removed} removed"),
    "conversion_pending": ("待审核", "pending"),
    "conversion_approved": ("已通过", "approved"),
    "conversion_rejected": ("已拒绝", "rejected"),
    "bytes_written": ("写入字节", "Bytes written"),
    "result": ("结果文件", "Result"),
    "no_result": ("无", "none"),
}


def _t(key: str, language: str) -> str:
    pair = _LABELS[key]
    return pair[1] if language == "en" else pair[0]


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
    width = max((display_width(label) for label, _ in rows), default=0)
    lines: list[str] = []
    for label, value in rows:
        pad = " " * (width - display_width(label))
        head = f"{indent}{label}:{pad} "
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
        return f"{_t('failed', language)}: {MISSING}"
    if "error" in part and part.get("error") is not None and len(part) == 1:
        return f"{_t('failed', language)}: {part['error']}"
    return None


def _memory(part: Mapping[str, object], language: str) -> str:
    return (
        f"RSS {human_bytes(part.get('rss_bytes'))} · VMS {human_bytes(part.get('vms_bytes'))}"
        f" · {_pct(part.get('percent'))}"
    )


def _cpu(part: Mapping[str, object], language: str) -> str:
    sep = " " if language == "en" else ""
    return (
        f"{_t('process', language)} {_pct(part.get('process_percent'))} · "
        f"{_t('system', language)} {_pct(part.get('system_percent'))}"
        f" ({_num(part.get('cores'))}{sep}{_t('cores', language)})"
    )


def _connections(part: Mapping[str, object], language: str) -> str:
    return (
        f"{_t('established', language)} {_num(part.get('established'))} · "
        f"{_t('total', language)} {_num(part.get('total'))}"
    )


def _disk(part: Mapping[str, object], language: str) -> str:
    return (
        f"{_t('used', language)} {human_bytes(part.get('used_bytes'))} / "
        f"{human_bytes(part.get('total_bytes'))} ({_pct(part.get('percent'))}) · "
        f"{_t('free', language)} {human_bytes(part.get('free_bytes'))}"
        f" · {part.get('path', MISSING)}"
    )


def _output_files(part: Mapping[str, object], language: str) -> str:
    if "dir" in part and part.get("dir") is None:
        return _t("no_local_output", language)
    sep = " " if language == "en" else ""
    text = (
        f"{_num(part.get('count'))}{sep}{_t('files', language)} · "
        f"{human_bytes(part.get('total_bytes'))}"
    )
    newest = part.get("newest")
    if isinstance(newest, Sequence) and not isinstance(newest, str):
        for item in newest:
            if isinstance(item, Mapping):
                name = item.get("name", MISSING)
                text += f"\n{_t('newest', language)}: {name} ({human_bytes(item.get('bytes'))})"
    return text


def _api(part: Mapping[str, object], language: str) -> str:
    if part.get("configured") is False:
        return _t("not_configured", language)
    target = f"{part.get('host', MISSING)}:{part.get('port', MISSING)}"
    if part.get("reachable"):
        return f"{_t('reachable', language)} {target} ({_num(part.get('latency_ms'), '.0f')} ms)"
    return f"{_t('unreachable', language)} {target}: {part.get('detail', MISSING)}"


_RESOURCE_FIELDS = (
    ("memory", "memory", _memory),
    ("cpu", "cpu", _cpu),
    ("connections", "connections", _connections),
    ("disk", "disk", _disk),
    ("output_files", "output_files", _output_files),
    ("api_connectivity", "api", _api),
)


def render_resource_report(title: str, snapshot: Mapping[str, object], language: str) -> str:
    """The resource block: one aligned row per snapshot field, a failed field shows its error."""
    shown_title = render_message(title, {}, language) if title in ("heartbeat",) else title
    rows: list[tuple[str, str]] = []
    for key, label, render in _RESOURCE_FIELDS:
        part = _field(snapshot, key)
        failure = _failed(part, language)
        if failure is None and part is not None:
            try:
                value = render(part, language)
            except Exception as exc:  # an odd value must not hide the other rows
                value = f"{_t('failed', language)}: {exc!r}"
        else:
            value = failure or MISSING
        rows.append((_t(label, language), value))
    uptime = snapshot.get("uptime_seconds")
    rows.insert(0, (_t("uptime", language), human_duration(uptime, language)
                    if uptime is not None else MISSING))
    header = f"{_t('resource_title', language)} · {shown_title}"
    return "\n".join([header, *_rows(rows)])


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
        return _t("no_skips", language)
    header = [_t(k, language) for k in ("account", "date", "page", "error", "attempts")]
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
    title = f"{_t('skip_title', language)} ({len(skipped)})"
    return "\n".join([title, *_table(header, body)])


def _retries(retries: object, language: str) -> str:
    if not isinstance(retries, Mapping) or not retries:
        return _t("no_retries", language)
    counts = sorted(retries.items(), key=lambda kv: (-_as_int(kv[1]), str(kv[0])))
    return " · ".join(f"{error_class_label(str(k), language)} ×{v}" for k, v in counts)


def _as_int(value: object) -> int:
    return value if isinstance(value, int) else 0


def _result(result: object, language: str) -> str:
    if not isinstance(result, Mapping):
        return _t("no_result", language)
    return (
        f"{result.get('uri', MISSING)}\n"
        f"{human_bytes(result.get('size'))} · crc32c {result.get('crc32c', MISSING)}"
    )


def _changes(changes: object, language: str) -> str:
    if not isinstance(changes, Mapping):
        return MISSING
    text = _t("changes_value", language).format(added=_num(changes.get("added")),
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
    return _t(key, language) if key in _LABELS else status


def _count(days: object) -> str:
    return str(len(days)) if isinstance(days, Sequence) and not isinstance(days, str) else MISSING


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
        unit_text = _t("units_value", language).format(
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
        (_t("status", language), status_label(status, language)),
        (_t("range", language),
         f"{summary.get('start_date', MISSING)} → {summary.get('end_date', MISSING)}"),
        (_t("accounts", language), account_text),
        (_t("runtime", language),
         human_duration(duration, language) if duration is not None else MISSING),
        (_t("currency", language), str(summary.get("currency") or _t("local_currency", language))),
        (_t("records", language), _num(summary.get("records"))),
        (_t("pages", language), _num(summary.get("pages"))),
        (_t("requests", language), _num(summary.get("requests"))),
        (_t("units", language), unit_text),
        (_t("reused", language), _count(summary.get("reused_days"))),
        (_t("kept", language), _count(summary.get("kept_days"))),
        (_t("changes", language), _changes(summary.get("changes"), language)),
        (_t("skipped", language), str(len(skipped_list))),
        (_t("retries", language), _retries(summary.get("retries"), language)),
        (_t("bytes_written", language), human_bytes(summary.get("bytes_written"))),
        (_t("result", language), _result(summary.get("result"), language)),
    ]
    title = f"{_t('summary_title', language)} · {status_label(status, language)}"
    blocks = ["\n".join([title, *_rows(rows)]), render_skip_report(skipped_list, language)]
    resources = summary.get("resources")
    if isinstance(resources, Mapping) and resources:
        final_title = "最终" if language != "en" else "final"
        blocks.append(render_resource_report(final_title, resources, language))
    return "\n\n".join(blocks)
