"""A host program in the original module's calling style (WeeklyReporter's main.py, cut down):
its own logging format, `--limit N` setting config.MAX_RECORDS_LIMIT after the imports, one
client per account, the async module imported when installed.

What the test reads comes out as tagged lines: `@@NAME <json>`.
"""

import argparse
import json
import logging
import os
import sys

import config
from modules.involve_asia_api import InvolveAsiaAPI

try:
    from modules.involve_asia_api_async import AsyncInvolveAsiaAPI
except ImportError:
    AsyncInvolveAsiaAPI = None

HOST_FORMAT = "HOST|%(levelname)s|%(name)s|%(message)s"
log = logging.getLogger("weekly")


def tag(name: str, value: object) -> None:
    print(f"@@{name} {json.dumps(value, ensure_ascii=False, default=str)}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--start")
    parser.add_argument("--end")
    parser.add_argument("--default-range", action="store_true")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--api-name")
    parser.add_argument("--secret")
    parser.add_argument("--key")
    parser.add_argument("--no-auth", action="store_true", help="call get_conversions first")
    parser.add_argument("--no-logging", action="store_true", help="configure no logging")
    parser.add_argument("--save-none", action="store_true")
    parser.add_argument("--performance-test", action="store_true")
    args = parser.parse_args()

    if not args.no_logging:
        logging.basicConfig(level=logging.INFO, format=HOST_FORMAT)
    if args.limit:
        config.MAX_RECORDS_LIMIT = args.limit
    log.info("weekly report starting")

    if args.performance_test:
        if AsyncInvolveAsiaAPI is None:
            print("async module not installed")
            return 1
        tag("RUNTIME", AsyncInvolveAsiaAPI().performance_test())
        return 0

    api = InvolveAsiaAPI(api_secret=args.secret, api_key=args.key)
    tag("ATTRS", {name: getattr(api, name) is not None for name in (
        "api_secret", "api_key", "auth_url", "conversions_url", "resource_monitor",
        "request_timeout", "max_retries", "request_delay", "skipped_pages")})
    tag("VALUES", {"auth_url": api.auth_url, "conversions_url": api.conversions_url,
                   "api_key": api.api_key, "token": api.token,
                   "request_timeout": api.request_timeout, "max_retries": api.max_retries,
                   "request_delay": api.request_delay, "skipped_pages": api.skipped_pages})
    tag("OUTPUT_BEFORE_SAVE", os.path.exists(config.OUTPUT_DIR))
    if args.save_none:
        tag("SAVE_NONE", api.save_to_json(None))

    if args.no_auth:
        tag("EARLY", api.get_conversions(args.start, args.end))
    authenticated = api.authenticate()
    tag("AUTH", authenticated)
    if args.default_range:
        result = api.get_conversions_default_range()
    else:
        result = api.get_conversions(args.start, args.end, api_name=args.api_name)
    if result is None:
        tag("RESULT", None)
        log.warning("no data, no report")
        return 0
    data = result["data"]
    ids = [record["conversion_id"] for record in data["data"]]
    tag("RESULT", {key: data[key] for key in ("limit", "count", "total_pages", "pages_fetched",
                                              "skipped_pages", "current_page_count")})
    tag("IDS", ids)
    tag("CURRENCIES", sorted({record["currency"] for record in data["data"]}))
    tag("SKIPPED", api.skipped_pages)
    tag("TOKEN_SET", bool(api.token))
    tag("SAVED", api.save_to_json(result))
    log.info("weekly report done: %d records", len(ids))
    return 0


if __name__ == "__main__":
    sys.exit(main())
