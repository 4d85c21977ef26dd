"""The human-readable report blocks (resources, skipped pages, final summary), pinned in both languages."""

from __future__ import annotations

import pytest

from app.reports import (
    display_width,
    render_final_summary,
    render_resource_report,
    render_skip_report,
)

SNAPSHOT: dict[str, object] = {
    "memory": {"rss_bytes": 89_347_072, "vms_bytes": 432_013_312, "percent": 1.1},
    "cpu": {"process_percent": 12.5, "system_percent": 30.5, "cores": 2},
    "connections": {"established": 3, "total": 5},
    "disk": {
        "path": "/data/out",
        "total_bytes": 107_374_182_400,
        "used_bytes": 48_427_557_683,
        "free_bytes": 58_946_624_717,
        "percent": 45.1,
    },
    "output_files": {
        "dir": "/data/out",
        "count": 12,
        "total_bytes": 3_565_158,
        "newest": [
            {"name": "parts/acme/2025-01-02.ndjson.gz", "bytes": 1_258_291},
            {"name": "parts/acme/2025-01-01.ndjson.gz", "bytes": 998},
        ],
    },
    "uptime_seconds": 83.4,
    "api_connectivity": {
        "host": "api.involve.asia",
        "port": 443,
        "reachable": True,
        "latency_ms": 23.4,
    },
}

SKIPPED: list[dict[str, object]] = [
    {"account": "acme", "date": "2025-01-01", "page": 15, "error_class": "timeout", "attempts": 6},
    {
        "account": "beta-shop",
        "date": "2025-01-02",
        "page": 3,
        "error_class": "http_status",
        "attempts": 6,
    },
]

SUMMARY: dict[str, object] = {
    "status": "partial",
    "start_date": "2025-01-01",
    "end_date": "2025-01-02",
    "accounts": ["acme", "beta-shop"],
    "records": 12345,
    "pages": 124,
    "requests": 131,
    "skipped_pages": SKIPPED,
    "retries": {"rate_limited": 1, "timeout": 3},
    "duration_seconds": 4983.2,
    "bytes_written": 3_565_158,
    "result": {
        "uri": "gs://bucket/conversions/2025-01-01_2025-01-02/conversions.ndjson.gz",
        "size": 3_565_158,
        "crc32c": "yZRlqg==",
    },
    "resources": SNAPSHOT,
    "units": {"total": 4, "done": 4, "failed": 0},
    "currency": "USD",
    "reused_days": [{"account": "acme", "date": "2025-01-01"}],
    "kept_days": [],
    "changes": {"added": 5, "removed": 1, "transitions": {"pending->approved": 12,
                                                          "pending->rejected": 3}, "days": []},
}

RESOURCE_ZH = """\
📊 资源报告 · 第15页超时重试2
  运行时长:  1分23秒
  内存:      RSS 85.2 MB · VMS 412.0 MB · 1.1%
  CPU:       进程 12.5% · 系统 30.5% (2核)
  网络连接:  已建立 3 · 总计 5
  磁盘:      已用 45.1 GB / 100.0 GB (45.1%) · 可用 54.9 GB · /data/out
  输出文件:  12个文件 · 3.4 MB
             最新: parts/acme/2025-01-02.ndjson.gz (1.2 MB)
             最新: parts/acme/2025-01-01.ndjson.gz (998 B)
  API连通性: ✅ 可达 api.involve.asia:443 (23 ms)"""

RESOURCE_EN = """\
📊 Resource report · page 15 timeout, retry 2
  Uptime:        1m 23s
  Memory:        RSS 85.2 MB · VMS 412.0 MB · 1.1%
  CPU:           process 12.5% · system 30.5% (2 cores)
  Connections:   established 3 · total 5
  Disk:          used 45.1 GB / 100.0 GB (45.1%) · free 54.9 GB · /data/out
  Output files:  12 files · 3.4 MB
                 newest: parts/acme/2025-01-02.ndjson.gz (1.2 MB)
                 newest: parts/acme/2025-01-01.ndjson.gz (998 B)
  API reachable: ✅ reachable api.involve.asia:443 (23 ms)"""

SKIP_ZH = """\
⏭️ 跳过的页面 (2)
  账户       日期        页码  错误      尝试次数
  acme       2025-01-01  15    超时      6
  beta-shop  2025-01-02  3     HTTP错误  6"""

SKIP_EN = """\
⏭️ Skipped pages (2)
  Account    Date        Page  Error       Attempts
  acme       2025-01-01  15    timeout     6
  beta-shop  2025-01-02  3     HTTP error  6"""

SUMMARY_ZH_HEAD = """\
🏁 运行摘要 · ⚠️ 部分完成
  状态:     ⚠️ 部分完成
  日期范围: 2025-01-01 → 2025-01-02
  账户:     acme, beta-shop
  总用时:   1小时23分3秒
  币种:     USD
  记录数:   12,345
  页数:     124
  请求数:   131
  任务单元: 共4个，完成4个，失败0个
  沿用快照: 1
  保留快照: 0
  数据变化: 新增5条 · 移除1条 · 待审核→已通过 ×12 · 待审核→已拒绝 ×3
  跳过页数: 2
  重试:     超时 ×3 · 限流 ×1
  写入字节: 3.4 MB
  结果文件: gs://bucket/conversions/2025-01-01_2025-01-02/conversions.ndjson.gz
            3.4 MB · crc32c yZRlqg=="""

SUMMARY_EN_HEAD = """\
🏁 Run summary · ⚠️ partial
  Status:        ⚠️ partial
  Date range:    2025-01-01 → 2025-01-02
  Accounts:      acme, beta-shop
  Runtime:       1h 23m 3s
  Currency:      USD
  Records:       12,345
  Pages:         124
  Requests:      131
  Units:         4/4 done, 0 failed
  Reused days:   1
  Kept days:     0
  Changes:       5 added · 1 removed · pending→approved ×12 · pending→rejected ×3
  Skipped pages: 2
  Retries:       timeout ×3 · rate limited ×1
  Bytes written: 3.4 MB
  Result:        gs://bucket/conversions/2025-01-01_2025-01-02/conversions.ndjson.gz
                 3.4 MB · crc32c yZRlqg=="""


def test_resource_report_zh() -> None:
    """The Chinese resource block has a titled header and one aligned row per field."""
    assert render_resource_report("第15页超时重试2", SNAPSHOT, "zh") == RESOURCE_ZH


def test_resource_report_en() -> None:
    """The English resource block has the same rows with English labels."""
    assert render_resource_report("page 15 timeout, retry 2", SNAPSHOT, "en") == RESOURCE_EN


@pytest.mark.parametrize(
    ("language", "failed_row", "api_row"),
    [
        (
            "zh",
            "  内存:      ❌ 获取失败: AccessDenied: (pid=1)",
            "  API连通性: ❌ 不可达 api.involve.asia:443: TimeoutError: timed out",
        ),
        (
            "en",
            "  Memory:        ❌ unavailable: AccessDenied: (pid=1)",
            "  API reachable: ❌ unreachable api.involve.asia:443: TimeoutError: timed out",
        ),
    ],
)
def test_resource_report_failed_field_keeps_other_rows(
    language: str, failed_row: str, api_row: str
) -> None:
    """A field holding {"error": ...} shows its error text; every other row still prints."""
    broken = dict(SNAPSHOT)
    broken["memory"] = {"error": "AccessDenied: (pid=1)"}
    broken["api_connectivity"] = {
        "host": "api.involve.asia",
        "port": 443,
        "reachable": False,
        "detail": "TimeoutError: timed out",
    }
    lines = render_resource_report("t", broken, language).splitlines()
    reference = (RESOURCE_ZH if language == "zh" else RESOURCE_EN).splitlines()
    assert lines[2] == failed_row
    assert lines[-1] == api_row
    assert lines[1] == reference[1]
    assert lines[3:-1] == reference[3:-1]


def test_resource_report_heartbeat_title_is_localised() -> None:
    """The heartbeat title renders as the catalog's heartbeat text in each language."""
    assert render_resource_report("heartbeat", SNAPSHOT, "zh").startswith("📊 资源报告 · 💓 心跳\n")
    assert render_resource_report("heartbeat", SNAPSHOT, "en").startswith(
        "📊 Resource report · 💓 Heartbeat\n"
    )


def test_resource_report_survives_garbage() -> None:
    """Missing or malformed fields show "?" or an error, never an exception."""
    text = render_resource_report("x", {"memory": "oops", "cpu": {"cores": None}}, "en")
    assert "Memory:        ❌ unavailable: ?" in text
    assert "(? cores)" in text
    assert "Uptime:        ?" in text


def test_resource_report_unconfigured_parts() -> None:
    """No API URL and no local output directory read as such, not as failures."""
    snap = dict(SNAPSHOT)
    snap["api_connectivity"] = {"configured": False}
    snap["output_files"] = {"dir": None, "count": 0, "total_bytes": 0, "newest": []}
    text = render_resource_report("x", snap, "zh")
    assert "API连通性: 未配置" in text
    assert "输出文件:  未使用本地输出" in text


def test_skip_report_zh() -> None:
    """The Chinese skip report is a titled table with human error names."""
    assert render_skip_report(SKIPPED, "zh") == SKIP_ZH


def test_skip_report_en() -> None:
    """The English skip report is the same table with English headers."""
    assert render_skip_report(SKIPPED, "en") == SKIP_EN


def test_skip_report_empty() -> None:
    """No skipped pages is one reassuring line in each language."""
    assert render_skip_report([], "zh") == "✅ 没有跳过的页面"
    assert render_skip_report([], "en") == "✅ No skipped pages"


def test_final_summary_zh() -> None:
    """The Chinese summary: the summary block, then the skip table, then the final resources."""
    expected = "\n\n".join(
        [SUMMARY_ZH_HEAD, SKIP_ZH, RESOURCE_ZH.replace("第15页超时重试2", "最终")]
    )
    assert render_final_summary(SUMMARY, "zh") == expected


def test_final_summary_en() -> None:
    """The English summary has the same three blocks in English."""
    expected = "\n\n".join(
        [SUMMARY_EN_HEAD, SKIP_EN, RESOURCE_EN.replace("page 15 timeout, retry 2", "final")]
    )
    assert render_final_summary(SUMMARY, "en") == expected


@pytest.mark.parametrize(
    ("status", "zh", "en"),
    [("succeeded", "✅ 成功", "✅ succeeded"), ("failed", "❌ 失败", "❌ failed")],
)
def test_final_summary_status_line(status: str, zh: str, en: str) -> None:
    """The title carries the outcome with its emoji marker."""
    summary = {**SUMMARY, "status": status}
    assert render_final_summary(summary, "zh").splitlines()[0] == f"🏁 运行摘要 · {zh}"
    assert render_final_summary(summary, "en").splitlines()[0] == f"🏁 Run summary · {en}"


def test_final_summary_of_nothing() -> None:
    """An empty summary still renders every row, with "?" or "none", and no resource block."""
    text = render_final_summary({}, "en")
    assert "Records:       ?" in text
    assert "Retries:       none" in text
    assert "Result:        none" in text
    assert text.endswith("✅ No skipped pages")


def test_summary_rows_are_aligned_in_display_columns() -> None:
    """Every value in the Chinese summary starts in the same terminal column despite wide labels."""
    rows = [line for line in SUMMARY_ZH_HEAD.splitlines()[1:] if ": " in line and line[2] != " "]
    starts = {display_width(line.split(": ", 1)[0]) + 2 for line in rows}
    # the labels are padded after the colon, so measure where the value text begins
    value_columns = {
        display_width(line) - display_width(line.split(":", 1)[1].lstrip()) for line in rows
    }
    assert len(value_columns) == 1
    assert len(starts) > 1  # labels of different widths really were padded
