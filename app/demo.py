"""`python -m app --demo`: the real job, end to end, against the bundled API simulator.

No credentials, no network, no cloud: the simulator serves two made-up accounts on 127.0.0.1
with faults switched on (random transient errors, a server that goes silent, a token that
expires mid-run), and the result lands in a local folder (OUTPUT_DIR, default ./demo-output).
Waits are scaled down so the whole run takes seconds, not minutes.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

DEMO_ACCOUNTS = [
    {"name": "IAByteC", "key": "general", "secret": "demo-secret-1+/="},
    {"name": "demo-shop", "key": "general", "secret": "demo-secret-2"},
]
DEMO_DAYS = 3


def demo_environment(base_url: str, env: Mapping[str, str], end: dt.date) -> dict[str, str]:
    """The settings of the demo run: production defaults with the waits scaled down."""
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
        "OUTPUT_DIR": env.get("OUTPUT_DIR", "./demo-output"),
    }
    for passthrough in ("LOG_FORMAT", "LOG_LANGUAGE", "FETCH_CONCURRENCY",
                        "RESOURCE_MONITOR_ENABLED"):
        if env.get(passthrough):
            settings[passthrough] = env[passthrough]
    return settings


def run_demo(env: Mapping[str, str], overrides: Mapping[str, str | None]) -> int:
    from app.__main__ import _setup_logging, run
    from app.config import load_settings
    from app.simulator import Fault, SimAccount, Simulator

    end = dt.date.today() - dt.timedelta(days=2)
    accounts = [SimAccount(name=a["name"], key=a["key"], secret=a["secret"])
                for a in DEMO_ACCOUNTS]
    with Simulator(accounts=accounts, records_per_day=420, seed=7, token_ttl=1.5,
                   rate_limit_per_minute=1200, fault_rate=0.04, hang_seconds=30.0) as sim:
        day = end.isoformat()
        sim.add_fault(Fault(kind="no_answer", account="IAByteC", date=day, page=2, attempts={1}))
        sim.add_fault(Fault(kind="http_503", account="demo-shop", date=day, page=3,
                            attempts={1, 2}))
        demo_env = demo_environment(sim.base_url, env, end)
        settings = load_settings({**demo_env}, {k: v for k, v in overrides.items()
                                                if k in ("LOG_FORMAT", "LOG_LANGUAGE",
                                                         "OUTPUT_DIR")})
        # Demo data only: start from an empty range folder so every demo run does the whole job.
        shutil.rmtree(Path(settings.output_dir) / settings.range_name, ignore_errors=True)
        _setup_logging(settings, demo_env)
        code = run(settings, env=demo_env)
    root = Path(settings.output_dir) / settings.range_name
    english = settings.log_language == "en"
    lines = [
        "",
        ("Demo finished, exit code " if english else "演示结束，退出码 ") + str(code),
        ("  result:  " if english else "  结果文件: ") + str(root / "conversions.ndjson.gz"),
        ("  summary: " if english else "  运行摘要: ") + str(root / "summary.json"),
    ]
    print("\n".join(lines), file=sys.stderr)
    return code
