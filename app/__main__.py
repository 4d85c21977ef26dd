"""`python -m app`: read the settings once, run one job execution, exit with the contract's code.

0 all data written · 1 failed, a retry may help · 2 bad configuration or credentials ·
3 finished but pages stayed skipped (FAIL_ON_SKIPPED_PAGES=true) · 130 stopped by Ctrl-C. The
decision itself lives in `app/outcome.py`; the run around the job in `app/runner.py`.
`python -m app status` shows the day store instead (`app/status.py`).
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Mapping, Sequence

from app.config import load_settings, overrides_from, parse_args, refuse_secret_flags
from app.errors import ConfigError
from app.outcome import EXIT_CONFIG, EXIT_INTERRUPTED
from app.runner import report_config_error, run, setup_logging

MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # glibc's mallopt parameter number


def limit_malloc_arenas(env: Mapping[str, str]) -> bool:
    """Cap glibc's malloc arenas, as MALLOC_ARENA_MAX=2 would, unless that variable is set.

    glibc gives threads that allocate at once their own arenas (up to 8 per core), and a freed
    page body in one arena is not reused by another. With the job's ~20 threads each parsing
    45 KB bodies, peak RSS of a 1 M-record run grew by ~13 MB over a 10 k-record run's with the
    default, and stayed flat with 2 arenas at the same CPU (bench `volume`). Done here so it
    holds however the job is started. Returns whether the cap was applied (glibc only).
    """
    if "MALLOC_ARENA_MAX" in env or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(_M_ARENA_MAX, MALLOC_ARENAS))


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    environ = dict(os.environ if env is None else env)
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["status"]:  # `python -m app status`: the store at a glance (app/status.py)
        from app.status import main as status_main

        return status_main(arguments[1:], environ)
    limit_malloc_arenas(environ)  # before any thread starts
    args = parse_args(argv)
    overrides = overrides_from(args)
    try:
        refuse_secret_flags(overrides)  # every user of the machine can read a command line
        if args.demo:
            from app.demo import run_demo

            return run_demo(environ, overrides)
        settings = load_settings(environ, overrides)
    except ConfigError as exc:
        logging_flags = {k: v for k, v in overrides.items()
                         if v is not None and k in ("LOG_FORMAT", "LOG_LANGUAGE")}
        report_config_error(exc, {**environ, **logging_flags})
        return EXIT_CONFIG
    setup_logging(settings, environ)
    return run(settings, env=environ)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        # Ctrl-C outside the job's own handler (while settings are read, storage probed): no
        # traceback. Inside it the job stops as on SIGTERM and exits 130 (app/runner.py).
        sys.exit(EXIT_INTERRUPTED)
