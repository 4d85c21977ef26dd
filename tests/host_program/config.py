"""The host program's settings, kept as WeeklyReporter's config.py keeps them: module constants
the API module reads (made-up credentials). Tests copy this host program and append their own
values below, as a user edits this file."""

from datetime import datetime, timedelta

# API: Involve Asia (a test points these at its simulator)
INVOLVE_ASIA_API_SECRET = "demo-secret"
INVOLVE_ASIA_API_KEY = "general"
INVOLVE_ASIA_BASE_URL = "http://127.0.0.1:9/api"
INVOLVE_ASIA_AUTH_URL = f"{INVOLVE_ASIA_BASE_URL}/authenticate"
INVOLVE_ASIA_CONVERSIONS_URL = f"{INVOLVE_ASIA_BASE_URL}/conversions/range"

# dates: None = yesterday
DEFAULT_DATE_RANGE = 1
DEFAULT_START_DATE = None
DEFAULT_END_DATE = None

PREFERRED_CURRENCY = "USD"

# requests
REQUEST_TIMEOUT = 30
MAX_RETRY_ATTEMPTS = 5
REQUEST_DELAY = 0.5
RATE_LIMIT_DELAY = 30

RESOURCE_MONITOR_ENABLED = True
MAX_SKIPPED_PAGES = 10

# paging
DEFAULT_PAGE_LIMIT = 100
MAX_RECORDS_LIMIT = None  # None: no limit; main.py --limit N sets it

# files
OUTPUT_DIR = "output"


def get_default_date_range() -> tuple[str, str]:
    """The report's range: the configured dates, else yesterday."""
    if DEFAULT_START_DATE and DEFAULT_END_DATE:
        return DEFAULT_START_DATE, DEFAULT_END_DATE
    yesterday = (datetime.now() - timedelta(days=1)).strftime("%Y-%m-%d")
    return yesterday, yesterday
