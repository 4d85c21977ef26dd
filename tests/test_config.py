"""Settings: defaults, validation (exit 2 with name, value and expectation), flags, --help."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

import pytest

from app.config import OPTIONS, load_settings
from app.errors import ConfigError

BASE = {"INVOLVE_ASIA_API_SECRET": "made-up-secret"}


def test_defaults_are_the_seeds() -> None:
    """With only a secret set, every default is the seed's and the range is yesterday."""
    s = load_settings(BASE, today=dt.date(2025, 3, 10))
    assert (s.start_date, s.end_date) == (dt.date(2025, 3, 9), dt.date(2025, 3, 9))
    assert s.request_timeout == 30 and s.max_retry_attempts == 5
    assert s.retry_backoff == (10, 20, 30, 40, 60)
    assert s.rate_limit_delay == 30 and s.request_delay == 0.5
    assert s.requests_per_minute == 60 and s.max_skipped_pages == 10
    assert s.page_limit == 100 and s.max_records is None
    assert s.log_language == "zh" and s.gcs_prefix == "conversions"
    assert s.accounts[0].name == "default" and s.accounts[0].key == "general"
    assert s.range_name == "2025-03-09_2025-03-09"


def test_default_date_range_counts_back_from_yesterday() -> None:
    """DEFAULT_DATE_RANGE=3 covers the three days ending yesterday."""
    s = load_settings({**BASE, "DEFAULT_DATE_RANGE": "3"}, today=dt.date(2025, 3, 10))
    assert s.days() == [dt.date(2025, 3, 7), dt.date(2025, 3, 8), dt.date(2025, 3, 9)]


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("REQUEST_TIMEOUT", "0", "seconds > 0"),
        ("REQUEST_TIMEOUT", "abc", "seconds > 0"),
        ("MAX_RETRY_ATTEMPTS", "-1", "an integer from 0 to 100"),
        ("RETRY_BACKOFF", "10,x", "comma-separated seconds >= 0"),
        ("START_DATE", "2025-13-01", "YYYY-MM-DD"),
        ("DEFAULT_PAGE_LIMIT", "101", "an integer from 1 to 100"),
        ("LOG_LANGUAGE", "fr", "zh or en"),
        ("TIMEZONE", "Mars/Olympus", "an IANA time zone"),
        ("FAIL_ON_SKIPPED_PAGES", "maybe", "true or false"),
        ("INVOLVE_ASIA_BASE_URL", "ftp://x", "an http(s) URL"),
    ],
)
def test_bad_values_name_the_variable_value_and_expectation(variable: str, value: str,
                                                             expected: str) -> None:
    """Each invalid value raises ConfigError carrying the variable, the value and the rule."""
    with pytest.raises(ConfigError) as info:
        load_settings({**BASE, variable: value})
    assert info.value.variable == variable
    assert info.value.value == value
    assert info.value.expected == expected


def test_missing_secret_is_a_config_error() -> None:
    """Without a secret or INVOLVE_ASIA_ACCOUNTS the job cannot start."""
    with pytest.raises(ConfigError) as info:
        load_settings({})
    assert info.value.variable == "INVOLVE_ASIA_API_SECRET"


def test_start_after_end_is_rejected() -> None:
    """START_DATE after END_DATE is a configuration error."""
    with pytest.raises(ConfigError) as info:
        load_settings({**BASE, "START_DATE": "2025-02-02", "END_DATE": "2025-02-01"})
    assert info.value.variable == "START_DATE"


def test_accounts_json_and_secret_never_shown() -> None:
    """INVOLVE_ASIA_ACCOUNTS gives several accounts; an invalid one is reported without its text."""
    accounts = [{"name": "a", "key": "general", "secret": "s+/="}, {"name": "b", "secret": "t"}]
    s = load_settings({"INVOLVE_ASIA_ACCOUNTS": json.dumps(accounts)})
    assert [a.name for a in s.accounts] == ["a", "b"]
    assert s.accounts[1].key == "general"
    assert "s+/=" not in repr(s)
    with pytest.raises(ConfigError) as info:
        duplicate_names = [{"name": "a", "secret": "leaky"}, {"name": "a", "secret": "x"}]
        load_settings({"INVOLVE_ASIA_ACCOUNTS": json.dumps(duplicate_names)})
    assert "leaky" not in str(info.value)


def test_flags_override_environment() -> None:
    """--start-date overrides START_DATE, and nothing more."""
    s = load_settings({**BASE, "START_DATE": "2025-01-01", "END_DATE": "2025-01-31"},
                      {"START_DATE": "2025-01-15"})
    assert s.start_date == dt.date(2025, 1, 15) and s.end_date == dt.date(2025, 1, 31)


def test_cloud_run_task_variables_are_read_and_checked() -> None:
    """CLOUD_RUN_TASK_INDEX/COUNT/ATTEMPT come from Cloud Run; an index past the count is an error."""
    s = load_settings({**BASE, "CLOUD_RUN_JOB": "j", "CLOUD_RUN_EXECUTION": "j-1",
                       "CLOUD_RUN_TASK_INDEX": "2", "CLOUD_RUN_TASK_COUNT": "3",
                       "CLOUD_RUN_TASK_ATTEMPT": "1"})
    assert (s.task.index, s.task.count, s.task.attempt, s.task.on_cloud_run) == (2, 3, 1, True)
    with pytest.raises(ConfigError):
        load_settings({**BASE, "CLOUD_RUN_TASK_INDEX": "3", "CLOUD_RUN_TASK_COUNT": "3"})


@pytest.mark.timeout(60)
def test_help_lists_every_setting() -> None:
    """`python -m app --help` names every environment variable of the contract."""
    out = subprocess.run([sys.executable, "-m", "app", "--help"], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    for opt in OPTIONS:
        assert opt.env in out


@pytest.mark.timeout(60)
def test_bad_value_exits_2_before_any_request() -> None:
    """A bad setting exits 2 and says which variable, which value, what is expected."""
    proc = subprocess.run([sys.executable, "-m", "app"], capture_output=True, text=True,
                          timeout=60, env={"PATH": "", "INVOLVE_ASIA_API_SECRET": "x",
                                           "REQUEST_TIMEOUT": "-3", "LOG_FORMAT": "json"})
    assert proc.returncode == 2
    assert "REQUEST_TIMEOUT" in proc.stderr and "'-3'" in proc.stderr
    assert "seconds > 0" in proc.stderr
