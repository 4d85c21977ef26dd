"""Human-readable log messages: one catalog of events, each with a Chinese and an English template.

JSON field names are English either way; only the `message` text changes with LOG_LANGUAGE.
Templates are `str.format` strings over the event's own fields plus a few derived ones:

- `error_label`  the human name of `error_class` (see `error_class_label`)
- `status_label` the human name of `status` (succeeded / partial / failed)
- `bytes_human`  `bytes` as "12.3 MB"
- `duration`, `eta`, `account_eta`, `run_eta`  `duration_seconds`, `eta_seconds`,
  `account_eta_seconds`, `run_eta_seconds` as "1分23秒" / "1m 23s"

A field the caller did not pass (or passed as None) renders as "?"; a value that does not fit
the template's format spec is rendered with `str()`; an event that is not in the catalog renders
as its own name. Rendering never raises.
"""

from __future__ import annotations

import functools
import math
import string
from collections.abc import Mapping
from typing import Any, Literal

Language = str
""""zh" or "en"; anything else falls back to Chinese, the default (see `language_code`)."""

LanguageCode = Literal["zh", "en"]


def language_code(value: object) -> LanguageCode:
    """The log language `value` names: "en" is English, anything else Chinese (the default).

    The one place that decides the fallback; everything that picks a text by language asks it.
    """
    return "en" if value == "en" else "zh"


def in_language(language: object, zh: str, en: str) -> str:
    """`en` when `language` is English, else `zh`."""
    return en if language_code(language) == "en" else zh

MISSING = "?"

CATALOG: dict[str, tuple[str, str]] = {
    "job_started": (
        "🚀 任务开始：{start_date} → {end_date}，账户 {accounts}，共{units}个单元"
        "（任务 {task_index}/{task_count}）",
        "🚀 Job started: {start_date} → {end_date}, accounts {accounts}, {units} units"
        " (task {task_index} of {task_count})",
    ),
    "config_invalid": (
        "❌ 配置错误：{variable}={value}，应为 {expected}",
        "❌ Invalid setting: {variable}={value}, expected {expected}",
    ),
    "config_missing": (
        "❌ 配置错误：未设置 {variable}，应设置 {expected}",
        "❌ Invalid setting: {variable} is not set; set {expected}",
    ),
    "config_problem": (
        "❌ 配置错误：{variable}={value}：{problem}",
        "❌ Invalid setting: {variable}={value}: {problem}",
    ),
    "config_secret_flag": (
        "❌ 配置错误：{variable} 不能用命令行参数 {flag} 传入：本机的任何用户都能在进程列表中看到命令行。"
        "请改用环境变量 {variable}（已拒绝运行，什么都没有抓取）",
        "❌ Invalid setting: {variable} was given as the command-line flag {flag}, which every"
        " user of this machine can read in the process list; set the environment variable"
        " {variable} instead (refused: nothing was fetched)",
    ),
    "storage_credentials_missing": (
        "❌ 配置错误：无法访问 GCS_BUCKET={bucket}，没有可用的 GCS 凭据。请为 Cloud Run 作业配置服务账号，"
        "或在本地设置 GOOGLE_APPLICATION_CREDENTIALS（或运行 gcloud auth application-default login）",
        "❌ Invalid setting: cannot use GCS_BUCKET={bucket}, no usable GCS credentials. Give the Cloud Run"
        " job a service account, or locally set GOOGLE_APPLICATION_CREDENTIALS (or run"
        " gcloud auth application-default login)",
    ),
    "storage_config_invalid": (
        "❌ 配置错误：GCS_BUCKET={bucket} 不可用（存储桶不存在，或存储拒绝访问，状态 {status}），"
        "重试无济于事：{error}",
        "❌ Invalid setting: GCS_BUCKET={bucket} cannot be used (the bucket does not exist, or"
        " storage refuses access, status {status}); a retry will not help: {error}",
    ),
    "auth_ok": (
        "🔑 账户 {account} 认证成功",
        "🔑 Account {account} authenticated",
    ),
    "auth_failed": (
        "❌ 账户 {account} 认证失败：{error}",
        "❌ Account {account} failed to authenticate: {error}",
    ),
    "token_refreshed": (
        "🔄 账户 {account} 令牌已刷新（{reason}）",
        "🔄 Account {account}: token refreshed ({reason})",
    ),
    "unit_started": (
        "📅 开始抓取 {account} {date}",
        "📅 Fetching {account} {date}",
    ),
    "waiting_backoff": (
        "⏳ 已经{seconds}秒没有完成页面：{backoffs}个请求正在退避等待，最晚{backoff_ends_in}秒后重试",
        "⏳ No page completed for {seconds}s: {backoffs} request(s) waiting out a back-off,"
        " the last retry in {backoff_ends_in}s",
    ),
    "snapshot_reused": (
        "⏩ {account} {date} 沿用已有的完整快照（{records}条记录，抓取于 {fetched_at}）",
        "⏩ {account} {date}: reusing its complete snapshot ({records} records, fetched"
        " {fetched_at})",
    ),
    "snapshot_kept": (
        "🛟 {account} {date} 本次刷新未被采用，保留此前的完整快照（{records}条记录，抓取于"
        " {fetched_at}）",
        "🛟 {account} {date}: the refresh is not stored; keeping the earlier complete"
        " snapshot ({records} records, fetched {fetched_at})",
    ),
    "day_empty_confirm": (
        "🔎 {account} {date} 接口称当天没有记录，再询问一次确认",
        "🔎 {account} {date}: the API reports no records; asking once more to confirm",
    ),
    "day_short": (
        "⚠️ {account} {date} 只拿到{records}条记录，少于接口所说的{count}条：当天不完整",
        "⚠️ {account} {date}: {records} records, fewer than the {count} the API reports;"
        " the day is incomplete",
    ),
    "day_reread": (
        "🔁 {account} {date} 刷新结果缺少已存快照中的{missing}条记录（{records}条，已存"
        "{stored_records}条），重新抓取一次",
        "🔁 {account} {date}: the refresh lacks {missing} records of the stored snapshot"
        " ({records} vs {stored_records}); reading the day once more",
    ),
    "day_shrank": (
        "⚠️ {account} {date} 两次抓取都缺少已存快照中的{missing}条记录（抓到{fetched_records}条，"
        "已存{kept_records}条）：保留原快照；若上游确实删除了记录，请以"
        " ALLOW_SNAPSHOT_SHRINK=true 重新回填",
        "⚠️ {account} {date}: read twice, the API still lacks {missing} records of the stored"
        " snapshot ({fetched_records} fetched, {kept_records} kept): keeping the snapshot; if"
        " upstream really deleted them, backfill with ALLOW_SNAPSHOT_SHRINK=true",
    ),
    "day_changed": (
        "🔁 {account} {date} 数据有变化：新增{added}条，移除{removed}条，状态变更{changed}条",
        "🔁 {account} {date} changed: {added} added, {removed} removed, {changed} status"
        " changes",
    ),
    "day_volume_low": (
        "📉 {account} {date} 只有{records}条记录，不到此前{reference_days}个已存日期中位数"
        "（{median}条）的五分之一：上游的转化跟踪可能中断了",
        "📉 {account} {date}: {records} records, under a fifth of the median ({median}) of the"
        " {reference_days} stored days before it; tracking may be broken upstream",
    ),
    "status_failed": (
        "💥 无法读取每日数据（{error_label}）：{error}",
        "💥 Could not read the day store ({error_label}): {error}",
    ),
    "page_fetched": (
        "📄 {account} {date} 第{page}/{pages}页：{records}条记录"
        "（请求{duration_ms}毫秒，按限流节奏排队{pacing_ms}毫秒，额外等待{wait_ms}毫秒，第{attempt}次尝试）",
        "📄 {account} {date} page {page}/{pages}: {records} records"
        " ({duration_ms} ms request, {pacing_ms} ms pacing, {wait_ms} ms extra wait,"
        " attempt {attempt})",
    ),
    "page_probe": (
        "🔎 {account} {date} 前{dead}页都无法获取，改用第{page}页确定当天的页数",
        "🔎 {account} {date}: the first {dead} page(s) are dead; sizing the day from page {page}",
    ),
    "page_interrupted": (
        "⏹️ {account} {date} 第{page}页的请求因停止信号中断",
        "⏹️ {account} {date} page {page}: request cut short by the stop signal",
    ),
    "saved": (
        "💾 已保存 {path}（{bytes_human}）",
        "💾 Saved {path} ({bytes_human})",
    ),
    "save_failed": (
        "❌ 无法保存 {path}：{error}",
        "❌ Could not save {path}: {error}",
    ),
    "page_retry": (
        "🔁 {account} {date} 第{page}页{error_label}重试{attempt}，{wait}秒后重试：{error}",
        "🔁 {account} {date} page {page}: {error_label}, retry {attempt} in {wait}s: {error}",
    ),
    "page_skipped": (
        "⏭️ {account} {date} 第{page}页尝试{attempts}次仍失败，已跳过（{error_label}）：{error}",
        "⏭️ {account} {date} page {page} skipped after {attempts} attempts"
        " ({error_label}): {error}",
    ),
    "second_pass_started": (
        "🔂 第二轮：重新抓取{pages}个跳过的页面",
        "🔂 Second pass: retrying {pages} skipped pages",
    ),
    "page_recovered": (
        "✅ {account} {date} 第{page}页补抓成功",
        "✅ {account} {date} page {page} recovered",
    ),
    "skip_cap_reached": (
        "🛑 跳过的页面数 {skipped} 超过上限 {max_skipped}，停止运行",
        "🛑 {skipped} skipped pages exceed the limit of {max_skipped}; stopping",
    ),
    "count_changed": (
        "⚠️ {account} {date} 记录总数在抓取中变化：{old_count} → {new_count}",
        "⚠️ {account} {date} record count changed while paging: {old_count} → {new_count}",
    ),
    "unit_finished": (
        "✅ {account} {date} 完成：{records}条记录，{pages}页，去重{duplicates}条，跳过{skipped}页",
        "✅ {account} {date} done: {records} records, {pages} pages,"
        " {duplicates} duplicates dropped, {skipped} pages skipped",
    ),
    "progress": (
        "⏳ {account} {date} 已完成{pages_done}/{pages}页（{percent:.1f}%），{rate:.1f}页/分钟，"
        "本日预计还需{eta}，本账户预计还需{account_eta}；总进度{run_percent:.1f}%，"
        "{run_rate:.1f}页/分钟，预计还需{run_eta}",
        "⏳ {account} {date}: {pages_done}/{pages} pages ({percent:.1f}%), {rate:.1f} pages/min,"
        " day ETA {eta}, account ETA {account_eta}; run {run_percent:.1f}%,"
        " {run_rate:.1f} pages/min, ETA {run_eta}",
    ),
    "snapshot_replaced": (
        "📦 已写入每日快照 {object}（{bytes_human}，{records}条记录）",
        "📦 Day snapshot written: {object} ({bytes_human}, {records} records)",
    ),
    "result_composed": (
        "🧩 已将{parts}个分片合并为 {object}（{bytes_human}）",
        "🧩 Composed {parts} parts into {object} ({bytes_human})",
    ),
    "scratch_deleted": (
        "🧹 已删除本次执行的{objects}个临时对象（每日副本、分块、合并中间件）",
        "🧹 Deleted {objects} scratch objects of this execution (day copies, chunks, compose"
        " intermediates)",
    ),
    "cleanup_failed": (
        "⚠️ 清理临时对象失败（结果不受影响）：{error}",
        "⚠️ Could not delete temporary objects (the result is not affected): {error}",
    ),
    "summary_written": (
        "📝 运行摘要已写入 {object}（{status_label}）",
        "📝 Run summary written to {object} ({status_label})",
    ),
    "run_finished": (
        "🏁 运行结束：{status_label}，{records}条记录，{pages}页，跳过{skipped}页，"
        "用时{duration}，退出码{exit_code}",
        "🏁 Run finished: {status_label}, {records} records, {pages} pages,"
        " {skipped} skipped, took {duration}, exit code {exit_code}",
    ),
    "run_failed": (
        "💥 运行失败（{error_label}）：{error}",
        "💥 Run failed ({error_label}): {error}",
    ),
    "sigterm_received": (
        "🛑 收到 SIGTERM：不再开始新的工作，正在收尾",
        "🛑 SIGTERM received: starting no new work, wrapping up",
    ),
    "demo_folder_refused": (
        "❌ 演示拒绝写入 {folder}：该文件夹不是空的，也不是演示创建的（没有 {marker} 文件），"
        "演示不会修改它。请用 --output-dir 指定一个新的或空的文件夹",
        "❌ The demo will not write to {folder}: it is not empty and the demo did not make it"
        " (no {marker} file), so it is left as it is. Choose a new or empty folder with"
        " --output-dir",
    ),
    "sigint_received": (
        "🛑 收到 Ctrl-C（SIGINT）：不再开始新的工作，正在收尾",
        "🛑 Ctrl-C (SIGINT) received: starting no new work, wrapping up",
    ),
    "max_records_reached": (
        "🔢 已达到记录上限 {limit}，停止抓取",
        "🔢 Record limit {limit} reached, stopping",
    ),
    "resource_report": (
        "📊 资源报告：{title}",
        "📊 Resource report: {title}",
    ),
    "heartbeat": (
        "💓 心跳",
        "💓 Heartbeat",
    ),
    "stall_detected": (
        "🐢 已经{seconds}秒没有完成任何页面，输出资源状态和所有线程的堆栈",
        "🐢 No page completed for {seconds}s; dumping resources and every thread's stack",
    ),
    "storage_failed": (
        "💥 存储不可用，不再抓取也不再写入，只再尝试一次写入摘要：{error}",
        "💥 Storage failed: nothing more is fetched or stored, the summary is tried once: {error}",
    ),
    "summary_not_written": (
        "❌ 运行摘要未能写入存储：{error}",
        "❌ The run summary could not be stored: {error}",
    ),
    "snapshot_from_earlier_attempt": (
        "⏩ {account} {date} 的快照由本次执行的先前尝试写入（{records}条记录），计入其变更",
        "⏩ {account} {date}: its snapshot was written by an earlier attempt of this execution"
        " ({records} records); its changes count in this summary",
    ),
    "storage_retry": (
        "💾 存储操作 {operation} 失败，正在重试：{error}",
        "💾 Storage {operation} failed, retrying: {error}",
    ),
    "count_unstable": (
        "⚠️ {account} {date} 记录总数在重读{rereads}次后仍在变化，按最后一次结果继续",
        "⚠️ {account} {date} record count still changing after {rereads} rereads;"
        " going on with the last one",
    ),
    "range_already_complete": (
        "✅ 该日期范围已成功完成（{object}），无需再次抓取",
        "✅ This date range already completed successfully ({object}); nothing to fetch",
    ),
    "result_composed_elsewhere": (
        "🧩 结果文件已由其他任务生成：{object}",
        "🧩 The result was already composed by another task: {object}",
    ),
    "summary_written_elsewhere": (
        "📝 运行摘要已由其他任务写入：{object}",
        "📝 The run summary was already written by another task: {object}",
    ),
    "trouble_retry": (
        "[{account}] {date} 第{page}页{error_label}重试{attempt}",
        "[{account}] {date} page {page} {error_label}, retry {attempt}",
    ),
    "trouble_skip": (
        "[{account}] {date} 第{page}页{error_label}跳过",
        "[{account}] {date} page {page} {error_label}, skipped",
    ),
    "watchdog_failed": (
        "⚠️ 看门狗检查出错（运行继续）：{error}",
        "⚠️ Watchdog check failed (the run goes on): {error}",
    ),
    # the original module's interface (app/involve_asia.py)
    "auth_no_credentials": (
        "❌ 账户 {account} 没有 API 密钥（api_secret 参数、config.INVOLVE_ASIA_API_SECRET 或"
        "环境变量 INVOLVE_ASIA_API_SECRET），无法认证",
        "❌ Account {account} has no API secret (the api_secret argument,"
        " config.INVOLVE_ASIA_API_SECRET or INVOLVE_ASIA_API_SECRET), cannot authenticate",
    ),
    "not_authenticated": (
        "❌ {account} 没有有效的认证token，请先调用 authenticate()",
        "❌ {account}: no valid token, call authenticate() first",
    ),
    "fetch_started": (
        "📥 {account} 正在获取转换数据（{start_date} 到 {end_date}）",
        "📥 {account}: fetching conversions {start_date} to {end_date}",
    ),
    "fetch_finished": (
        "✅ {account} 成功获取数据：{records}条转换记录，共{pages}页，跳过{skipped}页",
        "✅ {account}: {records} conversions from {pages} pages, {skipped} pages skipped",
    ),
    "nothing_fetched": (
        "❌ {account} 没有获取到任何数据（{start_date} 到 {end_date}）",
        "❌ {account}: no conversions came back ({start_date} to {end_date})",
    ),
    "save_nothing": (
        "⚠️ 没有数据可保存，未写入文件（{kind}）",
        "⚠️ Nothing to save, no file written ({kind})",
    ),
    "resource_status": (
        "🔍 {title} 系统资源监控报告",
        "🔍 {title} System resource report",
    ),
}

LABELS: dict[str, tuple[str, str]] = {
    # report blocks (app/reports.py), the demo's closing lines, the job's trouble titles
    # resource report
    "resource_title": ("📊 资源报告", "📊 Resource report"),
    "memory": ("内存", "Memory"),
    "cpu": ("CPU", "CPU"),
    "connections": ("网络连接", "Connections"),
    "disk": ("磁盘", "Disk"),
    "output_files": ("输出文件", "Output files"),
    "uptime": ("运行时长", "Uptime"),
    "api": ("API连通性", "API reachable"),
    "api_short": ("API连通性", "API"),
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
    # `python -m app status` (app/status.py)
    "status_title": ("📦 每日数据 {root}", "📦 Day store {root}"),
    "status_range": ("{start} → {end}，共{days}天；现在 {now}（{timezone}）",
                     "{start} → {end}, {days} days; now {now} ({timezone})"),
    "status_account": ("账户 {account}：完整{complete}天，不完整{incomplete}天，缺失{missing}天",
                       "Account {account}: {complete} complete, {incomplete} incomplete,"
                       " {missing} missing"),
    "status_col_date": ("日期", "date"),
    "status_col_weekday": ("星期", "day"),
    "status_col_state": ("状态", "state"),
    "status_col_records": ("记录数", "records"),
    "status_col_pending": ("待审核", "pending"),
    "status_col_age": ("抓取距今", "age"),
    "status_col_flags": ("标记", "flags"),
    "status_weekdays": ("周一,周二,周三,周四,周五,周六,周日", "Mon,Tue,Wed,Thu,Fri,Sat,Sun"),
    "status_age_units": ("天,小时,分", "d,h,m"),
    "status_state_complete": ("完整", "complete"),
    "status_state_incomplete": ("不完整", "incomplete"),
    "status_state_missing": ("缺失", "missing"),
    "status_flag_low_volume": ("记录骤减", "low volume"),
    "status_flag_no_metadata": ("元数据不可读", "no metadata"),
    "status_all_complete": ("✅ 每一天都有完整快照", "✅ Every day has a complete snapshot"),
    "status_problems": ("需要处理的日期：", "Days to fix:"),
    "status_problem_incomplete": ("{date} 不完整：{records}条记录，{age}前抓取",
                                  "{date} incomplete: {records} records, fetched {age} ago"),
    "status_problem_missing": ("{date} 缺失：没有快照", "{date} missing: no snapshot"),
    "status_problem_missing_run": ("{first} → {last} 缺失：没有快照（{days}天）",
                                   "{first} → {last} missing: no snapshot ({days} days)"),
    "status_problem_no_metadata": ("{date} 快照元数据不可读，按不完整计",
                                   "{date}: snapshot metadata unreadable, counted incomplete"),
    "status_problem_low_volume": ("{date} 记录骤减：{records}条，中位数{median}条",
                                  "{date} low volume: {records} records, median {median}"),
    "status_low_volume_note": ("记录骤减：不到本范围完整日期中位数的五分之一，通常是上游\n"
                               "跟踪中断；上游修复后再重新抓取这些日期",
                               "Low volume: under a fifth of the median of the range's complete\n"
                               "days, usually tracking broken upstream; fetch again once fixed"),
    "status_fix": ("重新抓取：", "To fetch them again:"),
    "status_total": ("合计：完整{complete}，不完整{incomplete}，缺失{missing}；退出码 {code}",
                     "Total: {complete} complete, {incomplete} incomplete, {missing} missing;"
                     " exit code {code}"),
    "retries_unreported": ("（该账户上次报告后另有{n}次重试）",
                           " ({n} more retries of this account since its last report)"),
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
    "requests_value": ("{total}（其中认证 {auth} 次）", "{total} ({auth} to authenticate)"),
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
    "demo_finished": ("演示结束，退出码 ", "Demo finished, exit codes "),
    "demo_day_store": ("每日数据", "day store"),
    "conversion_pending": ("待审核", "pending"),
    "conversion_approved": ("已通过", "approved"),
    "conversion_rejected": ("已拒绝", "rejected"),
    "bytes_written": ("写入字节", "Bytes written"),
    "result": ("结果文件", "Result"),
    "no_result": ("无", "none"),
    # the original module's resource report (ResourceMonitor.print_resource_status)
    "orig_report": ("系统资源监控报告", "System resource report"),
    "orig_runtime": ("运行时间", "Runtime"),
    "orig_memory": ("内存使用", "Memory"),
    "orig_cpu": ("CPU使用", "CPU"),
    "orig_cpu_value": ("进程 {process:.1f}%, 系统 {system:.1f}% (共{cores}核)",
                       "process {process:.1f}%, system {system:.1f}% ({cores} cores)"),
    "orig_connections": ("网络连接", "Network connections"),
    "orig_connections_value": ("{established}/{total} (已建立/总数)",
                               "{established}/{total} (established/total)"),
    "orig_connectivity": ("网络连通性", "Connectivity"),
    "orig_connectivity_ok": ("✅ 正常", "✅ OK"),
    "orig_connectivity_down": ("❌ 异常", "❌ down"),
    "orig_network": ("网络信息", "Network"),
    "orig_disk": ("磁盘使用", "Disk"),
    "orig_json": ("JSON文件", "JSON files"),
    "orig_json_value": ("{count} 个文件, 总大小 {size:.1f}MB", "{count} files, {size:.1f}MB in total"),
    "orig_details": ("详细信息", "Details"),
    "orig_failed": ("获取失败", "unavailable"),
    "orig_fetch_started": ("数据获取开始", "fetch started"),
    "orig_fetch_finished": ("数据获取完成", "fetch finished"),
    "orig_page_skipped": ("第{page}页跳过", "page {page} skipped"),
    "orig_final": ("最终状态", "final status"),
}


_ERROR_CLASS_LABELS: dict[str, tuple[str, str]] = {
    "timeout": ("超时", "timeout"),
    "network": ("网络错误", "network error"),
    "http_status": ("HTTP错误", "HTTP error"),
    "rate_limited": ("限流", "rate limited"),
    "json_decode": ("JSON解析错误", "JSON decode error"),
    "api_error": ("API错误", "API error"),
    "empty_page": ("空页", "empty page"),
    "short_page": ("残缺页", "short page"),
    "token": ("令牌失效", "token rejected"),
    "auth": ("认证失败", "authentication failed"),
    "validation": ("参数错误", "invalid request"),
    "storage": ("存储错误", "storage error"),
    "config": ("配置错误", "configuration error"),
    "exists": ("对象已存在", "object already exists"),
    "interrupted": ("被中断", "interrupted"),
    "other": ("其他错误", "other error"),
}

_STATUS_LABELS: dict[str, tuple[str, str]] = {
    "succeeded": ("✅ 成功", "✅ succeeded"),
    "partial": ("⚠️ 部分完成", "⚠️ partial"),
    "failed": ("❌ 失败", "❌ failed"),
}


def _pick(pair: tuple[str, str], language: Language) -> str:
    return in_language(language, *pair)


def label(key: str, language: Language) -> str:
    """A fixed piece of text (a report label, a heading) in `language`."""
    return _pick(LABELS[key], language)


def has_label(key: str) -> bool:
    return key in LABELS


def error_class_label(error_class: str, language: Language) -> str:
    """The human name of an error class ("timeout" -> "超时" / "timeout"); unknown classes as is."""
    pair = _ERROR_CLASS_LABELS.get(error_class)
    return _pick(pair, language) if pair else error_class


def status_label(status: str, language: Language) -> str:
    """The human name of a run status, with its emoji marker; unknown statuses as is."""
    pair = _STATUS_LABELS.get(status)
    return _pick(pair, language) if pair else status


def human_bytes(size: object) -> str:
    """1536 -> "1.5 KB", 12_900_000 -> "12.3 MB" (binary units); non-numbers as text."""
    if size is None:
        return MISSING
    if isinstance(size, bool) or not isinstance(size, int | float) or not math.isfinite(size):
        return str(size)
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(value) < 1024 or unit == "TB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def human_duration(seconds: object, language: Language) -> str:
    """83 -> "1分23秒" / "1m 23s"; under 10 s keeps one decimal; non-numbers as text."""
    if seconds is None:
        return MISSING
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        return str(seconds)
    if not math.isfinite(seconds):
        return "∞"
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    zh = language_code(language) == "zh"
    if seconds < 10:
        return f"{sign}{seconds:.1f}秒" if zh else f"{sign}{seconds:.1f}s"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    units = ("小时", "分", "秒") if zh else ("h", "m", "s")
    parts: list[str] = []
    if hours:
        parts.append(f"{hours}{units[0]}")
    if hours or minutes:
        parts.append(f"{minutes}{units[1]}")
    parts.append(f"{secs}{units[2]}")
    return sign + ("" if zh else " ").join(parts)


class _LenientFormatter(string.Formatter):
    """`str.format` that renders missing fields as "?" and ill-fitting values with `str()`."""

    def get_value(self, key: int | str, args: Any, kwargs: Mapping[str, Any]) -> Any:
        if isinstance(key, str):
            return kwargs.get(key, MISSING)
        return args[key] if key < len(args) else MISSING

    def get_field(self, field_name: str, args: Any, kwargs: Mapping[str, Any]) -> Any:
        try:
            return super().get_field(field_name, args, kwargs)
        except (AttributeError, IndexError, KeyError, TypeError, ValueError):
            return MISSING, field_name

    def format_field(self, value: Any, format_spec: str) -> str:
        if value is None:
            return MISSING
        if isinstance(value, list | tuple):
            value = ", ".join(str(item) for item in value)
        try:
            return format(value, format_spec)
        except (TypeError, ValueError):
            return str(value)


_FORMATTER = _LenientFormatter()


_DERIVED_FROM = {
    "error_label": "error_class",
    "status_label": "status",
    "bytes_human": "bytes",
    "duration": "duration_seconds",
    "eta": "eta_seconds",
    "account_eta": "account_eta_seconds",
    "run_eta": "run_eta_seconds",
}
"""Each derived template field and the event field it is made from (see `_derived`)."""


@functools.cache
def message_fields(event: str, language: Language) -> frozenset[str]:
    """The event's fields that its message shows in `language` (a derived field counts as the
    field it is made from); none for an event outside the catalog, whose message is its name."""
    pair = CATALOG.get(event)
    if pair is None:
        return frozenset()
    names = set()
    for _, name, _, _ in string.Formatter().parse(_pick(pair, language)):
        if name:
            root = name.split(".", 1)[0].split("[", 1)[0]
            names.add(_DERIVED_FROM.get(root, root))
    return frozenset(names)


def _derived(fields: Mapping[str, Any], language: Language) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if "error_class" in fields:
        extra["error_label"] = error_class_label(str(fields["error_class"]), language)
    if "status" in fields:
        extra["status_label"] = status_label(str(fields["status"]), language)
    if "bytes" in fields:
        extra["bytes_human"] = human_bytes(fields["bytes"])
    for source, target in (
        ("duration_seconds", "duration"),
        ("eta_seconds", "eta"),
        ("account_eta_seconds", "account_eta"),
        ("run_eta_seconds", "run_eta"),
    ):
        if source in fields and fields[source] is not None:
            extra[target] = human_duration(fields[source], language)
    return extra


def render_message(event: str, fields: Mapping[str, Any], language: Language) -> str:
    """The human message for `event` in `language`, filled from `fields`; never raises."""
    pair = CATALOG.get(event)
    if pair is None:
        return event
    template = _pick(pair, language)
    values = {**fields, **_derived(fields, language)}
    try:
        # str.format in C: several times faster than string.Formatter, and a page event is
        # logged for every page. Any field missing or ill-fitting goes the lenient way.
        return template.format_map(values)
    except (KeyError, IndexError, AttributeError, ValueError, TypeError):
        return _render_leniently(template, values)


def _render_leniently(template: str, values: Mapping[str, Any]) -> str:
    try:
        return _FORMATTER.vformat(template, (), values)
    except Exception:  # a broken value must not break a log call
        return template
