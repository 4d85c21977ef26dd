"""Process-level set-up done by `python -m app` before any thread starts."""

from __future__ import annotations

import sys

import pytest

from app.__main__ import limit_malloc_arenas


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_malloc_arenas_are_capped_unless_the_operator_chose() -> None:
    """Capped on glibc (flat peak RSS, see bench `volume`); an explicit MALLOC_ARENA_MAX wins."""
    assert limit_malloc_arenas({}) is True
    assert limit_malloc_arenas({"MALLOC_ARENA_MAX": "8"}) is False
