"""`python -m app --demo`: the real job, end to end, against the bundled API simulator.

No credentials, no network, no cloud: the simulator serves two made-up accounts on 127.0.0.1
with faults switched on (random transient errors, a server that goes silent, a token that
expires mid-run), and the data lands in the demo's own folder (./demo-output, or --output-dir).
Then Involve Asia "validates" (statuses move, late conversions arrive) and a second execution
refreshes the same days (SNAPSHOT_MAX_AGE=0): its summary counts what changed.
Waits are scaled down so the whole demo takes seconds, not minutes.

The demo never touches a store it did not create: OUTPUT_DIR and GCS_BUCKET are ignored, and
the folder must be new, empty, or one the demo made before (it holds DEMO_MARKER). Anything
else is refused (exit 2) and left as it is. In its own folder the demo starts afresh each time.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

from app.outcome import EXIT_CONFIG, EXIT_OK, EXIT_SKIPPED

DEMO_ACCOUNTS = [
    {"name": "IAByteC", "key": "general", "secret": "demo-secret-1+/="},
    {"name": "demo-shop", "key": "general", "secret": "demo-secret-2"},
]
DEMO_DAYS = 3
DEMO_OUTPUT = "./demo-output"
"""The demo's folder unless --output-dir names another."""
DEMO_MARKER = ".involve-asia-demo"
"""Written into a folder the demo creates (or finds empty): the demo's claim on it. A folder
without it is never written to, cleared or deleted by the demo."""
_MARKER_TEXT = ("This folder was made by `python -m app --demo`; each demo run clears and "
                "rewrites it. Delete this file and the demo will no longer touch the folder.\n")


def claim_demo_folder(root: Path) -> bool:
    """Whether `root` is the demo's to write: it holds DEMO_MARKER, or it is new or empty (the
    marker is then written). A file, or a folder with other content, is not."""
    if (root / DEMO_MARKER).is_file():
        return True
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        return False
    root.mkdir(parents=True, exist_ok=True)
    (root / DEMO_MARKER).write_text(_MARKER_TEXT, encoding="utf-8")
    return True


def _refuse(root: Path, env: Mapping[str, str], overrides: Mapping[str, str | None]) -> int:
    """One ERROR entry and a line on stderr: the folder is not the demo's."""
    from app.logs import get_logger
    from app.messages import language_code, render_message
    from app.runner import setup_logging

    chosen = {**env, **{k: v for k, v in overrides.items() if v is not None}}
    setup_logging(None, chosen)
    language = language_code(chosen.get("LOG_LANGUAGE"))
    fields = {"folder": str(root), "marker": DEMO_MARKER}
    message = render_message("demo_folder_refused", fields, language)
    get_logger().error("demo_folder_refused", message=message, error_class="config", **fields)
    print(message, file=sys.stderr)
    return EXIT_CONFIG


def demo_environment(base_url: str, env: Mapping[str, str], end: dt.date,
                     output_dir: Path) -> dict[str, str]:
    """The settings of the demo run: production defaults with the waits scaled down, writing
    to `output_dir` (never the environment's OUTPUT_DIR or GCS_BUCKET)."""
    start = end - dt.timedelta(days=DEMO_DAYS - 1)
    settings = {
        "INVOLVE_ASIA_BASE_URL": base_url,
        "INVOLVE_ASIA_ACCOUNTS": json.dumps(DEMO_ACCOUNTS),
        "START_DATE": start.isoformat(),
        "END_DATE": end.isoformat(),
        "REQUEST_TIMEOUT": "2",
        "RETRY_BACKOFF": "0.2,0.4,0.6,0.8,1.0",
        "RATE_LIMIT_DELAY": "0.5",
        "REQUEST_DELAY": "0.02",
        "REQUESTS_PER_MINUTE": "1200",
        "STALL_TIMEOUT": "10",
        "RESOURCE_REPORT_INTERVAL": "5",
        "OUTPUT_DIR": str(output_dir),
    }
    for passthrough in ("LOG_FORMAT", "LOG_LANGUAGE", "FETCH_CONCURRENCY",
                        "RESOURCE_MONITOR_ENABLED"):
        if env.get(passthrough):
            settings[passthrough] = env[passthrough]
    return settings


def run_demo(env: Mapping[str, str], overrides: Mapping[str, str | None]) -> int:
    from app.config import load_settings
    from app.messages import label
    from app.runner import run, setup_logging
    from app.simulator import DEFAULT_RANDOM_FAULTS, LYING_FAULTS, Fault, SimAccount, Simulator
    from app.store import DAYS_PREFIX, RUNS_PREFIX

    root = Path(overrides.get("OUTPUT_DIR") or DEMO_OUTPUT)
    if not claim_demo_folder(root):
        return _refuse(root, env, overrides)
    # The demo's own folder: start from an empty store so every demo does the whole job.
    for prefix in (DAYS_PREFIX, RUNS_PREFIX):
        shutil.rmtree(root / prefix, ignore_errors=True)
    end = dt.date.today() - dt.timedelta(days=2)
    accounts = [SimAccount(name=a["name"], key=a["key"], secret=a["secret"])
                for a in DEMO_ACCOUNTS]
    flags = {k: v for k, v in overrides.items() if k in ("LOG_FORMAT", "LOG_LANGUAGE")}
    codes: list[int] = []
    # Transient faults and answers that lie (empty, short, zero-count pages): none may cost a
    # record or pass for a complete day.
    kinds = (*DEFAULT_RANDOM_FAULTS, *(k for k in LYING_FAULTS if k not in DEFAULT_RANDOM_FAULTS))
    with Simulator(accounts=accounts, records_per_day=420, seed=7, token_ttl=1.5,
                   rate_limit_per_minute=1200, fault_rate=0.04, fault_kinds=kinds,
                   hang_seconds=30.0) as sim:
        day = end.isoformat()
        sim.add_fault(Fault(kind="no_answer", account="IAByteC", date=day, page=2, attempts={1}))
        first = (end - dt.timedelta(days=DEMO_DAYS - 1)).isoformat()
        sim.add_fault(Fault(kind="zero_count", account="IAByteC", date=first, page=1,
                            attempts={1}))  # a busy day denied once: asked again, not believed
        sim.add_fault(Fault(kind="short_page", account="demo-shop", date=first, page=5,
                            attempts={1}))  # the last page short once: retried
        sim.add_fault(Fault(kind="http_503", account="demo-shop", date=day, page=3,
                            attempts={1, 2}))
        demo_env = demo_environment(sim.base_url, env, end, root)
        executions: list[tuple[str, Path]] = []
        for name, extra in (("demo-first", {}), ("demo-refresh", {"SNAPSHOT_MAX_AGE": "0"})):
            if codes and codes[-1] not in (EXIT_OK, EXIT_SKIPPED):
                break  # the first execution failed or was stopped (Ctrl-C): no refresh
            if executions:
                # Involve Asia validates: pending conversions are approved or rejected, and a
                # few late ones arrive; the refresh then reports exactly that.
                sim.advance_validation()
                sim.insert_records("demo-shop", day, 3)
            settings = load_settings({**demo_env, **extra, "CLOUD_RUN_EXECUTION": name}, flags)
            setup_logging(settings, demo_env)
            codes.append(run(settings, env=demo_env))
            executions.append((name, root / RUNS_PREFIX / settings.range_name / name))
    language = settings.log_language
    lines = ["", label("demo_finished", language) + ", ".join(map(str, codes)),
             f"  {label('demo_day_store', language)}: {root / DAYS_PREFIX}"]
    for name, folder in executions:
        lines.append(f"  {name}: " + str(folder / "conversions.ndjson.gz"))
        lines.append(" " * (len(name) + 4) + str(folder / "summary.json"))
    print("\n".join(lines), file=sys.stderr)
    return max(codes)
