"""The monitoring files in deploy/: log-based metrics, alert policies, the dashboard.

They parse, they name only metrics that exist (defined by a file in deploy/metrics/, which
deploy/setup.sh creates, or Cloud Run's own), and every log field a metric filters on or
extracts is one the job really writes: the job runs against the simulator as Cloud Run would
start it (a subprocess, JSON logs), its entries are collected, each metric's filter is
translated into a check on those entries, and each filter must match some of them.

The translation covers the subset of the Logging query language the metric files use:
clauses joined by AND, each `jsonPayload.F="v"`, `labels.K="v"` or `severity>=LEVEL`, plus
the two resource clauses Cloud Run fills in itself. Anything else fails the test, so a filter
cannot be changed into something this check does not understand.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.simulator import Fault, Simulator
from tests.support.jobrun import job_env, run_job

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
METRIC_FILES = sorted((DEPLOY / "metrics").glob("*.yaml"))
POLICY_FILES = sorted((DEPLOY / "alerts").glob("*.json"))
DASHBOARD = DEPLOY / "dashboard.json"
SETUP_SH = DEPLOY / "setup.sh"

USER_METRIC = re.compile(r'metric\.type="logging\.googleapis\.com/user/([A-Za-z0-9_]+)"')
PROMQL_USER_METRIC = re.compile(r"logging_googleapis_com:user_([A-Za-z0-9_]+)")
ANY_METRIC_TYPE = re.compile(r'metric\.type="([^"]+)"')
# Cloud Run's own metrics a policy or the dashboard may use besides ours.
BUILT_IN_METRICS = {"run.googleapis.com/job/completed_execution_count": {"result"}}
# What Cloud Run puts on every entry of the job: not the job's to write, so not checked here.
PLATFORM_CLAUSES = {'resource.type="cloud_run_job"', 'resource.labels.job_name="__JOB__"'}
SEVERITIES = ["DEFAULT", "DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL", "ALERT",
              "EMERGENCY"]
LABELS_KEY = "logging.googleapis.com/labels"


def load_metrics() -> dict[str, dict[str, Any]]:
    return {p.stem: yaml.safe_load(p.read_text(encoding="utf-8")) for p in METRIC_FILES}


def load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def metric_label_keys(metric: dict[str, Any]) -> set[str]:
    return {label["key"] for label in metric["metricDescriptor"].get("labels") or []}


# ------------------------------------------------------------------------- the filter check


@dataclass(frozen=True)
class Clause:
    """One `FIELD OP VALUE` of a metric filter, as a check on a job log entry."""

    text: str
    field: str
    op: str
    value: str

    def matches(self, entry: dict[str, Any]) -> bool:
        if self.field == "severity":
            level = SEVERITIES.index(str(entry.get("severity", "DEFAULT")))
            wanted = SEVERITIES.index(self.value)
            return level >= wanted if self.op == ">=" else level == wanted
        found = lookup(entry, self.field)
        return found is not None and str(found) == self.value


CLAUSE = re.compile(r'^(?P<field>[A-Za-z_][\w.]*)(?P<op>>=|=)(?P<value>"[^"]*"|[A-Z]+)$')


def lookup(entry: dict[str, Any], field: str) -> Any:
    """The value a Cloud Logging field path names in a job log line (None: absent).

    `jsonPayload.X` is the line's own key X (Cloud Logging moves unrecognised keys into
    jsonPayload); `labels.K` is K in the `logging.googleapis.com/labels` object.
    """
    head, _, rest = field.partition(".")
    if head == "jsonPayload":
        node: Any = entry
    elif head == "labels":
        node = entry.get(LABELS_KEY) or {}
    else:
        raise AssertionError(f"no translation for field {field!r}")
    for part in rest.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def parse_filter(text: str) -> list[Clause]:
    """The job-side clauses of a filter; fails on anything outside the supported subset."""
    clauses = []
    for raw in re.split(r"\s+AND\s+", " ".join(text.split())):
        if raw in PLATFORM_CLAUSES:
            continue
        match = CLAUSE.match(raw)
        assert match, f"filter clause {raw!r} is outside what this test can check"
        field, op, value = match["field"], match["op"], match["value"].strip('"')
        assert field == "severity" or field.startswith(("jsonPayload.", "labels.")), raw
        assert op == "=" or field == "severity", raw
        if field == "severity":
            assert value in SEVERITIES, raw
        clauses.append(Clause(raw, field, op, value))
    assert clauses, f"filter {text!r} would count every entry of the job"
    return clauses


EXTRACT = re.compile(r"^EXTRACT\(((?:jsonPayload|labels)\.[\w.]+)\)$")


def extracted_field(extractor: str) -> str:
    match = EXTRACT.match(extractor)
    assert match, f"extractor {extractor!r} is outside what this test can check"
    return match.group(1)


def check_metric_against(metric: dict[str, Any], entries: list[dict[str, Any]]) -> list[str]:
    """Problems of one metric against the job's entries (empty list: none)."""
    clauses = parse_filter(metric["filter"])
    matched = [e for e in entries if all(c.matches(e) for c in clauses)]
    if not matched:
        for clause in clauses:
            if not any(clause.matches(e) for e in entries):
                return [f"no job entry has {clause.text}"]
        return ["no job entry matches all clauses together"]
    problems = []
    for key, extractor in (metric.get("labelExtractors") or {}).items():
        field = extracted_field(extractor)
        missing = [e.get("event") for e in matched if lookup(e, field) in (None, "")]
        if missing:
            problems.append(f"label {key}: {field} is missing in {len(missing)} matching entries")
    if "valueExtractor" in metric:
        field = extracted_field(metric["valueExtractor"])
        bad = [lookup(e, field) for e in matched
               if not isinstance(lookup(e, field), (int, float))
               or isinstance(lookup(e, field), bool)]
        if bad:
            problems.append(f"value {field} is not a number in {len(bad)} matching entries")
    return problems


# ------------------------------------------------------------------------- the files' shape


def test_metric_files_are_log_based_metrics() -> None:
    """Each metric file is a LogMetric: a filter on this job, a kind and type, declared labels
    equal to the extracted ones, and a value extractor with buckets exactly for distributions."""
    metrics = load_metrics()
    assert len(metrics) >= 9
    for name, metric in metrics.items():
        assert re.fullmatch(r"involve_asia_[a-z_]+", name), name
        clauses = set(re.split(r"\s+AND\s+", " ".join(metric["filter"].split())))
        assert clauses >= PLATFORM_CLAUSES, name
        descriptor = metric["metricDescriptor"]
        assert descriptor["metricKind"] == "DELTA", name
        assert metric_label_keys(metric) == set(metric.get("labelExtractors") or {}), name
        if descriptor["valueType"] == "DISTRIBUTION":
            assert "valueExtractor" in metric and "bucketOptions" in metric, name
        else:
            assert descriptor["valueType"] == "INT64", name
            assert "valueExtractor" not in metric and "bucketOptions" not in metric, name
        assert metric["description"]


def _named_metrics(node: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """(metric type, the query object naming it) for every query in a policy or dashboard."""
    for item in _walk(node):
        if not isinstance(item, dict):
            continue
        for key in ("filter", "query"):
            text = item.get(key)
            if isinstance(text, str):
                for found in ANY_METRIC_TYPE.findall(text):
                    yield found, item
                for found in PROMQL_USER_METRIC.findall(text):
                    yield f"logging.googleapis.com/user/{found}", item


def check_metric_references(doc: Any) -> list[str]:
    """Problems with the metrics a policy or dashboard names (empty list: none)."""
    metrics = load_metrics()
    problems = []
    named = list(_named_metrics(doc))
    if not named:
        problems.append("names no metric")
    for metric_type, query in named:
        user = metric_type.removeprefix("logging.googleapis.com/user/")
        if user != metric_type:
            if user not in metrics:
                problems.append(f"{user} is not defined in deploy/metrics/")
                continue
            labels = metric_label_keys(metrics[user])
        elif metric_type in BUILT_IN_METRICS:
            labels = BUILT_IN_METRICS[metric_type]
        else:
            problems.append(f"{metric_type} is neither ours nor a known Cloud Run metric")
            continue
        for item in _walk(query):
            if isinstance(item, dict):
                for field in item.get("groupByFields") or []:
                    label = field.removeprefix("metric.label.")
                    if label not in labels:
                        problems.append(f"{metric_type} has no label {label!r}")
        for label in re.findall(r"metric\.labels?\.(\w+)", query.get("filter", "")):
            if label not in labels:
                problems.append(f"{metric_type} has no label {label!r}")
    return problems


@pytest.mark.parametrize("path", [*POLICY_FILES, DASHBOARD], ids=lambda p: p.name)
def test_policies_and_dashboard_name_only_defined_metrics(path: Path) -> None:
    """Every metric a policy or the dashboard uses is a deploy/metrics/ file (which setup.sh
    creates) or Cloud Run's own, and every label they group or filter by exists."""
    assert check_metric_references(load_json(path)) == []


def test_a_reference_to_an_undefined_metric_is_reported() -> None:
    """The reference check can fail: a misspelt metric and a missing label are reported."""
    doc = load_json(POLICY_FILES[0])
    threshold = {"filter": 'metric.type="logging.googleapis.com/user/involve_asia_run_faild"'}
    grouped = {"filter": 'metric.type="logging.googleapis.com/user/involve_asia_run_partial"',
               "aggregation": {"groupByFields": ["metric.label.account"]}}
    doc["conditions"] = [{"conditionThreshold": threshold}, {"conditionThreshold": grouped}]
    problems = check_metric_references(doc)
    assert "involve_asia_run_faild is not defined in deploy/metrics/" in problems
    assert any("no label 'account'" in p for p in problems)


def test_the_four_alert_policies() -> None:
    """Failed execution (Cloud Run's count), partial run (log metric), no success for 26 h
    (PromQL absence), a day's volume dropped (log metric, per account); each notifies the
    channel setup.sh fills in and explains what to do."""
    policies = {p.stem: load_json(p) for p in POLICY_FILES}
    assert set(policies) == {"execution-failed", "run-partial", "no-success-26h",
                             "day-volume-low"}
    for policy in policies.values():
        assert policy["notificationChannels"] == ["__CHANNEL__"]
        assert policy["combiner"] == "OR" and len(policy["conditions"]) == 1
        assert "Logs Explorer" in policy["documentation"]["content"]
        assert policy["displayName"].startswith("Involve Asia conversions: ")

    failed = policies["execution-failed"]["conditions"][0]["conditionThreshold"]
    assert 'metric.type="run.googleapis.com/job/completed_execution_count"' in failed["filter"]
    assert 'metric.labels.result="failed"' in failed["filter"]
    assert (failed["comparison"], failed["thresholdValue"]) == ("COMPARISON_GT", 0)

    partial = policies["run-partial"]["conditions"][0]["conditionThreshold"]
    assert "user/involve_asia_run_partial" in partial["filter"]
    assert (partial["comparison"], partial["thresholdValue"]) == ("COMPARISON_GT", 0)

    volume = policies["day-volume-low"]["conditions"][0]["conditionThreshold"]
    assert "user/involve_asia_day_volume_low" in volume["filter"]
    assert (volume["comparison"], volume["thresholdValue"]) == ("COMPARISON_GT", 0)
    assert volume["aggregations"][0]["groupByFields"] == ["metric.label.account"]
    assert "python -m app status" in policies["day-volume-low"]["documentation"]["content"]
    assert load_metrics()["involve_asia_day_volume_low"]["filter"].count(
        'jsonPayload.event="day_volume_low"') == 1

    absent = policies["no-success-26h"]["conditions"][0]["conditionPrometheusQueryLanguage"]
    assert absent["query"].startswith(
        "absent_over_time(logging_googleapis_com:user_involve_asia_run_succeeded{")
    assert "[26h])" in absent["query"]
    assert load_metrics()["involve_asia_run_succeeded"]["filter"].count(
        'jsonPayload.status="succeeded"') == 1


def test_the_dashboard_has_the_four_views() -> None:
    """Records per account and day, requests and retries by error class, run duration and
    status changes per refresh each have a tile fed by their metric."""
    text = DASHBOARD.read_text(encoding="utf-8")
    doc = json.loads(text)
    assert doc["displayName"] == "Involve Asia conversions (__JOB__)"
    widgets = [tile["widget"] for tile in doc["mosaicLayout"]["tiles"]]
    used = {title: {m for m, _ in _named_metrics(w)} for w in widgets
            for title in [w.get("title", "")]}
    user = "logging.googleapis.com/user/"
    for title_part, metric in [("Records per account and day", "involve_asia_records"),
                               ("Requests", "involve_asia_pages_fetched"),
                               ("Retries", "involve_asia_page_retries"),
                               ("Run duration", "involve_asia_run_duration"),
                               ("Status changes per refresh", "involve_asia_status_changes")]:
        assert any(title_part in title and user + metric in metrics
                   for title, metrics in used.items()), title_part


def test_every_placeholder_is_one_setup_fills() -> None:
    """The __PLACEHOLDERS__ in deploy/'s monitoring files are exactly those setup.sh renders."""
    rendered = set(re.findall(r"s\|(__[A-Z_]+__)\|", SETUP_SH.read_text(encoding="utf-8")))
    used: set[str] = set()
    for path in [*METRIC_FILES, *POLICY_FILES, DASHBOARD]:
        used |= set(re.findall(r"__[A-Z_]+__", path.read_text(encoding="utf-8")))
    assert "__JOB__" in used and "__CHANNEL__" in used
    assert used <= rendered


# -------------------------------------------------------------------- against the real job

START, END = "2025-03-01", "2025-03-02"
BROKEN_DAY = "2025-03-05"
HISTORY_START, HISTORY_END = "2025-02-01", "2025-02-14"
LOW_DAY = "2025-02-15"
"""Holds 10 records against the 250 of each of the 14 days before it: day_volume_low."""
CLOUD_RUN = {"CLOUD_RUN_JOB": "involve-asia-conversions", "CLOUD_RUN_TASK_INDEX": "0",
             "CLOUD_RUN_TASK_COUNT": "1", "CLOUD_RUN_TASK_ATTEMPT": "0"}


@dataclass
class JobLogs:
    """Every entry of the runs below, and each run's exit code and statuses."""

    entries: list[dict[str, Any]]
    runs: dict[str, tuple[int, list[str]]]


@pytest.fixture(scope="module")
def job_logs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JobLogs]:
    """The job run six times against one simulator, as Cloud Run would run it (JSON logs):
    a clean range with a retried page; a day whose page 2 never answers (partial), the same with
    MAX_SKIPPED_PAGES=0 (failed); then, after the simulator's statuses moved on, the first range
    refreshed (SNAPSHOT_MAX_AGE=0), which compares the new snapshots with the old ones; then 14
    ordinary days and, in a run of its own, a day with a twenty-fifth of their volume."""
    low = dt.date.fromisoformat(LOW_DAY)
    sim = Simulator(records_per_day=lambda account, day: 10 if day == low else 250,
                    rate_limit_per_minute=None, validation_rate=0.5).start()
    try:
        sim.add_fault(Fault(kind="http_503", date=START, page=2, attempts={1}))
        sim.add_fault(Fault(kind="http_500", date=BROKEN_DAY, page=2))
        out = tmp_path_factory.mktemp("job-logs")
        entries: list[dict[str, Any]] = []
        runs: dict[str, tuple[int, list[str]]] = {}

        def run(name: str, start: str, end: str, **extra: str) -> None:
            env = job_env(sim.base_url, start, end, OUTPUT_DIR=str(out),
                          CLOUD_RUN_EXECUTION=f"involve-asia-conversions-{name}", **CLOUD_RUN,
                          **extra)
            result = run_job(env)
            events = result.events()
            entries.extend(events)
            runs[name] = (result.code, [e["status"] for e in events
                                        if e.get("event") == "run_finished"])

        run("first", START, END)
        run("partial", BROKEN_DAY, BROKEN_DAY)
        run("failed", BROKEN_DAY, BROKEN_DAY, MAX_SKIPPED_PAGES="0")
        sim.advance_validation(3)
        sim.insert_records("default", START, 5)
        run("refresh", START, END, SNAPSHOT_MAX_AGE="0")
        run("history", HISTORY_START, HISTORY_END)
        run("low", LOW_DAY, LOW_DAY)
        yield JobLogs(entries, runs)
    finally:
        sim.stop()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_the_runs_end_as_intended(job_logs: JobLogs) -> None:
    """The runs the filter check reads did what they are for: succeeded, partial (exit 3),
    failed (exit 1), a refresh that succeeded, and the two volume runs (a low day is complete)."""
    assert job_logs.runs == {
        "first": (0, ["succeeded"]),
        "partial": (3, ["partial"]),
        "failed": (1, ["failed"]),
        "refresh": (0, ["succeeded"]),
        "history": (0, ["succeeded"]),
        "low": (0, ["succeeded"]),
    }


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("path", METRIC_FILES, ids=lambda p: p.stem)
def test_each_metric_filter_matches_what_the_job_logs(job_logs: JobLogs, path: Path) -> None:
    """The metric's filter matches entries of the real job, and every field it extracts (labels,
    value) is present in each of them, numeric for the value."""
    metric = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert check_metric_against(metric, job_logs.entries) == []


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_day_changed_counts_the_refresh_transitions(job_logs: JobLogs) -> None:
    """The refresh logs day_changed per changed day, with `changed` the sum of its transitions:
    the value the status-changes metric extracts."""
    changed = [e for e in job_logs.entries if e.get("event") == "day_changed"
               and e[LABELS_KEY]["execution"] == "involve-asia-conversions-refresh"]
    assert {e["date"] for e in changed} == {START, END}
    for entry in changed:
        assert entry["changed"] == sum(entry["transitions"].values()) > 0
        assert entry["account"] == entry[LABELS_KEY]["account"] == "default"
    assert any(e["added"] == 5 for e in changed if e["date"] == START)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_day_volume_low_is_logged_for_the_low_day_only(job_logs: JobLogs) -> None:
    """Storing the 10-record day after 14 days of 250 logs one day_volume_low WARNING naming the
    account, the day, its records and the median; no other day of any run is flagged."""
    flagged = [e for e in job_logs.entries if e.get("event") == "day_volume_low"]
    assert len(flagged) == 1, flagged
    (entry,) = flagged
    assert entry["severity"] == "WARNING"
    assert entry[LABELS_KEY]["execution"] == "involve-asia-conversions-low"
    assert entry[LABELS_KEY]["account"] == entry["account"] == "default"
    assert (entry["date"], entry["records"], entry["median"]) == (LOW_DAY, 10, 250)
    assert entry["reference_days"] == 14
    assert "2025-02-15" in entry["message"] and "250" in entry["message"]


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda m: {**m, "filter": m["filter"].replace('"run_finished"', '"run_done"')},
         'no job entry has jsonPayload.event="run_done"'),
        (lambda m: {**m, "labelExtractors": {"status": "EXTRACT(jsonPayload.state)"}},
         "label status: jsonPayload.state is missing"),
        (lambda m: {**m, "valueExtractor": "EXTRACT(jsonPayload.status)"},
         "value jsonPayload.status is not a number"),
    ],
    ids=["unknown-event", "unknown-label-field", "text-value"],
)
def test_the_filter_check_can_fail(change: Callable[[dict[str, Any]], dict[str, Any]],
                                   fragment: str) -> None:
    """A filter on an event the job never writes, a label from a missing field and a text value
    are each reported, on canned entries shaped like the job's."""
    entries = [{"severity": "INFO", "event": "run_finished", "status": "succeeded",
                "duration_seconds": 2.5, LABELS_KEY: {"account": "-", "execution": "x"}}]
    metric = yaml.safe_load((DEPLOY / "metrics" / "involve_asia_run_duration.yaml").read_text(
        encoding="utf-8"))
    assert check_metric_against(metric, entries) == []
    problems = check_metric_against(change(metric), entries)
    assert any(fragment in p for p in problems), problems


def test_an_unsupported_filter_clause_is_refused() -> None:
    """A clause the translation does not understand (regex, OR) fails instead of passing."""
    with pytest.raises(AssertionError, match="outside what this test can check"):
        parse_filter('resource.type="cloud_run_job" AND jsonPayload.event=~"run_.*"')
    with pytest.raises(AssertionError, match="outside what this test can check"):
        parse_filter('jsonPayload.event="a" OR jsonPayload.event="b"')
