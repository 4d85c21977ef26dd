"""The original interface as a script uses it: `from app.involve_asia import InvolveAsiaAPI`, run
as its own process against the simulator, settings from the environment, reading the envelope
the original module returned, the file its save_to_json wrote and the lines it printed (the
script configures no logging: the library prints human-readable lines, once each)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from app.messages import human_bytes
from app.simulator import Fault

REPO = Path(__file__).resolve().parents[1]

ORIGINAL_STYLE = """
    import json
    from app.involve_asia import InvolveAsiaAPI

    api = InvolveAsiaAPI(api_secret="demo-secret", api_key="general")
    print("AUTH", api.authenticate())
    result = api.get_conversions("2025-05-01", "2025-05-02")
    print("RESULT", result["data"]["count"], len(result["data"]["data"]),
          json.dumps(result["data"]["skipped_pages"]))
    path = api.save_to_json(result)
    print("SAVED", path)
    print("SKIPS", json.dumps(api.get_skipped_pages_summary()))
    api.print_final_summary()
"""


def run_script(tmp_path: Path, source: str, **env: str) -> tuple[int, list[str], str]:
    """Run `source` as a script with a clean environment; return (exit code, stdout lines,
    stderr)."""
    script = tmp_path / "weekly_report.py"
    script.write_text(textwrap.dedent(source), encoding="utf-8")
    base = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(REPO),
        "PYTHONUNBUFFERED": "1",
        "RETRY_BACKOFF": "0.01,0.02,0.03,0.04,0.06",
        "RATE_LIMIT_DELAY": "0.05",
        "REQUEST_DELAY": "0",
        "REQUESTS_PER_MINUTE": "100000",
        "REQUEST_TIMEOUT": "2",
        "LOG_LANGUAGE": "en",
        "OUTPUT_DIR": str(tmp_path / "out"),
    }
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env={**base, **env},
                          capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stdout.splitlines(), proc.stderr


def tagged(lines: list[str], tag: str) -> str:
    found = [line[len(tag) + 1:] for line in lines if line.startswith(tag + " ")]
    assert len(found) == 1, (tag, lines)
    return found[0]


def library_lines(lines: list[str]) -> list[str]:
    """What the library printed (not the script's tagged lines)."""
    return [line for line in lines if line and not line.split(" ", 1)[0].isupper()]


@pytest.mark.timeout(90)
def test_a_script_in_the_original_style_gets_the_original_results(make_simulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """InvolveAsiaAPI(api_secret=..., api_key=...), authenticate, get_conversions over two
    days, save_to_json: the original envelope on stdout and on disk, a dead page listed by
    number, USD requested, one range query, the summaries printed, exit 0."""
    sim = make_simulator(records_per_day=250, rate_limit_per_minute=None)
    sim.add_fault(Fault(kind="http_500", date="2025-05-02", page=2))
    code, lines, stderr = run_script(tmp_path, ORIGINAL_STYLE, INVOLVE_ASIA_BASE_URL=sim.base_url)
    assert code == 0, stderr
    assert tagged(lines, "AUTH") == "True"
    assert tagged(lines, "RESULT") == "500 400 [2]"
    saved = Path(tagged(lines, "SAVED"))
    assert saved.parent == tmp_path / "out" and saved.name.startswith("conversions_")
    envelope = json.loads(saved.read_text(encoding="utf-8"))
    assert envelope["status"] == "success" and envelope["message"] == "Success"
    data = envelope["data"]
    assert {k: data[k] for k in ("page", "limit", "count", "total_pages", "pages_fetched",
                                 "skipped_pages", "current_page_count")} == {
        "page": 1, "limit": 100, "count": 500, "total_pages": 5, "pages_fetched": 4,
        "skipped_pages": [2], "current_page_count": 400}
    ids = [r["conversion_id"] for r in data["data"]]
    assert len(ids) == len(set(ids)) == 400
    assert set(ids) < sim.expected_ids("default", "2025-05-01", "2025-05-02")
    assert {r["currency"] for r in data["data"]} == {"USD"}
    ranges = {(e.start_date, e.end_date, e.preferred_currency)
              for e in sim.ledger.snapshot() if e.endpoint == "range"}
    assert ranges == {("2025-05-01", "2025-05-02", "USD")}
    assert "2025-05-01..2025-05-02" in json.loads(tagged(lines, "SKIPS"))
    printed = library_lines(lines)
    assert not [line for line in printed if line.startswith("{")]  # human lines, not JSON
    skipped = [line for line in printed if "page 2 skipped after 6 attempts" in line]
    assert len(skipped) == 2  # the main pass and the second pass, each once
    assert [line for line in printed if line.startswith("💾 Saved ")] == [
        f"💾 Saved {saved} ({human_bytes(saved.stat().st_size)})"]
    assert "demo-secret" not in "\n".join(lines) + stderr


@pytest.mark.timeout(90)
def test_a_script_takes_credentials_currency_and_label_from_settings(make_simulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """InvolveAsiaAPI() takes key and secret from the environment; PREFERRED_CURRENCY is the
    default currency, a per-call currency wins; api_name labels the page lines (the account's
    name without it)."""
    sim = make_simulator(records_per_day=40, rate_limit_per_minute=None)
    source = """
        from app.involve_asia import InvolveAsiaAPI

        api = InvolveAsiaAPI()
        api.authenticate()
        first = api.get_conversions("2025-05-01", "2025-05-01", api_name="shop-sg")
        second = api.get_conversions("2025-05-01", "2025-05-01", "USD")
        print("CURRENCIES", sorted({r["currency"] for r in first["data"]["data"]}),
              sorted({r["currency"] for r in second["data"]["data"]}))
    """
    code, lines, stderr = run_script(tmp_path, source, INVOLVE_ASIA_BASE_URL=sim.base_url,
                                     INVOLVE_ASIA_API_SECRET="demo-secret",
                                     PREFERRED_CURRENCY="MYR")
    assert code == 0, stderr
    assert tagged(lines, "CURRENCIES") == "['MYR'] ['USD']"
    sent = [e.preferred_currency for e in sim.ledger.snapshot() if e.endpoint == "range"]
    assert sent == ["MYR", "USD"]
    labelled = {line.split(" ")[1] for line in library_lines(lines)
                if line.startswith("📄 ") and " page 1/1: " in line}
    assert labelled == {"shop-sg", "default"}


@pytest.mark.timeout(90)
def test_a_script_with_wrong_credentials_gets_false_and_none(make_simulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Wrong secret: authenticate() is False, get_conversions() is None, no conversions
    request is sent, the secret appears nowhere, and the script itself does not crash."""
    sim = make_simulator(rate_limit_per_minute=None)
    source = """
        from app.involve_asia import InvolveAsiaAPI

        api = InvolveAsiaAPI(api_secret="not-the-secret")
        print("AUTH", api.authenticate())
        print("RESULT", api.get_conversions("2025-05-01", "2025-05-01"))
    """
    code, lines, stderr = run_script(tmp_path, source, INVOLVE_ASIA_BASE_URL=sim.base_url)
    assert code == 0, stderr
    assert tagged(lines, "AUTH") == "False"
    assert tagged(lines, "RESULT") == "None"
    assert sim.request_count(endpoint="range") == 0
    assert "not-the-secret" not in "\n".join(lines) + stderr
