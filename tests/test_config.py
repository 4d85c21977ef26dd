"""Settings: defaults, validation (exit 2 with name, value and expectation), flags, --help."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from app.config import (
    OPTIONS,
    InvalidSetting,
    SecretOnCommandLine,
    load_settings,
    refuse_secret_flags,
)
from app.errors import ConfigError
from app.messages import render_message

BASE = {"INVOLVE_ASIA_API_SECRET": "made-up-secret"}
REPO = Path(__file__).resolve().parents[1]
CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run each test in its own folder, so the default OUTPUT_DIR (./output) lands there."""
    monkeypatch.chdir(tmp_path)


def refused(env: dict[str, str], *, today: dt.date | None = None,
            now: dt.datetime | None = None) -> InvalidSetting:
    """The InvalidSetting that load_settings raises for `env` (fails the test if it accepts)."""
    with pytest.raises(InvalidSetting) as info:
        load_settings(env, today=today, now=now)
    return info.value


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
        ("REQUEST_TIMEOUT", "0", "seconds > 0, at most 3600"),
        ("REQUEST_TIMEOUT", "abc", "seconds > 0, at most 3600"),
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
                         check=True, timeout=60, cwd=REPO).stdout
    for opt in OPTIONS:
        assert opt.env in out
    for new in ("PREFERRED_CURRENCY", "SNAPSHOT_MAX_AGE"):
        assert f"--{new.lower().replace('_', '-')} {new}" in out


@pytest.mark.timeout(60)
def test_bad_value_exits_2_before_any_request() -> None:
    """A bad setting exits 2 and says which variable, which value, what is expected."""
    proc = subprocess.run([sys.executable, "-m", "app"], capture_output=True, text=True,
                          timeout=60, cwd=REPO,
                          env={"PATH": "", "INVOLVE_ASIA_API_SECRET": "x", "REQUEST_TIMEOUT": "-3",
                               "LOG_FORMAT": "json"})
    assert proc.returncode == 2
    assert "REQUEST_TIMEOUT=-3" in proc.stderr
    assert "大于 0、不超过 3600 的秒数" in proc.stderr  # Chinese by default, wholly
    assert json.loads(proc.stdout)["expected"] == "seconds > 0, at most 3600"


# --- new settings: PREFERRED_CURRENCY, SNAPSHOT_MAX_AGE, the execution name -------------------


def test_preferred_currency_default_choices_and_empty() -> None:
    """Unset means USD, MYR is kept, case is ignored, and an explicitly empty value means local."""
    assert load_settings(BASE).preferred_currency == "USD"
    assert load_settings({**BASE, "PREFERRED_CURRENCY": "MYR"}).preferred_currency == "MYR"
    assert load_settings({**BASE, "PREFERRED_CURRENCY": " usd "}).preferred_currency == "USD"
    assert load_settings({**BASE, "PREFERRED_CURRENCY": ""}).preferred_currency is None
    assert load_settings(BASE, {"PREFERRED_CURRENCY": ""}).preferred_currency is None


def test_unknown_currency_is_refused() -> None:
    """PREFERRED_CURRENCY=EURO names the variable, the value and the allowed codes."""
    error = refused({**BASE, "PREFERRED_CURRENCY": "EURO"})
    assert (error.variable, error.value) == ("PREFERRED_CURRENCY", "EURO")
    assert "USD" in error.expected and "MYR" in error.expected


@pytest.mark.parametrize("value", ["-1", "abc", "nan", "inf"])
def test_snapshot_max_age_must_be_finite_seconds(value: str) -> None:
    """SNAPSHOT_MAX_AGE is seconds >= 0; negative, non-numeric and non-finite values are refused."""
    assert refused({**BASE, "SNAPSHOT_MAX_AGE": value}).variable == "SNAPSHOT_MAX_AGE"


def test_snapshot_max_age_default_and_zero() -> None:
    """SNAPSHOT_MAX_AGE defaults to 6 h; 0 (refresh every day) and fractions are accepted."""
    assert load_settings(BASE).snapshot_max_age == 21600
    assert load_settings({**BASE, "SNAPSHOT_MAX_AGE": "0"}).snapshot_max_age == 0
    assert load_settings({**BASE, "SNAPSHOT_MAX_AGE": "1.5"}).snapshot_max_age == 1.5


def test_local_execution_name_is_start_time_and_random_suffix() -> None:
    """Without CLOUD_RUN_EXECUTION the execution is local-YYYYMMDDTHHMMSSZ-xxxx in UTC."""
    now = dt.datetime(2025, 3, 10, 8, 5, 9, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    names = {load_settings(BASE, now=now).task.execution for _ in range(5)}
    for name in names:
        assert re.fullmatch(r"local-20250310T000509Z-[0-9a-f]{4}", name), name
    assert len(names) > 1  # 5 draws of 16 bits: all equal has odds of 2^-64
    cloud = load_settings({**BASE, "CLOUD_RUN_EXECUTION": "job-x7k2p"}, now=now)
    assert cloud.task.execution == "job-x7k2p"


# --- start-up checks ---------------------------------------------------------------------------


def test_end_date_after_today_is_refused() -> None:
    """END_DATE after today (in TIMEZONE) is refused; today itself is allowed."""
    today = dt.date(2025, 3, 10)
    error = refused({**BASE, "START_DATE": "2025-03-01", "END_DATE": "2025-03-11"}, today=today)
    assert (error.variable, error.value) == ("END_DATE", "2025-03-11")
    assert "2025-03-10" in error.expected
    s = load_settings({**BASE, "START_DATE": "2025-03-01", "END_DATE": "2025-03-10"}, today=today)
    assert s.end_date == today


def test_start_date_after_today_is_refused() -> None:
    """START_DATE after today is refused by its own name, even without END_DATE."""
    error = refused({**BASE, "START_DATE": "2025-03-12"}, today=dt.date(2025, 3, 10))
    assert (error.variable, error.value) == ("START_DATE", "2025-03-12")


def test_today_is_taken_in_timezone() -> None:
    """At 17:00 UTC it is already tomorrow in Shanghai: that END_DATE is fine there, not in UTC."""
    now = dt.datetime(2025, 3, 10, 17, 0, tzinfo=dt.UTC)
    env = {**BASE, "START_DATE": "2025-03-11", "END_DATE": "2025-03-11"}
    assert load_settings(env, now=now).end_date == dt.date(2025, 3, 11)
    assert refused({**env, "TIMEZONE": "UTC"}, now=now).variable == "START_DATE"


DOTTED_222 = ".".join(["a" * 63] * 3) + "." + "b" * 30
assert len(DOTTED_222) == 222


@pytest.mark.parametrize(
    "bucket",
    ["My_Bucket!!", "ab", "UPPER", "-starts-with-dash", "ends-with-dash-", "has space",
     "192.168.5.4", "goog-data", "my-google-bucket", "g00gle-x", "a" * 64, "a..b",
     DOTTED_222 + "b", "x." + "b" * 64],
)
def test_gcs_bucket_names_gcs_would_refuse(bucket: str) -> None:
    """GCS_BUCKET follows GCS naming rules; a name GCS refuses exits before anything runs."""
    error = refused({**BASE, "GCS_BUCKET": bucket})
    assert (error.variable, error.value) == ("GCS_BUCKET", bucket)
    assert "3-63" in error.expected


@pytest.mark.parametrize(
    "bucket", ["abc", "my-bucket", "my_bucket_2", "a" * 63, "data.example.com",
               DOTTED_222, "1bucket1"],
)
def test_gcs_bucket_names_gcs_accepts(bucket: str) -> None:
    """Valid names, including dotted ones up to 222 characters, are kept as given."""
    assert load_settings({**BASE, "GCS_BUCKET": bucket}).gcs_bucket == bucket


def test_output_dir_is_created_when_missing(tmp_path: Path) -> None:
    """A missing OUTPUT_DIR (with missing parents) is created at start-up."""
    target = tmp_path / "a" / "b"
    assert load_settings({**BASE, "OUTPUT_DIR": str(target)}).output_dir == target
    assert target.is_dir()
    assert list(target.iterdir()) == []  # the write check leaves nothing behind


def test_output_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    """OUTPUT_DIR naming a regular file is refused, saying it is a file."""
    file = tmp_path / "out.txt"
    file.write_text("x")
    error = refused({**BASE, "OUTPUT_DIR": str(file)})
    assert (error.variable, error.value) == ("OUTPUT_DIR", str(file))
    assert "is a file" in error.expected and "是一个文件" in error.expected_zh


def test_output_dir_under_a_file_is_refused(tmp_path: Path) -> None:
    """OUTPUT_DIR below a regular file can never be a folder: refused, whoever runs the job."""
    file = tmp_path / "out.txt"
    file.write_text("x")
    error = refused({**BASE, "OUTPUT_DIR": str(file / "sub")})
    assert error.variable == "OUTPUT_DIR" and "part of this path is a file" in error.expected


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's /proc")
def test_output_dir_root_cannot_write_is_refused() -> None:
    """A folder nobody can create files in (/proc, even for root) is refused by a real write."""
    error = refused({**BASE, "OUTPUT_DIR": "/proc"})
    assert error.variable == "OUTPUT_DIR" and "cannot create a file" in error.expected


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0,
                    reason="root writes through permission bits (see the /proc test)")
def test_output_dir_without_write_permission_is_refused(tmp_path: Path) -> None:
    """A read-only folder is refused for a non-root user."""
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    try:
        assert refused({**BASE, "OUTPUT_DIR": str(folder)}).variable == "OUTPUT_DIR"
    finally:
        folder.chmod(0o700)


def test_output_dir_is_not_checked_when_writing_to_gcs(tmp_path: Path) -> None:
    """With GCS_BUCKET set, OUTPUT_DIR is not used, so a file there is no error."""
    file = tmp_path / "out.txt"
    file.write_text("x")
    assert load_settings({**BASE, "GCS_BUCKET": "my-bucket", "OUTPUT_DIR": str(file)}).gcs_bucket


@pytest.mark.parametrize(("value", "ok"), [("3600", True), ("0.5", True), ("3600.5", False),
                                           ("1e9", False), ("inf", False)])
def test_request_timeout_has_an_upper_bound(value: str, ok: bool) -> None:
    """REQUEST_TIMEOUT is at most 3600 s; 1e9 is refused."""
    env = {**BASE, "REQUEST_TIMEOUT": value}
    if ok:
        assert load_settings(env).request_timeout == float(value)
    else:
        error = refused(env)
        assert (error.variable, error.expected) == ("REQUEST_TIMEOUT", "seconds > 0, at most 3600")


BAD_NAMES = ["shop\x00", "sh\x07op", "\x1b[31mred", "tab\there", "a/b", "a\\b", ".", "..", "  ",
             "line\u2028break"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_single_account_name_is_refused(name: str) -> None:
    """INVOLVE_ASIA_ACCOUNT_NAME must be printable, without separators, not . or .., not blank."""
    error = refused({**BASE, "INVOLVE_ASIA_ACCOUNT_NAME": name})
    assert (error.variable, error.value) == ("INVOLVE_ASIA_ACCOUNT_NAME", name)


def test_account_names_are_trimmed_and_may_be_any_script() -> None:
    """Names are trimmed; spaces inside and non-Latin letters are fine."""
    s = load_settings({**BASE, "INVOLVE_ASIA_ACCOUNT_NAME": "  商店 one "})
    assert s.accounts[0].name == "商店 one"


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_name_inside_accounts_is_refused(name: str) -> None:
    """The same name rules hold for every name in INVOLVE_ASIA_ACCOUNTS; the entry is named."""
    accounts = [{"name": "ok", "secret": "s1"}, {"name": name, "secret": "s2"}]
    error = refused({"INVOLVE_ASIA_ACCOUNTS": json.dumps(accounts)})
    assert error.variable == "INVOLVE_ASIA_ACCOUNTS"
    assert error.expected.startswith("entry 2") and '"name"' in error.expected


SECRET = "do-not-show-me"


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ('[{"name": "a", "secret": "' + SECRET + '"', ["valid JSON", "line 1 column"]),
        ("{not json", ["valid JSON", "line 1 column 2 (char 1)"]),
        (json.dumps({"name": "a", "secret": SECRET}), ["JSON list", "got an object"]),
        ("[]", ["at least one account", "empty list"]),
        (json.dumps([{"name": "a", "secret": SECRET}, "b"]), ["entry 2:", "got a string"]),
        (json.dumps([{"name": "a"}]), ['entry 1 ("a")', '"secret"']),
        (json.dumps([{"name": "a", "secret": ""}]), ['entry 1 ("a")', '"secret"']),
        (json.dumps([{"name": "a", "secret": SECRET}, {"name": "../evil", "secret": "t"}]),
         ['entry 2 ("../evil")', '"name"']),
        (json.dumps([{"secret": SECRET}]), ["entry 1:", '"name"']),
        (json.dumps([{"name": "a", "secret": SECRET}, {"name": "b", "secret": "x"},
                     {"name": "a", "secret": "y"}]),
         ['entry 3 ("a")', "not already used by entry 1"]),
        (json.dumps([{"name": "a", "key": "k", "secret": SECRET},
                     {"name": "b", "key": "k", "secret": SECRET}]),
         ['entry 2 ("b")', 'key and secret not already used by entry 1 ("a")']),
        (json.dumps([{"name": "a", "secret": SECRET}, {"name": "b", "secret": SECRET}]),
         ['entry 2 ("b")', "key and secret"]),
    ],
    ids=["truncated", "not-json", "object", "empty", "entry-not-object", "no-secret",
         "empty-secret", "path-name", "no-name", "duplicate-name", "duplicate-credentials",
         "duplicate-default-key"],
)
def test_accounts_errors_say_which_entry_and_what(raw: str, says: list[str]) -> None:
    """Each INVOLVE_ASIA_ACCOUNTS mistake gets its own explanation; the value and secrets stay hidden."""
    error = refused({"INVOLVE_ASIA_ACCOUNTS": raw})
    assert (error.variable, error.value) == ("INVOLVE_ASIA_ACCOUNTS", "<hidden>")
    for fragment in says:
        assert fragment in error.expected
    for text in (str(error), error.expected, error.expected_zh):
        assert SECRET not in text
    assert CJK.search(error.expected_zh) and not CJK.search(error.expected)


def test_same_credentials_under_another_key_are_two_accounts() -> None:
    """One secret with two different keys is two accounts, not a duplicate."""
    accounts = [{"name": "a", "key": "k1", "secret": "s"}, {"name": "b", "key": "k2", "secret": "s"}]
    s = load_settings({"INVOLVE_ASIA_ACCOUNTS": json.dumps(accounts)})
    assert [(a.name, a.key) for a in s.accounts] == [("a", "k1"), ("b", "k2")]


# --- one language per message ------------------------------------------------------------------


def test_every_expected_text_exists_in_both_languages() -> None:
    """Each setting's expectation has an English text without Chinese and a Chinese one."""
    for opt in OPTIONS:
        assert not CJK.search(opt.expected.en), opt.env
        assert CJK.search(opt.expected.zh), opt.env


def test_bad_log_language_renders_one_language() -> None:
    """LOG_LANGUAGE=fr: the Chinese message (the fallback) carries the Chinese expectation."""
    error = refused({**BASE, "LOG_LANGUAGE": "fr"})
    fields = {"variable": error.variable, "value": error.value}
    zh = render_message("config_invalid", {**fields, "expected": error.expected_in("zh")}, "zh")
    en = render_message("config_invalid", {**fields, "expected": error.expected_in("en")}, "en")
    assert zh == "❌ 配置错误：LOG_LANGUAGE=fr，应为 zh 或 en"
    assert en == "❌ Invalid setting: LOG_LANGUAGE=fr, expected zh or en"


# --- messages that tell the truth -------------------------------------------------------------


@pytest.mark.parametrize(("value", "en", "zh"), [
    ("2025-02-30", "no such date (February 2025 has 28 days)", "该日期不存在（2025年2月只有28天）"),
    ("2024-02-30", "no such date (February 2024 has 29 days)", "该日期不存在（2024年2月只有29天）"),
    ("2025-04-31", "no such date (April 2025 has 30 days)", "该日期不存在（2025年4月只有30天）"),
    ("2025-13-01", "no such date (months run from 01 to 12)", "该日期不存在（月份只有 01 到 12）"),
    ("2025-01-00", "no such date (January 2025 has 31 days)", "该日期不存在（2025年1月只有31天）"),
])
def test_a_date_that_does_not_exist_is_said_so(value: str, en: str, zh: str) -> None:
    """A YYYY-MM-DD naming no day of the calendar: the error says the date does not exist (in
    both languages); a wrong format still says what format is expected."""
    error = refused({**BASE, "START_DATE": value, "END_DATE": "2025-12-31"},
                    today=dt.date(2026, 1, 1))
    assert (error.variable, error.value, error.problem) == ("START_DATE", value, en)
    assert error.problem_in("zh") == zh and error.message_event() == "config_problem"
    assert str(error) == f"START_DATE='{value}': {en}"
    wrong_shape = refused({**BASE, "START_DATE": "2025/02/01"})
    assert wrong_shape.problem is None and wrong_shape.message_event() == "config_invalid"
    assert wrong_shape.expected == "YYYY-MM-DD"


def test_a_leap_day_that_exists_is_taken() -> None:
    """2024-02-29 exists: accepted."""
    s = load_settings({**BASE, "START_DATE": "2024-02-29", "END_DATE": "2024-03-01"})
    assert s.start_date == dt.date(2024, 2, 29)


def test_a_missing_credentials_file_is_refused_only_when_it_would_be_read(tmp_path: Path) -> None:
    """GOOGLE_APPLICATION_CREDENTIALS naming no file is refused with GCS_BUCKET set (saying it
    does not exist, or is not a file); not without a bucket, nor with a storage emulator."""
    gcs = {**BASE, "GCS_BUCKET": "some-bucket"}
    missing = str(tmp_path / "nope.json")
    error = refused({**gcs, "GOOGLE_APPLICATION_CREDENTIALS": missing})
    assert (error.variable, error.value) == ("GOOGLE_APPLICATION_CREDENTIALS", missing)
    assert error.problem == "this file does not exist"
    assert error.problem_in("zh") == "该文件不存在"
    folder = refused({**gcs, "GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path)})
    assert folder.problem == "this is not a file"
    key = tmp_path / "key.json"
    key.write_text("{}")
    assert load_settings({**gcs, "GOOGLE_APPLICATION_CREDENTIALS": str(key)}).gcs_bucket
    load_settings({**BASE, "GOOGLE_APPLICATION_CREDENTIALS": missing})  # local output
    load_settings({**gcs, "GOOGLE_APPLICATION_CREDENTIALS": missing,
                   "STORAGE_EMULATOR_HOST": "http://127.0.0.1:9"})


@pytest.mark.parametrize("variable", ["INVOLVE_ASIA_API_SECRET", "INVOLVE_ASIA_ACCOUNTS"])
def test_a_secret_given_as_a_flag_is_refused(variable: str) -> None:
    """A secret among the flags raises SecretOnCommandLine naming the flag; the value appears
    nowhere in the error. Other flags pass."""
    refuse_secret_flags({"START_DATE": "2025-01-01", variable: None})
    with pytest.raises(SecretOnCommandLine) as info:
        refuse_secret_flags({"START_DATE": "2025-01-01", variable: "made-up-flag-secret"})
    error = info.value
    assert error.variable == variable and error.value == "<hidden>"
    assert error.flag == "--" + variable.lower().replace("_", "-")
    assert error.message_event() == "config_secret_flag"
    assert "made-up-flag-secret" not in str(error) + error.expected + error.expected_zh


HELP_SAYS = {
    "RATE_LIMIT_DELAY": ["seconds"],
    "REQUEST_DELAY": ["seconds"],
    "RESOURCE_REPORT_INTERVAL": ["seconds"],
    "STALL_TIMEOUT": ["seconds"],
    "REQUEST_TIMEOUT": ["seconds"],
    "SNAPSHOT_MAX_AGE": ["seconds"],
    "RETRY_BACKOFF": ["seconds"],
    "LOG_LANGUAGE": ["zh (Chinese)", "en (English)"],
    "LOG_FORMAT": ["json or console"],
    "MAX_RECORDS_LIMIT": ["records, counted per task across all its accounts and days",
                          "duplicates", "reused"],
    "REQUESTS_PER_MINUTE": ["requests per minute per account"],
    "INVOLVE_ASIA_API_SECRET": ["environment only"],
    "INVOLVE_ASIA_ACCOUNTS": ["environment only"],
}


@pytest.mark.timeout(60)
def test_help_gives_units_and_allowed_values() -> None:
    """`python -m app --help` gives the unit of every duration, LOG_LANGUAGE's and LOG_FORMAT's
    values, what MAX_RECORDS_LIMIT counts, and that secrets come from the environment only."""
    out = subprocess.run([sys.executable, "-m", "app", "--help"], capture_output=True, text=True,
                         check=True, timeout=60, cwd=REPO,
                         env={**os.environ, "COLUMNS": "100"}).stdout
    entries = " ".join(out.split()).split(" --")
    for variable, words in HELP_SAYS.items():
        flag = variable.lower().replace("_", "-")
        (entry,) = [e for e in entries if e.startswith(f"{flag} {variable} ")]
        for word in words:
            assert word in entry, (variable, word)
