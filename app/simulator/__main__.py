"""`python -m app.simulator`: serve the Involve Asia API simulator until Ctrl-C or SIGTERM.

The first line on stdout is the base URL (for scripts); a human-readable note goes to stderr,
in Chinese unless --lang en (default: $LOG_LANGUAGE, else zh).

`--expect ACCOUNT START END` serves nothing: it prints the ground truth of the dataset the same
options would serve (ids, or records with --records), to check a run against.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from app.messages import in_language, language_code
from app.simulator.auth import SimAccount
from app.simulator.currency import LOCAL_CURRENCIES, PREFERRED_CURRENCIES, convert
from app.simulator.dataset import DEFAULT_CURRENCY, Dataset
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


def _steps(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise argparse.ArgumentTypeError("expected an integer >= 0")
    return value


def _date(parser: argparse.ArgumentParser, raw: str) -> dt.date:
    try:
        return dt.datetime.strptime(raw, "%Y-%m-%d").date()
    except ValueError:
        parser.error(f"--expect: {raw!r} is not a date (expected YYYY-MM-DD)")


def expect(args: argparse.Namespace, accounts: Sequence[SimAccount],
           parser: argparse.ArgumentParser) -> int:
    """Print the ground truth `--expect` asks for; 0, or 2 for a bad request."""
    account, raw_start, raw_end = args.expect
    start, end = _date(parser, raw_start), _date(parser, raw_end)
    if end < start:
        parser.error(f"--expect: END {end} is before START {start}")
    names = [a.name for a in accounts]
    if account not in names:
        parser.error(f"--expect: unknown account {account!r}; accounts: {', '.join(names)}")
    try:
        dataset = Dataset(names, args.records_per_day, args.seed,
                          currencies={a.name: a.currency for a in accounts},
                          validation_rate=args.validation_rate)
        dataset.advance(args.validation_steps)
        out = sys.stdout
        if args.records:
            for record in dataset.truth_records(account, start, end):
                out.write(json.dumps(convert(record, args.preferred_currency),
                                     ensure_ascii=False) + "\n")
        else:
            for conversion_id in dataset.truth_ids(account, start, end):
                out.write(f"{conversion_id}\n")
        out.flush()
    except ValueError as error:
        print(f"simulator: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `| head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


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
    truth = parser.add_argument_group(
        "ground truth", "print what the dataset holds instead of serving it; the dataset options "
        "above (--records-per-day, --seed, --accounts or --account-name, --currency, "
        "--validation-rate) must be the ones the server was started with")
    truth.add_argument("--expect", nargs=3, metavar=("ACCOUNT", "START", "END"), default=None,
                       help="print the conversion ids ACCOUNT has from START to END "
                            "(YYYY-MM-DD, inclusive), one per line, ascending, and exit; records "
                            "that faults of kind `insert` add while serving are not included")
    truth.add_argument("--records", action="store_true",
                       help="with --expect: print the full records as the API serves them, one "
                            "JSON object per line, in the same order")
    truth.add_argument("--preferred-currency", choices=PREFERRED_CURRENCIES, default=None,
                       help="with --records: amounts as filters[preferred_currency] would serve "
                            "them (the job asks for USD unless PREFERRED_CURRENCY says "
                            "otherwise; default: the account's local currency)")
    truth.add_argument("--validation-steps", type=_steps, default=0,
                       help="with --records: statuses after this many validation steps "
                            "(default: %(default)s, as served before any step)")
    parser.add_argument("--lang", choices=("zh", "en"),
                        default=language_code(os.environ.get("LOG_LANGUAGE")),
                        help="language of the human-readable note on stderr "
                             "(default: $LOG_LANGUAGE, else zh)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, serve until interrupted, stop cleanly; 0 on a normal stop."""
    parser = build_parser()
    args = parser.parse_args(argv)
    accounts = args.accounts or [SimAccount(name=args.account_name, key=args.key,
                                            secret=args.secret, currency=args.currency)]
    if args.expect is not None:
        return expect(args, accounts, parser)
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
