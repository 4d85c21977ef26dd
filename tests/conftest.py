"""Shared fixtures: a clean environment for every test, plus the fixture modules below."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

pytest_plugins = [
    "tests.support.simulator_fixtures",
    "tests.support.gcs_fixtures",
]

# Variables the job reads; a test starts with none of them set unless it sets them itself.
_JOB_PREFIXES = ("INVOLVE_ASIA_", "CLOUD_RUN_", "GCS_", "LOG_", "STORAGE_EMULATOR_HOST")


@pytest.fixture(autouse=True)
def clean_environ() -> Iterator[None]:
    """Keep the test process's environment free of job settings, and restore it afterwards."""
    saved = dict(os.environ)
    for name in list(os.environ):
        if name.startswith(_JOB_PREFIXES):
            del os.environ[name]
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
