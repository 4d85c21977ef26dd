"""deploy/setup.sh, deploy/backfill.sh and deploy/bigquery.sh against stand-in `gcloud` and `bq`.

The stand-ins are small Python scripts put first on PATH. They record every call (with the
content of every file passed by a `--...-file` flag, read while the script's temporary files
still exist) and keep the resources that `create` / `mk` made in a state file, so `describe`,
`show` and `list` answer from what earlier calls created, a `create` of something that exists
fails like the real tool, and a second run of a script on the same state shows whether it
creates anything twice.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
SETUP_SH = DEPLOY / "setup.sh"
BACKFILL_SH = DEPLOY / "backfill.sh"
BIGQUERY_SH = DEPLOY / "bigquery.sh"
BASH = shutil.which("bash") or "bash"

PROJECT = "demo-project"
BUCKET = f"{PROJECT}-involve-asia-conversions"
JOB = "involve-asia-conversions"
JOB_SA = f"involve-asia-job@{PROJECT}.iam.gserviceaccount.com"
SCHEDULER_SA = f"involve-asia-scheduler@{PROJECT}.iam.gserviceaccount.com"
REFRESH_SA = f"involve-asia-refresh@{PROJECT}.iam.gserviceaccount.com"
ALERT_EMAIL = "ops@example.com"
METRIC_NAMES = sorted(p.stem for p in (DEPLOY / "metrics").glob("*.yaml"))
POLICY_FILES = sorted((DEPLOY / "alerts").glob("*.json"))

FAKE_GCLOUD = r'''
import json, os, sys

args = sys.argv[1:]
FILE_FLAGS = ("--condition-from-file", "--lifecycle-file", "--config-from-file",
              "--policy-from-file", "--data-file", "--message-body-from-file")
BARE_FLAGS = {"--quiet", "--uniform-bucket-level-access", "--public-access-prevention",
              "--versioning", "--async", "--wait"}
record = {"args": args, "files": {}}
for flag in FILE_FLAGS:
    if flag in args:
        with open(args[args.index(flag) + 1], encoding="utf-8") as f:
            record["files"][flag] = f.read()
with open(os.environ["FAKE_GCLOUD_LOG"], "a", encoding="utf-8") as f:
    f.write(json.dumps(record) + "\n")

def flag(name):
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None

words, skip = [], False
for a in args:
    if skip:
        skip = False
    elif a.startswith("--"):
        skip = "=" not in a and a not in BARE_FLAGS
    else:
        words.append(a)
while words and words[0] in ("alpha", "beta"):
    words.pop(0)

state_path = os.environ["FAKE_GCLOUD_STATE"]
state = {}
if os.path.exists(state_path):
    with open(state_path, encoding="utf-8") as f:
        state = json.load(f)

def save():
    with open(state_path, "w", encoding="utf-8") as f:
        json.dump(state, f)

VERBS = ("describe", "create", "list", "update", "add")
verb_at = next((i for i, w in enumerate(words) if w in VERBS), None)
if words[:2] == ["projects", "describe"]:
    print("123456789012")
    sys.exit(0)
if verb_at is None:
    sys.exit(0)  # enable, submit, execute, add-iam-policy-binding: nothing to keep
group, verb, rest = " ".join(words[:verb_at]), words[verb_at], words[verb_at + 1:]
if group == "scheduler jobs" and verb in ("create", "update"):
    rest = rest[1:]  # `create http NAME`
name = rest[0] if rest else None
if group == "iam service-accounts" and verb == "create":
    name = f"{name}@{flag('--project')}.iam.gserviceaccount.com"
if group.startswith("monitoring") and verb == "create":
    if group == "monitoring channels":
        name = flag("--channel-labels").split("=", 1)[1]
    else:
        name = json.loads(record["files"].get("--policy-from-file")
                          or record["files"]["--config-from-file"])["displayName"]
kept = state.setdefault(group, {})

if verb == "describe":
    sys.exit(0 if name in kept else 1)
if verb == "create" or (verb == "add" and group == "secrets versions"):
    if name in kept:
        print(f"ERROR: {group} {name} already exists", file=sys.stderr)
        sys.exit(1)
    kept[name] = f"projects/{flag('--project')}/{group.split()[-1]}/{len(kept) + 1}"
    save()
    if flag("--format") == "value(name)":
        print(kept[name])
elif verb == "list":
    if group == "secrets versions":
        if name in kept:
            print(kept[name])
    else:
        wanted = flag("--filter") or ""
        for key, resource in kept.items():
            if f'"{key}"' in wanted:
                print(resource)
elif verb == "update":
    known = set(kept) | set(kept.values())
    if group not in ("storage buckets",) and name not in known:
        print(f"ERROR: {group} {name} not found", file=sys.stderr)
        sys.exit(1)
'''

FAKE_BQ = r'''
import json, os, sys

args = sys.argv[1:]
record = {"args": args, "files": {}}
for a in args:
    if a.startswith("--external_table_definition="):
        with open(a.split("=", 1)[1], encoding="utf-8") as f:
            record["files"]["--external_table_definition"] = f.read()
with open(os.environ["FAKE_GCLOUD_LOG"], "a", encoding="utf-8") as f:
    f.write(json.dumps(record) + "\n")
words = [a for a in args if not a.startswith("-")]
state_path = os.environ["FAKE_GCLOUD_STATE"]
state = {}
if os.path.exists(state_path):
    with open(state_path, encoding="utf-8") as f:
        state = json.load(f)
kept = state.setdefault("bq", [])
verb, name = words[0], words[-1]
if verb == "show":
    sys.exit(0 if name in kept else 1)
if verb == "mk":
    if name in kept:
        print(f"BigQuery error: Already Exists: {name}", file=sys.stderr)
        sys.exit(1)
    kept.append(name)
    with open(state_path, "w", encoding="utf-8") as f:
        json.dump(state, f)
elif verb == "update" and name not in kept:
    print(f"BigQuery error: Not found: {name}", file=sys.stderr)
    sys.exit(1)
'''


@dataclass
class FakeCloud:
    env: dict[str, str]
    log: Path

    def calls(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text(encoding="utf-8").splitlines()]

    def commands(self) -> list[str]:
        return [" ".join(c["args"]) for c in self.calls()]

    def matching(self, fragment: str) -> list[dict[str, Any]]:
        return [c for c in self.calls() if fragment in " ".join(c["args"])]

    def reset_log(self) -> None:
        self.log.unlink(missing_ok=True)


def _install(bin_dir: Path, name: str, source: str) -> None:
    script = bin_dir / name
    script.write_text(f"#!{sys.executable}\n{source}", encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def fake_cloud(tmp_path: Path) -> FakeCloud:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _install(bin_dir, "gcloud", FAKE_GCLOUD)
    _install(bin_dir, "bq", FAKE_BQ)
    log = tmp_path / "calls.jsonl"
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(tmp_path),
        "FAKE_GCLOUD_LOG": str(log),
        "FAKE_GCLOUD_STATE": str(tmp_path / "state.json"),
        "PROJECT": PROJECT,
        "MONITORING_RETRY_SLEEP": "0",
    }
    return FakeCloud(env=env, log=log)


def _run(script: Path, fake: FakeCloud, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BASH, str(script), *args], env={**fake.env, **env},
                          capture_output=True, text=True, timeout=60, check=False, cwd=REPO)


def _flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_text("made-up-api-secret-value", encoding="utf-8")
    return path


# ------------------------------------------------------------------------------ setup.sh


@pytest.mark.timeout(90)
def test_setup_creates_everything_with_least_privilege(
    fake_cloud: FakeCloud, secret_file: Path
) -> None:
    """On an empty project setup.sh creates all resources and grants only scoped roles."""
    result = _run(SETUP_SH, fake_cloud, SECRET_FILE=str(secret_file), ALERT_EMAIL=ALERT_EMAIL)
    assert result.returncode == 0, result.stderr
    cmds = fake_cloud.commands()
    joined = "\n".join(cmds)

    assert "made-up-api-secret-value" not in joined + result.stdout + result.stderr
    assert any(c.startswith(f"--project {PROJECT} --quiet secrets versions add "
                            f"involve-asia-api-secret --data-file {secret_file}") for c in cmds)
    for fragment in (
        "artifacts repositories create involve-asia",
        f"storage buckets create gs://{BUCKET}",
        "iam service-accounts create involve-asia-job",
        "iam service-accounts create involve-asia-scheduler",
        "iam service-accounts create involve-asia-refresh",
        "iam roles create involveAsiaObjectLister",
        "services enable",
    ):
        assert fragment in joined
    assert "--uniform-bucket-level-access" in joined
    enable = fake_cloud.matching("services enable")[0]["args"]
    assert {"logging.googleapis.com", "monitoring.googleapis.com"} <= set(enable)

    # The job's object access is conditioned on its prefix; list alone is bucket-wide.
    object_user = fake_cloud.matching("roles/storage.objectUser")
    assert len(object_user) == 1
    assert (f'resource.name.startsWith("projects/_/buckets/{BUCKET}/objects/conversions/")'
            in object_user[0]["files"]["--condition-from-file"])
    lister = [c for c in cmds if "iam roles create" in c]
    assert "--permissions storage.objects.list --stage" in lister[0]

    # Nothing is granted to any of the three accounts at project level, and the job's account
    # gets no logging or monitoring role anywhere (metrics and alerts read its stdout).
    project_grants = [c for c in cmds if "projects add-iam-policy-binding" in c]
    for account in (JOB_SA, SCHEDULER_SA, REFRESH_SA):
        assert all(account not in c for c in project_grants)
    assert not [c for c in cmds if JOB_SA in c and ("roles/logging" in c or "roles/monitoring" in c)]

    # The daily trigger's account may only run this job; only the refresh's may override.
    daily_grants = [c for c in cmds if f"serviceAccount:{SCHEDULER_SA}" in c]
    assert len(daily_grants) == 1
    assert f"run jobs add-iam-policy-binding {JOB}" in daily_grants[0]
    assert "--role roles/run.invoker" in daily_grants[0]
    refresh_grants = [c for c in cmds if f"serviceAccount:{REFRESH_SA}" in c]
    assert len(refresh_grants) == 1
    assert f"run jobs add-iam-policy-binding {JOB}" in refresh_grants[0]
    assert "--role roles/run.jobsExecutorWithOverrides" in refresh_grants[0]

    build = [c for c in cmds if "builds submit" in c]
    assert len(build) == 1 and "--config cloudbuild.yaml" in build[0]
    assert f"_JOB={JOB},_BUCKET={BUCKET}" in build[0]


@pytest.mark.timeout(90)
def test_setup_creates_the_daily_and_the_refresh_trigger(
    fake_cloud: FakeCloud, secret_file: Path
) -> None:
    """Daily: v1 :run, no body. Refresh: weekly, v2 :run with the DEFAULT_DATE_RANGE=90 body."""
    result = _run(SETUP_SH, fake_cloud, SECRET_FILE=str(secret_file))
    assert result.returncode == 0, result.stderr
    creates = fake_cloud.matching("scheduler jobs create http")
    assert [c["args"][c["args"].index("http") + 1] for c in creates] == [
        f"{JOB}-daily", f"{JOB}-refresh"]
    daily, refresh = (c["args"] for c in creates)

    assert _flag(daily, "--uri") == (
        f"https://asia-southeast1-run.googleapis.com/apis/run.googleapis.com/v1/"
        f"namespaces/{PROJECT}/jobs/{JOB}:run")
    assert _flag(daily, "--oauth-service-account-email") == SCHEDULER_SA
    assert _flag(daily, "--schedule") == "0 2 * * *"
    assert "--message-body" not in daily and not any("oidc" in a for a in daily)

    assert _flag(refresh, "--uri") == (
        f"https://run.googleapis.com/v2/projects/{PROJECT}/locations/asia-southeast1/"
        f"jobs/{JOB}:run")
    assert _flag(refresh, "--http-method") == "POST"
    assert _flag(refresh, "--oauth-service-account-email") == REFRESH_SA
    assert _flag(refresh, "--oauth-token-scope") == "https://www.googleapis.com/auth/cloud-platform"
    assert _flag(refresh, "--schedule") == "0 3 * * 1"
    assert _flag(refresh, "--time-zone") == _flag(daily, "--time-zone") == "Asia/Shanghai"
    assert _flag(refresh, "--headers") == "Content-Type=application/json"
    assert json.loads(_flag(refresh, "--message-body")) == {"overrides": {"containerOverrides": [
        {"env": [{"name": "DEFAULT_DATE_RANGE", "value": "90"}]}]}}


@pytest.mark.timeout(90)
def test_setup_refresh_window_is_a_variable(fake_cloud: FakeCloud, secret_file: Path) -> None:
    """REFRESH_DAYS and REFRESH_SCHEDULE change the override and the schedule; junk is refused."""
    result = _run(SETUP_SH, fake_cloud, SECRET_FILE=str(secret_file), REFRESH_DAYS="120",
                  REFRESH_SCHEDULE="0 4 * * *")
    assert result.returncode == 0, result.stderr
    refresh = fake_cloud.matching(f"create http {JOB}-refresh")[0]["args"]
    body = json.loads(_flag(refresh, "--message-body"))
    assert body["overrides"]["containerOverrides"][0]["env"] == [
        {"name": "DEFAULT_DATE_RANGE", "value": "120"}]
    assert _flag(refresh, "--schedule") == "0 4 * * *"

    fake_cloud.reset_log()
    bad = _run(SETUP_SH, fake_cloud, REFRESH_DAYS="90; rm -rf /")
    assert bad.returncode == 2 and "REFRESH_DAYS must be a whole number" in bad.stderr
    assert fake_cloud.calls() == []


@pytest.mark.timeout(90)
def test_setup_turns_on_versioning_and_lifecycle(fake_cloud: FakeCloud, secret_file: Path) -> None:
    """Versioning on; noncurrent days/ versions go after 90 days, runs/ objects after 30."""
    result = _run(SETUP_SH, fake_cloud, SECRET_FILE=str(secret_file))
    assert result.returncode == 0, result.stderr
    updates = fake_cloud.matching(f"storage buckets update gs://{BUCKET}")
    assert len(updates) == 1 and "--versioning" in updates[0]["args"]
    rules = json.loads(updates[0]["files"]["--lifecycle-file"])["rule"]
    assert all(r["action"] == {"type": "Delete"} for r in rules)
    assert [r["condition"] for r in rules] == [
        {"isLive": False, "daysSinceNoncurrentTime": 90, "matchesPrefix": ["conversions/days/"]},
        {"age": 30, "matchesPrefix": ["conversions/runs/"]},
        {"isLive": False, "daysSinceNoncurrentTime": 1, "matchesPrefix": ["conversions/runs/"]},
    ]
    # No rule ever touches a live day snapshot.
    assert not [r for r in rules if "conversions/days/" in r["condition"]["matchesPrefix"]
                and r["condition"].get("isLive") is not False]

    fake_cloud.reset_log()
    again = _run(SETUP_SH, fake_cloud, DAYS_NONCURRENT_RETENTION="7", RUNS_RETENTION_DAYS="3",
                 PREFIX="other")
    assert again.returncode == 0, again.stderr
    rules = json.loads(fake_cloud.matching("storage buckets update")[0]["files"]
                       ["--lifecycle-file"])["rule"]
    assert [(r["condition"].get("daysSinceNoncurrentTime"), r["condition"].get("age"),
             r["condition"]["matchesPrefix"]) for r in rules] == [
        (7, None, ["other/days/"]), (None, 3, ["other/runs/"]), (1, None, ["other/runs/"])]


@pytest.mark.timeout(90)
def test_setup_creates_metrics_dashboard_channel_and_policies(
    fake_cloud: FakeCloud, secret_file: Path
) -> None:
    """Every metric file becomes a log-based metric, plus the dashboard and the four policies
    on one email channel; every placeholder is filled."""
    result = _run(SETUP_SH, fake_cloud, SECRET_FILE=str(secret_file), ALERT_EMAIL=ALERT_EMAIL)
    assert result.returncode == 0, result.stderr

    metrics = fake_cloud.matching("logging metrics create")
    assert sorted(_metric_name(c) for c in metrics) == METRIC_NAMES
    for call in metrics:
        config = call["files"]["--config-from-file"]
        assert "__" not in config
        assert f'resource.labels.job_name="{JOB}"' in yaml.safe_load(config)["filter"]

    dashboards = fake_cloud.matching("monitoring dashboards create")
    assert len(dashboards) == 1
    dashboard = dashboards[0]["files"]["--config-from-file"]
    assert "__" not in dashboard and json.loads(dashboard)["displayName"].endswith(f"({JOB})")

    channels = fake_cloud.matching("monitoring channels create")
    assert len(channels) == 1
    assert _flag(channels[0]["args"], "--type") == "email"
    assert _flag(channels[0]["args"], "--channel-labels") == f"email_address={ALERT_EMAIL}"

    policies = fake_cloud.matching("monitoring policies create")
    assert len(policies) == len(POLICY_FILES) == 4
    names = set()
    for call in policies:
        text = call["files"]["--policy-from-file"]
        assert "__" not in text
        policy = json.loads(text)
        assert policy["notificationChannels"] == [f"projects/{PROJECT}/channels/1"]
        names.add(policy["displayName"])
    assert names == {json.loads(p.read_text(encoding="utf-8"))["displayName"]
                     for p in POLICY_FILES}
    assert result.stdout.count(f"notifies {ALERT_EMAIL}") == 4


def _metric_name(call: dict[str, Any]) -> str:
    args: list[str] = call["args"]
    return args[args.index("create") + 1]


@pytest.mark.timeout(120)
def test_setup_rerun_creates_nothing_twice(fake_cloud: FakeCloud, secret_file: Path) -> None:
    """Run again on the state the first run left, setup.sh only updates and re-binds."""
    first = _run(SETUP_SH, fake_cloud, SECRET_FILE=str(secret_file), ALERT_EMAIL=ALERT_EMAIL)
    assert first.returncode == 0, first.stderr
    created = [c for c in fake_cloud.commands() if " create " in f" {c} "]
    assert len(created) >= 20

    fake_cloud.reset_log()
    second = _run(SETUP_SH, fake_cloud, SECRET_FILE=str(secret_file), ALERT_EMAIL=ALERT_EMAIL)
    assert second.returncode == 0, second.stderr
    cmds = fake_cloud.commands()
    assert [c for c in cmds if " create " in f" {c} "] == []
    assert not any("secrets versions add" in c for c in cmds)
    assert sum("scheduler jobs update http" in c for c in cmds) == 2
    refresh_update = fake_cloud.matching(f"update http {JOB}-refresh")[0]["args"]
    assert _flag(refresh_update, "--update-headers") == "Content-Type=application/json"
    assert "DEFAULT_DATE_RANGE" in _flag(refresh_update, "--message-body")
    assert sum("logging metrics update" in c for c in cmds) == len(METRIC_NAMES)
    assert sum("monitoring dashboards update projects/" in c for c in cmds) == 1
    assert sum("monitoring policies update projects/" in c for c in cmds) == 4
    for call in fake_cloud.matching("monitoring policies update"):
        policy = json.loads(call["files"]["--policy-from-file"])
        assert policy["notificationChannels"] == [f"projects/{PROJECT}/channels/1"]


@pytest.mark.timeout(90)
def test_setup_without_alert_email_creates_no_alerts_and_says_so(
    fake_cloud: FakeCloud, secret_file: Path
) -> None:
    """No ALERT_EMAIL: metrics and dashboard as usual, no channel, no policy, and a notice."""
    result = _run(SETUP_SH, fake_cloud, SECRET_FILE=str(secret_file))
    assert result.returncode == 0, result.stderr
    assert "ALERT_EMAIL is not set: no notification channel and no alert policies" in result.stderr
    cmds = fake_cloud.commands()
    assert not [c for c in cmds if "monitoring channels" in c or "monitoring policies" in c]
    assert sum("logging metrics create" in c for c in cmds) == len(METRIC_NAMES)
    assert sum("monitoring dashboards create" in c for c in cmds) == 1


@pytest.mark.timeout(90)
def test_setup_deploy_false_stops_before_the_build(fake_cloud: FakeCloud) -> None:
    """DEPLOY=false sets up infrastructure and monitoring, then stops: no build, no trigger."""
    result = _run(SETUP_SH, fake_cloud, DEPLOY="false", ALERT_EMAIL=ALERT_EMAIL)
    assert result.returncode == 0, result.stderr
    assert "DEPLOY=false: stopping before build" in result.stdout
    cmds = fake_cloud.commands()
    assert sum("monitoring policies create" in c for c in cmds) == 4
    assert not [c for c in cmds if "builds submit" in c or "scheduler jobs" in c
                or "run jobs add-iam-policy-binding" in c]


# ---------------------------------------------------------------------------- backfill.sh


@pytest.mark.timeout(30)
def test_backfill_passes_range_and_tasks_as_overrides(fake_cloud: FakeCloud) -> None:
    """backfill.sh executes the job with START/END_DATE and extra env as overrides, --tasks, --wait."""
    result = _run(BACKFILL_SH, fake_cloud, "2025-01-01", "2025-01-31", "--tasks", "4",
                  "--", "RETRY_BACKOFF=10,20,30", "FAIL_ON_SKIPPED_PAGES=false")
    assert result.returncode == 0, result.stderr
    assert [c["args"] for c in fake_cloud.calls()] == [[
        "run", "jobs", "execute", JOB,
        "--project", PROJECT, "--region", "asia-southeast1",
        "--update-env-vars",
        "^;^START_DATE=2025-01-01;END_DATE=2025-01-31;RETRY_BACKOFF=10,20,30;"
        "FAIL_ON_SKIPPED_PAGES=false",
        "--tasks", "4", "--wait",
    ]]


@pytest.mark.timeout(30)
def test_backfill_async_flag(fake_cloud: FakeCloud) -> None:
    """--async starts the execution without waiting for it."""
    result = _run(BACKFILL_SH, fake_cloud, "2025-01-01", "2025-01-01", "--async")
    assert result.returncode == 0, result.stderr
    args = fake_cloud.calls()[0]["args"]
    assert args[-1] == "--async" and "--wait" not in args and args[-3:-1] == ["--tasks", "1"]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["2025-02-01", "2025-01-01"], "after END_DATE"),
        (["2025-01-01", "2025-13-01"], "not a YYYY-MM-DD date"),
        (["2025-01-01", "2025-01-31", "--tasks", "0"], "--tasks must be"),
        (["2025-01-01", "2025-01-31", "--", "INVOLVE_ASIA_API_SECRET=x"], "refusing"),
        (["2025-01-01", "2025-01-31", "--", "lower=x"], "not KEY=VALUE"),
    ],
)
def test_backfill_rejects_bad_input_before_calling_gcloud(
    fake_cloud: FakeCloud, args: list[str], message: str
) -> None:
    """Bad dates, task counts, env syntax or a secret override exit 2 without executing anything."""
    result = _run(BACKFILL_SH, fake_cloud, *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert fake_cloud.calls() == []


# ---------------------------------------------------------------------------- bigquery.sh


@pytest.mark.timeout(60)
def test_bigquery_creates_a_hive_partitioned_external_table(fake_cloud: FakeCloud) -> None:
    """bigquery.sh makes the dataset and an external gzip NDJSON table over days/ with
    account (STRING) and date (DATE) partition columns."""
    result = _run(BIGQUERY_SH, fake_cloud)
    assert result.returncode == 0, result.stderr
    calls = fake_cloud.calls()
    made = [c for c in calls if "mk" in c["args"]]
    assert [c["args"][-1] for c in made] == [f"{PROJECT}:involve_asia",
                                             f"{PROJECT}:involve_asia.conversions"]
    assert "--dataset" in made[0]["args"] and "--location=asia-southeast1" in made[0]["args"]
    assert "--table" in made[1]["args"]
    definition = json.loads(made[1]["files"]["--external_table_definition"])
    days = f"gs://{BUCKET}/conversions/days"
    assert definition["sourceFormat"] == "NEWLINE_DELIMITED_JSON"
    assert definition["compression"] == "GZIP"
    assert definition["sourceUris"] == [f"{days}/*"]
    assert definition["hivePartitioningOptions"]["mode"] == "CUSTOM"
    assert definition["hivePartitioningOptions"]["sourceUriPrefix"] == (
        f"{days}/{{account:STRING}}/{{date:DATE}}")
    fields = {f["name"]: f["type"] for f in definition["schema"]["fields"]}
    # Partition columns come from the folder names, never from the data.
    assert "account" not in fields and "date" not in fields
    assert {"conversion_id", "conversion_status", "payout", "currency", "_account"} <= set(fields)
    assert all(c["args"][0] == f"--project_id={PROJECT}" for c in calls)


@pytest.mark.timeout(60)
def test_bigquery_rerun_updates_the_table_and_creates_nothing(fake_cloud: FakeCloud) -> None:
    """A second run finds dataset and table and only updates the table's definition."""
    first = _run(BIGQUERY_SH, fake_cloud)
    assert first.returncode == 0, first.stderr
    fake_cloud.reset_log()
    second = _run(BIGQUERY_SH, fake_cloud, BUCKET="other-bucket")
    assert second.returncode == 0, second.stderr
    calls = fake_cloud.calls()
    assert not [c for c in calls if "mk" in c["args"]]
    updates = [c for c in calls if "update" in c["args"]]
    assert len(updates) == 1 and updates[0]["args"][-1] == f"{PROJECT}:involve_asia.conversions"
    definition = json.loads(updates[0]["files"]["--external_table_definition"])
    assert definition["sourceUris"] == ["gs://other-bucket/conversions/days/*"]


def test_bigquery_defaults_match_setup() -> None:
    """bigquery.sh reads the bucket and prefix that setup.sh creates and job.yaml writes to."""
    def default(script: Path, name: str) -> str:
        for line in script.read_text(encoding="utf-8").splitlines():
            if line.startswith(f"{name}=${{{name}:-"):
                return line.split(":-", 1)[1].rstrip("}")
        raise AssertionError(f"no default for {name} in {script.name}")

    for name in ("BUCKET", "PREFIX"):
        assert default(BIGQUERY_SH, name) == default(SETUP_SH, name)
