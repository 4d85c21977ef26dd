"""`python -m app.simulator`: serve the Involve Asia API simulator until Ctrl-C or SIGTERM.

The first line on stdout is the base URL (for scripts); a human-readable note goes to stderr,
in Chinese unless --lang en (default: $LOG_LANGUAGE, else zh).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from app.messages import in_language, language_code
from app.simulator.auth import SimAccount
from app.simulator.currency import LOCAL_CURRENCIES
from app.simulator.dataset import DEFAULT_CURRENCY
from app.simulator.faults import DEFAULT_RANDOM_FAULTS, FAULT_KINDS
from app.simulator.server import RETRY_AFTER_CHOICES, Simulator


def _accounts(raw: str) -> list[SimAccount]:
    try:
        items = json.loads(raw)
        accounts = [SimAccount(name=str(item["name"]), key=str(item["key"]),
                               secret=str(item["secret"]),
                               currency=str(item.get("currency", DEFAULT_CURRENCY)))
                    for item in items]
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise argparse.ArgumentTypeError(
            f'expected a JSON list of {{"name","key","secret"[,"currency"]}} objects: {error}'
        ) from error
    if not accounts:
        raise argparse.ArgumentTypeError("expected at least one account")
    return accounts


def _kinds(raw: str) -> tuple[str, ...]:
    kinds = tuple(part.strip() for part in raw.split(",") if part.strip())
    unknown = [kind for kind in kinds if kind not in FAULT_KINDS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown fault kinds {unknown}; known: "
                                         f"{', '.join(FAULT_KINDS)}")
    return kinds


def _share(raw: str) -> float:
    value = float(raw)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("expected a number in 0..1")
    return value


def _seconds(raw: str) -> float:
    value = float(raw)
    if value < 0:
        raise argparse.ArgumentTypeError("expected seconds >= 0 (0 = never)")
    return value


def _rate_limit(raw: str) -> int | None:
    value = int(raw)
    if value < 0:
        raise argparse.ArgumentTypeError("expected an integer >= 0 (0 = no throttle)")
    return value or None


def build_parser() -> argparse.ArgumentParser:
    """The command line, every flag documented."""
    parser = argparse.ArgumentParser(
        prog="python -m app.simulator",
        description="Serve a local stand-in for the Involve Asia publisher API "
                    "(POST /api/authenticate, /api/conversions/range, "
                    "/api/conversions/data-range) with a seeded dataset and optional random "
                    "faults. Prints the base URL, then serves until Ctrl-C or SIGTERM.",
    )
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8080,
                        help="port to bind; 0 lets the OS choose (default: %(default)s)")
    parser.add_argument("--key", default="general",
                        help="API key of the single account (default: %(default)s)")
    parser.add_argument("--secret", default="demo-secret",
                        help="API secret of the single account (default: %(default)s)")
    parser.add_argument("--account-name", default="default",
                        help="name of the single account, as the ledger shows it "
                             "(default: %(default)s)")
    parser.add_argument("--currency", choices=LOCAL_CURRENCIES, default=DEFAULT_CURRENCY,
                        help="local currency of the single account; filters[preferred_currency]"
                             " converts from it (default: %(default)s)")
    parser.add_argument("--accounts", type=_accounts, default=None,
                        help='several accounts instead: JSON list of {"name","key","secret"} '
                             'objects, each with an optional "currency" (default '
                             f"{DEFAULT_CURRENCY}; overrides --key/--secret/--account-name/"
                             "--currency)")
    parser.add_argument("--records-per-day", type=int, default=250,
                        help="conversions each account has on each day (default: %(default)s)")
    parser.add_argument("--fault-rate", type=float, default=0.0,
                        help="probability in 0..1 that a conversions request draws a random "
                             "fault (default: %(default)s)")
    parser.add_argument("--fault-kinds", type=_kinds, default=DEFAULT_RANDOM_FAULTS,
                        help="comma-separated kinds random faults draw from (default: "
                             f"{','.join(DEFAULT_RANDOM_FAULTS)}; all: {','.join(FAULT_KINDS)})")
    parser.add_argument("--seed", type=int, default=1,
                        help="seed of the dataset and of random faults (default: %(default)s)")
    parser.add_argument("--token-ttl", type=float, default=7200.0,
                        help="seconds a token stays valid (default: %(default)s)")
    parser.add_argument("--rate-limit", type=_rate_limit, default=60,
                        help="requests per minute per account before 429; 0 = no throttle "
                             "(default: %(default)s)")
    parser.add_argument("--retry-after", choices=RETRY_AFTER_CHOICES, default="yes",
                        help="whether throttle 429s carry Retry-After (default: %(default)s)")
    parser.add_argument("--latency", type=float, default=0.0,
                        help="seconds added before every response (default: %(default)s)")
    parser.add_argument("--hang-seconds", type=float, default=3600.0,
                        help="how long hang-type faults stay silent (default: %(default)s)")
    parser.add_argument("--drip-bytes-per-second", type=float, default=5.0,
                        help="body rate of the drip fault (default: %(default)s)")
    parser.add_argument("--validation-rate", type=_share, default=0.3,
                        help="chance in 0..1 that a pending conversion is approved or rejected "
                             "at each validation step (default: %(default)s)")
    parser.add_argument("--validation-interval", type=_seconds, default=0.0,
                        help="seconds between validation steps; 0 = statuses never move "
                             "(default: %(default)s)")
    parser.add_argument("--lang", choices=("zh", "en"),
                        default=language_code(os.environ.get("LOG_LANGUAGE")),
                        help="language of the human-readable note on stderr "
                             "(default: $LOG_LANGUAGE, else zh)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, serve until interrupted, stop cleanly; 0 on a normal stop."""
    args = build_parser().parse_args(argv)
    accounts = args.accounts or [SimAccount(name=args.account_name, key=args.key,
                                            secret=args.secret, currency=args.currency)]
    try:
        simulator = Simulator(
            accounts=accounts, records_per_day=args.records_per_day, seed=args.seed,
            token_ttl=args.token_ttl, rate_limit_per_minute=args.rate_limit,
            retry_after=args.retry_after, fault_rate=args.fault_rate,
            fault_kinds=args.fault_kinds, latency=args.latency,
            hang_seconds=args.hang_seconds, drip_bytes_per_second=args.drip_bytes_per_second,
            validation_rate=args.validation_rate,
        )
        simulator.start(host=args.host, port=args.port)
    except (ValueError, OSError) as error:
        print(f"simulator: {error}", file=sys.stderr)
        return 2
    done = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    names = ", ".join(account.name for account in accounts)
    note = in_language(
        args.lang,
        f"Involve Asia 模拟器已启动，账户 {names}，地址 {simulator.base_url}；按 Ctrl-C 停止",
        f"Involve Asia simulator serving {names} at {simulator.base_url}; Ctrl-C to stop")
    print(simulator.base_url, flush=True)
    print(note, file=sys.stderr, flush=True)
    interval = args.validation_interval
    try:
        while not done.wait(interval if interval > 0 else 0.5):
            if interval > 0:
                simulator.advance_validation()
    finally:
        simulator.stop()
    print(in_language(args.lang, "模拟器已停止", "Simulator stopped"),
          file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
