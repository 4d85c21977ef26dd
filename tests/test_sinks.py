"""The output sinks: one behaviour, two places (a local folder and a GCS bucket via its emulator).

Most tests run against both sinks (the `sink` fixture is parametrized). GCS-only tests put the
fault proxy between the real client and the emulator to show that retried writes neither lose
nor duplicate an object, and that permanent failures end in a bounded time with StorageError.
"""

from __future__ import annotations

import gc
import gzip
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.config import load_settings
from app.errors import AlreadyExists, StorageError
from app.sinks import (
    COMPOSED_FROM,
    GCSSink,
    LocalSink,
    ObjectInfo,
    Sink,
    crc32c_bytes,
    crc32c_file,
    make_sink,
)
from app.sinks.gcs import new_storage_client
from app.sinks.transport import DeadlineSession, release_error_body
from tests.support.faultproxy import FaultProxy, Rule, categorize
from tests.support.gcs_fixtures import GcsEmulator, make_test_gcs_sink

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["local", "gcs"])
def sink(request: pytest.FixtureRequest) -> Sink:
    """The same behavioural test, once per sink implementation."""
    return request.getfixturevalue(f"{request.param}_sink")  # type: ignore[no-any-return]


@pytest.fixture
def proxied(gcs_emulator: GcsEmulator) -> Iterator[tuple[FaultProxy, GCSSink]]:
    """A fault proxy (no rules yet) in front of the emulator, and a GCS sink talking through it."""
    with FaultProxy(gcs_emulator.host, seed=1234) as proxy:
        sink = make_test_gcs_sink(proxy.url, gcs_emulator.bucket)
        try:
            yield proxy, sink
        finally:
            sink.close()


def gz_part(index: int, lines: int = 3) -> bytes:
    """One gzip member holding a few NDJSON lines tagged with `index`."""
    body = "".join(f'{{"conversion_id": {index * 1000 + n}, "part": {index}}}\n' for n in range(lines))
    return gzip.compress(body.encode(), mtime=0)


def expected_lines(indexes: range | list[int], lines: int = 3) -> list[str]:
    return [f'{{"conversion_id": {i * 1000 + n}, "part": {i}}}' for i in indexes for n in range(lines)]


def read_all(sink: Sink, name: str) -> bytes:
    with sink.open_read(name) as reader:
        chunks = []
        while chunk := reader.read(1000):
            chunks.append(chunk)
    return b"".join(chunks)


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and p.name.endswith(".tmp")]


# --- basic operations ------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_put_file_then_stat_get_list_round_trip(sink: Sink, tmp_path: Path) -> None:
    """A stored file reads back byte for byte, with its size, crc32c and a positive generation."""
    data = gz_part(1)
    path = tmp_path / "part.ndjson.gz"
    path.write_bytes(data)
    name = "2025-01-01_2025-01-02/parts/acme/2025-01-01.ndjson.gz"

    info = sink.put_file(name, path)

    assert info.name == name
    assert info.size == len(data)
    assert info.crc32c == crc32c_file(path)
    assert info.generation > 0
    assert info.uri.endswith(name)
    assert info.uri.startswith(sink.root)
    assert sink.stat(name) == info
    assert sink.get_bytes(name) == data
    assert sink.list("2025-01-01_2025-01-02/") == [info]
    assert read_all(sink, name) == data


@pytest.mark.timeout(30)
def test_absent_objects_read_as_none_and_delete_quietly(sink: Sink) -> None:
    """stat/get_bytes of a missing object give None, deleting it is fine, open_read raises."""
    assert sink.stat("nope/missing.json") is None
    assert sink.get_bytes("nope/missing.json") is None
    sink.delete("nope/missing.json")
    with pytest.raises(StorageError, match="does not exist"):
        sink.open_read("nope/missing.json")
    assert sink.list("nope/") == []


@pytest.mark.timeout(30)
def test_delete_removes_the_object(sink: Sink) -> None:
    """After delete the object is gone from stat, get and list, and can be created again."""
    sink.put_bytes("r/status/task-0.json", b'{"done": true}')
    sink.delete("r/status/task-0.json")
    assert sink.stat("r/status/task-0.json") is None
    assert sink.get_bytes("r/status/task-0.json") is None
    assert sink.list("r/") == []
    again = sink.put_bytes("r/status/task-0.json", b'{"done": false}')
    assert sink.get_bytes("r/status/task-0.json") == b'{"done": false}'
    assert again.size == 15


@pytest.mark.timeout(30)
def test_list_is_prefix_filtered_and_sorted_by_name(sink: Sink) -> None:
    """list returns exactly the objects under the prefix, sorted, names relative to the root."""
    for name in ["r/parts/b/2.gz", "r/parts/a/9.gz", "r/parts/a/10.gz", "r/summary.json", "rx/x"]:
        sink.put_bytes(name, name.encode())
    assert [i.name for i in sink.list("r/parts/")] == [
        "r/parts/a/10.gz",
        "r/parts/a/9.gz",
        "r/parts/b/2.gz",
    ]
    assert [i.name for i in sink.list("r/parts/a/1")] == ["r/parts/a/10.gz"]
    assert [i.name for i in sink.list("r")] == [
        "r/parts/a/10.gz",
        "r/parts/a/9.gz",
        "r/parts/b/2.gz",
        "r/summary.json",
        "rx/x",
    ]
    assert all(i.crc32c == crc32c_bytes(i.name.encode()) for i in sink.list(""))


@pytest.mark.timeout(30)
@pytest.mark.parametrize("bad", ["", "/abs", "a//b", "a/../b", "./a", "a/", "a\\b", "d/.x.1.tmp"])
def test_invalid_names_are_refused(sink: Sink, bad: str) -> None:
    """Absolute, empty, dotted or temp-looking names are a caller bug: ValueError, nothing written."""
    with pytest.raises(ValueError, match="invalid object name"):
        sink.put_bytes(bad, b"x")
    assert sink.list("") == []


# --- create-only and generations --------------------------------------------------------------


@pytest.mark.timeout(30)
def test_create_only_refuses_to_overwrite_other_content(sink: Sink) -> None:
    """A create-only write over an existing object raises AlreadyExists and leaves it untouched."""
    first = sink.put_bytes("r/summary.json", b'{"status": "succeeded"}')
    with pytest.raises(AlreadyExists, match="already exists"):
        sink.put_bytes("r/summary.json", b'{"status": "failed"}')
    assert sink.get_bytes("r/summary.json") == b'{"status": "succeeded"}'
    assert sink.stat("r/summary.json") == first


@pytest.mark.timeout(30)
def test_create_only_of_identical_bytes_is_idempotent(sink: Sink, tmp_path: Path) -> None:
    """Writing the very same bytes again returns the existing object (a safe retry), not an error."""
    path = tmp_path / "p.gz"
    path.write_bytes(gz_part(7))
    first = sink.put_file("r/parts/a/d.gz", path)
    again = sink.put_file("r/parts/a/d.gz", path)
    assert again == first
    assert len(sink.list("r/")) == 1


@pytest.mark.timeout(30)
def test_generation_checked_replace(sink: Sink) -> None:
    """An int precondition replaces only that generation; a stale one raises AlreadyExists."""
    v1 = sink.put_bytes("r/status.json", b'{"v": 1}')
    v2 = sink.put_bytes("r/status.json", b'{"v": 2}', if_generation_match=v1.generation)
    assert v2.generation != v1.generation
    assert sink.get_bytes("r/status.json") == b'{"v": 2}'
    with pytest.raises(AlreadyExists):
        sink.put_bytes("r/status.json", b'{"v": 3}', if_generation_match=v1.generation)
    assert sink.get_bytes("r/status.json") == b'{"v": 2}'
    assert sink.stat("r/status.json") == v2


@pytest.mark.timeout(30)
def test_generation_precondition_on_an_absent_object_fails(sink: Sink) -> None:
    """Replacing generation g of an object that does not exist raises AlreadyExists."""
    with pytest.raises(AlreadyExists):
        sink.put_bytes("r/none.json", b"{}", if_generation_match=12345)
    assert sink.stat("r/none.json") is None


@pytest.mark.timeout(30)
def test_unconditional_write_overwrites(sink: Sink) -> None:
    """if_generation_match=None replaces whatever is there."""
    sink.put_bytes("r/x.json", b"old")
    sink.put_bytes("r/x.json", b"new", if_generation_match=None)
    assert sink.get_bytes("r/x.json") == b"new"


@pytest.mark.timeout(30)
def test_concurrent_create_only_writers_have_one_winner(sink: Sink) -> None:
    """Eight writers racing to create one object: exactly one succeeds, the rest get AlreadyExists."""
    results: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def write(n: int) -> None:
        start.wait()
        try:
            sink.put_bytes("r/claim.json", f'{{"task": {n}}}'.encode())
            outcome = f"won:{n}"
        except AlreadyExists:
            outcome = "lost"
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    winners = [r for r in results if r.startswith("won:")]
    assert len(results) == 8
    assert len(winners) == 1
    assert sink.get_bytes("r/claim.json") == f'{{"task": {winners[0][4:]}}}'.encode()


# --- compose ---------------------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("count", [1, 3, 70])
def test_compose_concatenates_gzip_members_in_order(sink: Sink, count: int) -> None:
    """The composed result is the sources in order; concatenated gzip members decode as one stream."""
    names = [f"r/parts/acme/{n:03d}.ndjson.gz" for n in range(count)]
    parts = [gz_part(n) for n in range(count)]
    for name, data in zip(names, parts, strict=True):
        sink.put_bytes(name, data, content_type="application/gzip")

    info = sink.compose("r/conversions.ndjson.gz", names)

    blob = sink.get_bytes("r/conversions.ndjson.gz")
    assert blob == b"".join(parts)
    assert gzip.decompress(blob).decode().splitlines() == expected_lines(range(count))
    assert info.size == len(blob)
    assert info.crc32c == crc32c_bytes(blob)
    # Sources stay, the result is there, and no scratch object outlives the compose.
    assert [i.name for i in sink.list("r/")] == sorted([*names, "r/conversions.ndjson.gz"])


@pytest.mark.timeout(30)
def test_compose_keeps_the_given_order_not_name_order(sink: Sink) -> None:
    """Sources are concatenated in the order given."""
    sink.put_bytes("r/a", b"A")
    sink.put_bytes("r/b", b"B")
    sink.compose("r/out", ["r/b", "r/a", "r/b"])
    assert sink.get_bytes("r/out") == b"BAB"


@pytest.mark.timeout(30)
def test_compose_is_create_only(sink: Sink) -> None:
    """Composing onto an existing object with other content raises AlreadyExists, keeps the old one."""
    sink.put_bytes("r/a", b"A")
    sink.put_bytes("r/out", b"previous result")
    with pytest.raises(AlreadyExists):
        sink.compose("r/out", ["r/a"])
    assert sink.get_bytes("r/out") == b"previous result"


@pytest.mark.timeout(30)
def test_compose_again_with_same_sources_is_idempotent(sink: Sink) -> None:
    """Re-composing the same sources onto the finished result returns it (a retried task is safe)."""
    for n in range(40):
        sink.put_bytes(f"r/p/{n:02d}", gz_part(n))
    sources = [f"r/p/{n:02d}" for n in range(40)]
    first = sink.compose("r/out.gz", sources)
    again = sink.compose("r/out.gz", sources)
    assert again == first
    assert len(sink.list("r/")) == 41


@pytest.mark.timeout(30)
def test_compose_with_a_missing_source_fails_and_writes_nothing(sink: Sink) -> None:
    """A missing source is a StorageError (not AlreadyExists) and no result appears."""
    sink.put_bytes("r/a", b"A")
    with pytest.raises(StorageError) as caught:
        sink.compose("r/out", ["r/a", "r/missing"])
    assert not isinstance(caught.value, AlreadyExists)
    assert sink.stat("r/out") is None
    assert [i.name for i in sink.list("")] == ["r/a"]


@pytest.mark.timeout(30)
def test_compose_needs_a_source(sink: Sink) -> None:
    """An empty source list is a caller bug."""
    with pytest.raises(ValueError, match="at least one source"):
        sink.compose("r/out", [])


# --- checksums -------------------------------------------------------------------------------


def test_crc32c_matches_the_standard_check_value(tmp_path: Path) -> None:
    """crc32c_file gives GCS's notation: base64 of the big-endian CRC32C (check value E3069283)."""
    path = tmp_path / "v"
    path.write_bytes(b"123456789")
    assert crc32c_file(path) == "4waSgw=="
    assert crc32c_bytes(b"123456789") == "4waSgw=="
    assert crc32c_file(tmp_path.joinpath("v")) != crc32c_bytes(b"123456780")


def test_crc32c_file_streams_large_files(tmp_path: Path) -> None:
    """A file bigger than the read chunk gets the same crc32c as the whole bytes at once."""
    data = os.urandom(3 * 1024 * 1024 + 17)
    path = tmp_path / "big"
    path.write_bytes(data)
    assert crc32c_file(path) == crc32c_bytes(data)


# --- the compose marker ------------------------------------------------------------------------


def raw_metadata(emulator: GcsEmulator, sink: GCSSink, name: str) -> dict[str, str]:
    """The object's custom metadata as the JSON API stores it (marker included), read over HTTP."""
    prefix = sink.root.removeprefix(f"gs://{emulator.bucket}").strip("/")
    key = urllib.parse.quote(f"{prefix}/{name}" if prefix else name, safe="")
    url = f"{emulator.host}/storage/v1/b/{emulator.bucket}/o/{key}"
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - our own emulator
        return dict(json.loads(response.read()).get("metadata") or {})


@pytest.mark.timeout(30)
def test_gcs_compose_marks_the_object_but_metadata_shows_only_the_callers_keys(
    gcs_emulator: GcsEmulator, gcs_sink: GCSSink
) -> None:
    """A composed object carries the composed_from marker in GCS; ObjectInfo.metadata never shows
    it, and callers may not use the key."""
    gcs_sink.put_bytes("r/a", b"A")
    info = gcs_sink.compose("r/out", ["r/a"], metadata={"records": "1"})
    stored = raw_metadata(gcs_emulator, gcs_sink, "r/out")
    assert stored["records"] == "1"
    assert len(stored[COMPOSED_FROM]) == 64  # a sha256 digest
    assert dict(info.metadata) == {"records": "1"}
    assert [dict(i.metadata) for i in gcs_sink.list("r/") if i.name == "r/out"] == [{"records": "1"}]
    with pytest.raises(ValueError, match="reserved"):
        gcs_sink.compose("r/other", ["r/a"], metadata={COMPOSED_FROM: "mine"})
    with pytest.raises(ValueError, match="reserved"):
        gcs_sink.put_bytes("r/other", b"x", metadata={COMPOSED_FROM: "mine"})
    assert gcs_sink.stat("r/other") is None


@pytest.mark.timeout(30)
def test_local_sink_reserves_the_marker_key_too(local_sink: LocalSink) -> None:
    """Both sinks refuse the composed_from metadata key, so callers behave the same on either."""
    local_sink.put_bytes("r/a", b"A")
    with pytest.raises(ValueError, match="reserved"):
        local_sink.compose("r/out", ["r/a"], metadata={COMPOSED_FROM: "x"})
    assert local_sink.stat("r/out") is None


@pytest.mark.timeout(30)
def test_gcs_retried_compose_whose_answer_was_lost_is_recognised_as_ours(
    proxied: tuple[FaultProxy, GCSSink],
) -> None:
    """The first compose lands but its answer is lost; the retry meets 412 and the marker says
    the object there is this compose: it returns it, with the caller's metadata."""
    proxy, sink = proxied
    for n in range(3):
        sink.put_bytes(f"r/p/{n}", gz_part(n))
    proxy.set_rules([Rule("reset_after", on="compose", nth={1})])

    info = sink.compose("r/out.gz", [f"r/p/{n}" for n in range(3)], metadata={"records": "9"})

    assert proxy.injected("compose") == ["reset_after"]
    assert [e.status for e in proxy.events if e.category == "compose"] == [None, 412]
    assert sink.get_bytes("r/out.gz") == b"".join(gz_part(n) for n in range(3))
    assert info == sink.stat("r/out.gz")
    assert dict(info.metadata) == {"records": "9"}


@pytest.mark.timeout(30)
def test_gcs_a_different_compose_at_the_same_name_is_not_ours(gcs_sink: GCSSink) -> None:
    """Other sources, other order, or the same names holding other bytes: AlreadyExists, and the
    object stays; only the very same pieces count as a done compose."""
    gcs_sink.put_bytes("r/a", b"A")
    gcs_sink.put_bytes("r/b", b"B")
    gcs_sink.put_bytes("r/c", b"A")  # same bytes as r/a under another name
    first = gcs_sink.compose("r/out", ["r/a", "r/b"])
    for other in (["r/b", "r/a"], ["r/c", "r/b"], ["r/a"]):
        with pytest.raises(AlreadyExists, match="other content"):
            gcs_sink.compose("r/out", other)
    a = gcs_sink.stat("r/a")
    assert a is not None
    gcs_sink.put_bytes("r/a", b"X", if_generation_match=a.generation)
    with pytest.raises(AlreadyExists):
        gcs_sink.compose("r/out", ["r/a", "r/b"])
    assert gcs_sink.get_bytes("r/out") == b"AB"
    assert gcs_sink.stat("r/out") == first


@pytest.mark.timeout(30)
def test_gcs_compose_reads_its_sources_in_one_listing(proxied: tuple[FaultProxy, GCSSink]) -> None:
    """The marker needs each source's crc32c and size: many sources cost one listing of their
    folder, not a request each; a lone source costs one stat."""
    proxy, sink = proxied
    names = [f"r/p/{n:02d}" for n in range(40)]
    for n, name in enumerate(names):
        sink.put_bytes(name, gz_part(n))
    before = len(proxy.events)
    sink.compose("r/out.gz", names)
    used = [e.category for e in proxy.events[before:]]
    assert used.count("list") == 1
    assert used.count("metadata") == 0
    before = len(proxy.events)
    sink.compose("r/copy.gz", ["r/out.gz"])
    assert [e.category for e in proxy.events[before:]] == ["metadata", "compose"]


# --- local specifics -------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_local_temp_files_never_linger(local_sink: LocalSink, tmp_path: Path) -> None:
    """Failed writes (exists, missing input, missing compose source) leave no temp file behind."""
    root = Path(local_sink.root)
    local_sink.put_bytes("r/a", b"A")
    with pytest.raises(AlreadyExists):
        local_sink.put_bytes("r/a", b"B")
    with pytest.raises(StorageError):
        local_sink.put_file("r/b", tmp_path / "does-not-exist")
    with pytest.raises(StorageError):
        local_sink.compose("r/c", ["r/a", "r/gone"])
    with pytest.raises(AlreadyExists):
        local_sink.put_bytes("r/a", b"C", if_generation_match=1)
    local_sink.compose("r/d", ["r/a", "r/a"])
    assert temp_files(root) == []
    assert sorted(p.name for p in (root / "r").iterdir()) == ["a", "d"]


@pytest.mark.timeout(30)
def test_local_listing_ignores_a_write_in_progress(local_sink: LocalSink) -> None:
    """A temp file left by a killed writer is not an object: list and stat do not show it."""
    local_sink.put_bytes("r/a", b"A")
    leftover = Path(local_sink.root, "r", ".b.k3j2.tmp")
    leftover.write_bytes(b"half")
    assert [i.name for i in local_sink.list("r/")] == ["r/a"]


@pytest.mark.timeout(30)
def test_local_generations_increase_even_within_one_clock_tick(local_sink: LocalSink) -> None:
    """Quick successive replacements get strictly increasing generations, so checks stay exact."""
    info = local_sink.put_bytes("r/s", b"0")
    for n in range(1, 30):
        newer = local_sink.put_bytes("r/s", str(n).encode(), if_generation_match=info.generation)
        assert newer.generation > info.generation
        info = newer
    assert local_sink.get_bytes("r/s") == b"29"


@pytest.mark.timeout(30)
def test_local_sink_uri_is_the_file_path(local_sink: LocalSink) -> None:
    """The local uri is the absolute file path, and the file holds the bytes."""
    info = local_sink.put_bytes("r/summary.json", b"{}")
    assert Path(info.uri).is_absolute()
    assert Path(info.uri).read_bytes() == b"{}"
    assert Path(info.uri).stat().st_mtime_ns == info.generation


@pytest.mark.timeout(30)
def test_make_sink_without_bucket_is_local_and_does_not_import_google_cloud(
    tmp_path: Path,
) -> None:
    """With no bucket the job writes to OUTPUT_DIR, and never pays for the google client import."""
    code = (
        "import sys; from pathlib import Path; from app.sinks import make_sink; "
        f"s = make_sink(bucket=None, prefix='conversions', output_dir=Path({str(tmp_path)!r})); "
        "s.put_bytes('r/x.json', b'{}'); "
        "print(type(s).__name__, 'google.cloud.storage' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    assert out.stdout.split() == ["LocalSink", "False"]
    assert (tmp_path / "r" / "x.json").read_bytes() == b"{}"


# --- GCS specifics ---------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_make_sink_with_bucket_uses_the_emulator_from_the_environment(
    gcs_emulator: GcsEmulator, tmp_path: Path
) -> None:
    """GCS_BUCKET + STORAGE_EMULATOR_HOST give a GCS sink under gs://bucket/prefix, no credentials
    (the variable reaches the sink through Settings, not the process environment)."""
    settings = load_settings({"INVOLVE_ASIA_API_SECRET": "demo-secret", **gcs_emulator.env()})
    assert settings.storage_emulator_host == gcs_emulator.host
    assert "STORAGE_EMULATOR_HOST" not in os.environ
    sink = make_sink(bucket=settings.gcs_bucket, prefix="/conversions/", output_dir=tmp_path,
                     endpoint=settings.storage_emulator_host)
    assert isinstance(sink, GCSSink)
    try:
        assert sink.root == f"gs://{gcs_emulator.bucket}/conversions"
        info = sink.put_bytes("r/summary.json", b'{"ok": 1}')
        assert info.uri == f"gs://{gcs_emulator.bucket}/conversions/r/summary.json"
        assert sink.get_bytes("r/summary.json") == b'{"ok": 1}'
        assert list(tmp_path.iterdir()) == []
    finally:
        sink.close()


@pytest.mark.timeout(30)
def test_gcs_prefixes_keep_sinks_apart(gcs_emulator: GcsEmulator) -> None:
    """Two prefixes in one bucket never see each other's objects."""
    a = make_test_gcs_sink(gcs_emulator.host, gcs_emulator.bucket, "one")
    b = make_test_gcs_sink(gcs_emulator.host, gcs_emulator.bucket, "")
    try:
        a.put_bytes("r/x", b"1")
        b.put_bytes("r/x", b"2")
        assert a.get_bytes("r/x") == b"1"
        assert [i.name for i in a.list("")] == ["r/x"]
        assert [i.name for i in b.list("")] == ["one/r/x", "r/x"]
        assert b.root == f"gs://{gcs_emulator.bucket}"
    finally:
        a.close()
        b.close()


@pytest.mark.timeout(60)
def test_gcs_parts_over_one_mib_go_up_in_chunks_and_stay_create_only(
    proxied: tuple[FaultProxy, GCSSink], tmp_path: Path
) -> None:
    """A 2.5 MiB part is sent in 1 MiB chunks (never one request built in memory), and the
    create-only precondition still holds: same bytes again are a no-op, other bytes refused."""
    proxy, sink = proxied
    data = os.urandom(5 * 512 * 1024 + 7)
    path = tmp_path / "part.gz"
    path.write_bytes(data)

    info = sink.put_file("r/parts/acme/d.gz", path)

    assert (info.size, info.crc32c) == (len(data), crc32c_bytes(data))
    assert sink.get_bytes("r/parts/acme/d.gz") == data
    uploads = [e for e in proxy.events if e.category == "upload"]
    assert "uploadType=resumable" in uploads[0].path
    assert len(uploads) == 4  # initiate, then three chunks of at most 1 MiB
    assert sink.put_file("r/parts/acme/d.gz", path) == info
    path.write_bytes(os.urandom(len(data)))
    with pytest.raises(AlreadyExists):
        sink.put_file("r/parts/acme/d.gz", path)
    assert sink.get_bytes("r/parts/acme/d.gz") == data


@pytest.mark.timeout(60)
def test_gcs_large_upload_goes_resumable_and_survives_a_503(
    proxied: tuple[FaultProxy, GCSSink], tmp_path: Path
) -> None:
    """A file of several chunks uploads in chunks, a refused chunk retried after a 503, intact."""
    proxy, sink = proxied
    data = os.urandom(9 * 1024 * 1024 + 123)
    path = tmp_path / "big.gz"
    path.write_bytes(data)
    proxy.set_rules([Rule("503", on="upload", nth={2})])

    info = sink.put_file("r/parts/acme/big.gz", path)

    assert info.size == len(data)
    assert info.crc32c == crc32c_bytes(data)
    assert sink.get_bytes("r/parts/acme/big.gz") == data
    assert proxy.injected("upload") == ["503"]
    uploads = [e for e in proxy.events if e.category == "upload"]
    assert "uploadType=resumable" in uploads[0].path
    assert len(uploads) >= 4  # initiate, a refused chunk, its retry, the last chunk


@pytest.mark.timeout(60)
def test_gcs_uploads_survive_503s_and_resets_exactly_once(
    proxied: tuple[FaultProxy, GCSSink], tmp_path: Path
) -> None:
    """Parts uploaded through 503s, 429s, resets and lost answers all land once, complete."""
    proxy, sink = proxied
    proxy.set_rules(
        [
            Rule("503", on="upload", nth={1, 4, 9}),
            Rule("reset", on="upload", nth={2, 11}),
            Rule("reset_after", on="upload", nth={6, 13}),  # stored, but the client never hears
            Rule("429", on="upload", nth={7}),
        ]
    )
    names = []
    for n in range(8):
        path = tmp_path / f"{n}.gz"
        path.write_bytes(gz_part(n, lines=50))
        name = f"r/parts/acme/2025-01-{n + 1:02d}.ndjson.gz"
        info = sink.put_file(name, path)
        assert info.crc32c == crc32c_file(path)
        names.append(name)

    assert sorted(proxy.injected("upload")) == sorted(
        ["503", "503", "503", "reset", "reset", "reset_after", "reset_after", "429"]
    )
    # A retry after a lost answer met 412 and was recognised as our own write.
    assert [e.status for e in proxy.events if e.category == "upload"].count(412) == 2
    listed = sink.list("r/")
    assert [i.name for i in listed] == names
    for n, name in enumerate(names):
        assert sink.get_bytes(name) == gz_part(n, lines=50)


@pytest.mark.timeout(60)
def test_gcs_compose_in_rounds_survives_faults_without_duplicates(
    proxied: tuple[FaultProxy, GCSSink],
) -> None:
    """A 70-source compose through 503s, resets and lost answers yields every record exactly once."""
    proxy, sink = proxied
    count = 70
    names = [f"r/parts/acme/{n:03d}.ndjson.gz" for n in range(count)]
    for n, name in enumerate(names):
        sink.put_bytes(name, gz_part(n), content_type="application/gzip")
    proxy.set_rules(
        [
            Rule("503", on="compose", nth={1}),
            Rule("reset_after", on="compose", nth={3, 5}),
            Rule("reset", on="compose", nth={4}),
            Rule("500", on="delete", nth={1}),
        ]
    )

    info = sink.compose("r/conversions.ndjson.gz", names)

    data = sink.get_bytes("r/conversions.ndjson.gz")
    assert data is not None
    lines = gzip.decompress(data).decode().splitlines()
    assert lines == expected_lines(range(count))
    assert len(set(lines)) == count * 3
    assert info.crc32c == crc32c_bytes(data)
    assert proxy.injected("compose") == ["503", "reset_after", "reset", "reset_after"]
    assert [e.status for e in proxy.events if e.category == "compose"].count(412) >= 1
    assert [i.name for i in sink.list("r/")] == sorted([*names, "r/conversions.ndjson.gz"])


@pytest.mark.timeout(60)
def test_gcs_random_faults_on_every_kind_of_request(
    proxied: tuple[FaultProxy, GCSSink],
) -> None:
    """With seeded random faults on uploads, compose, list and reads, everything still ends correct."""
    proxy, sink = proxied
    # Only categories the test itself causes, so the seeded draws do not depend on the client's
    # background bucket-metadata request.
    proxy.set_rules(
        [
            Rule("503", on="upload", probability=0.2),
            Rule("reset", on="upload", probability=0.15),
            Rule("reset_after", on="upload", probability=0.15),
            Rule("503", on="compose", probability=0.5),
            Rule("reset", on="list", probability=0.5),
            Rule("429", on="download", probability=0.5),
        ]
    )
    names = [f"r/p/{n:02d}" for n in range(12)]
    for n, name in enumerate(names):
        sink.put_bytes(name, gz_part(n))
    sink.compose("r/out.gz", names)

    assert len(proxy.injected()) >= 5
    assert {"reset_after", "503"} <= set(proxy.injected("upload"))
    assert [i.name for i in sink.list("r/")] == sorted([*names, "r/out.gz"])
    data = sink.get_bytes("r/out.gz")
    assert data is not None
    assert gzip.decompress(data).decode().splitlines() == expected_lines(range(12))


@pytest.mark.timeout(30)
def test_gcs_corrupted_upload_is_refused_and_leaves_nothing(
    proxied: tuple[FaultProxy, GCSSink], tmp_path: Path
) -> None:
    """Bytes damaged on the way fail the crc32c check: StorageError, and no object is left."""
    proxy, sink = proxied
    path = tmp_path / "p.gz"
    path.write_bytes(os.urandom(64 * 1024))
    proxy.set_rules([Rule("corrupt", on="upload")])
    with pytest.raises(StorageError, match="upload failed"):
        sink.put_file("r/parts/x.gz", path)
    proxy.set_rules([])
    assert sink.stat("r/parts/x.gz") is None


@pytest.mark.timeout(30)
def test_gcs_upload_whose_stored_checksum_differs_is_deleted(
    proxied: tuple[FaultProxy, GCSSink],
) -> None:
    """If the server reports another crc32c than we sent, the object is removed and StorageError raised."""
    proxy, sink = proxied
    proxy.set_rules([Rule("bad_checksum_reply", on="upload")])
    with pytest.raises(StorageError, match="crc32c"):
        sink.put_bytes("r/x.json", b'{"a": 1}')
    proxy.set_rules([])
    assert sink.stat("r/x.json") is None


@pytest.mark.timeout(30)
def test_gcs_permanent_refusal_fails_fast_with_a_clear_message(
    proxied: tuple[FaultProxy, GCSSink],
) -> None:
    """A 403 on every request is not retried: StorageError at once, naming the object and status."""
    proxy, sink = proxied
    proxy.set_rules([Rule("403")])
    started = time.monotonic()
    with pytest.raises(StorageError) as caught:
        sink.put_bytes("r/summary.json", b"{}")
    assert time.monotonic() - started < 3
    message = str(caught.value)
    assert "r/summary.json" in message
    assert "403" in message or "Forbidden" in message
    assert proxy.injected() == ["403"]  # one request, refused, never retried


@pytest.mark.timeout(30)
def test_gcs_endless_503s_give_up_at_the_retry_deadline(gcs_emulator: GcsEmulator) -> None:
    """Transient errors that never stop end in StorageError once retry_deadline has passed."""
    with FaultProxy(gcs_emulator.host, [Rule("503", on="upload")]) as proxy:
        sink = make_test_gcs_sink(proxy.url, gcs_emulator.bucket, retry_deadline=1.0)
        try:
            started = time.monotonic()
            with pytest.raises(StorageError, match="upload failed"):
                sink.put_bytes("r/x", b"x")
            elapsed = time.monotonic() - started
        finally:
            sink.close()
    assert 0.5 < elapsed < 5
    assert len(proxy.injected("upload")) >= 3  # it did retry before giving up


@pytest.mark.timeout(30)
def test_gcs_dead_endpoint_fails_within_the_retry_deadline(tmp_path: Path) -> None:
    """A storage endpoint nobody listens on ends in StorageError within a bounded time."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    sink = make_test_gcs_sink(dead, "some-bucket", retry_deadline=1.0, request_timeout=1.0)
    try:
        started = time.monotonic()
        with pytest.raises(StorageError, match="some-bucket"):
            sink.stat("r/x")
        with pytest.raises(StorageError):
            sink.put_bytes("r/x", b"x")
        assert time.monotonic() - started < 8
    finally:
        sink.close()


@pytest.mark.timeout(60)
def test_gcs_error_messages_hide_upload_session_ids(
    proxied: tuple[FaultProxy, GCSSink], tmp_path: Path
) -> None:
    """A failed resumable upload names the object but not its session id (a bearer credential)."""
    proxy, sink = proxied
    path = tmp_path / "big"
    path.write_bytes(os.urandom(9 * 1024 * 1024))
    proxy.set_rules([Rule("403", on="upload", nth={2})])  # the first chunk, sent to the session URL
    with pytest.raises(StorageError) as caught:
        sink.put_file("r/big", path)
    message = str(caught.value)
    session_urls = [e.path for e in proxy.events if "upload_id=" in e.path]
    assert session_urls
    upload_id = session_urls[0].split("upload_id=")[1].split("&")[0]
    assert upload_id not in message
    assert "r/big" in message
    assert len(message) < 1200


@pytest.mark.timeout(30)
def test_gcs_open_read_streams_and_maps_errors(proxied: tuple[FaultProxy, GCSSink]) -> None:
    """open_read returns the bytes in small reads; a permanent failure mid-read is a StorageError."""
    proxy, sink = proxied
    data = os.urandom(300_000)
    sink.put_bytes("r/blob", data, content_type="application/octet-stream")
    assert read_all(sink, "r/blob") == data
    reader = sink.open_read("r/blob")
    try:
        proxy.set_rules([Rule("403", on="download")])
        with pytest.raises(StorageError, match="read failed"):
            reader.read(10)
    finally:
        reader.close()


# --- the test tools themselves ------------------------------------------------------------------


def test_fault_proxy_categorises_gcs_requests() -> None:
    """Rules address requests by what they do; the categories follow the JSON API's paths."""
    assert categorize("POST", "/upload/storage/v1/b/b/o?uploadType=multipart") == "upload"
    assert categorize("PUT", "/upload/storage/v1/b/b/o?uploadType=resumable&upload_id=x") == ("upload")
    assert categorize("POST", "/storage/v1/b/b/o/r%2Fout/compose") == "compose"
    assert categorize("GET", "/download/storage/v1/b/b/o/x?alt=media") == "download"
    assert categorize("GET", "/storage/v1/b/b/o?prefix=r%2F") == "list"
    assert categorize("GET", "/storage/v1/b/b/o/x") == "metadata"
    assert categorize("DELETE", "/storage/v1/b/b/o/x") == "delete"
    with pytest.raises(ValueError, match="unknown fault"):
        Rule("teapot")
    with pytest.raises(ValueError, match="unknown category"):
        Rule("503", on="uploads")


@pytest.mark.timeout(30)
def test_emulator_enforces_generation_preconditions(gcs_sink: GCSSink) -> None:
    """The test emulator answers 412 like GCS, so create-only is really checked by the server."""
    first = gcs_sink.put_bytes("r/x", b"1")
    assert isinstance(first, ObjectInfo)
    with pytest.raises(AlreadyExists):
        gcs_sink.put_bytes("r/x", b"2")
    gcs_sink.put_bytes("r/y", b"2")
    with pytest.raises(AlreadyExists):
        gcs_sink.compose("r/x", ["r/y"])
    assert gcs_sink.get_bytes("r/x") == b"1"


@pytest.mark.timeout(30)
def test_gcs_silent_server_cannot_hang_a_call() -> None:
    """A server that accepts connections but never answers ends in StorageError, bounded in time."""
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # the kernel completes handshakes; nobody ever reads or answers
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        sink = make_test_gcs_sink(endpoint, "quiet-bucket", request_timeout=0.3, retry_deadline=1.0)
        try:
            started = time.monotonic()
            with pytest.raises(StorageError, match="quiet-bucket"):
                sink.put_bytes("r/x", b"x")
            assert time.monotonic() - started < 5
        finally:
            sink.close()


# --- the storage client: the one place the sink adjusts its library -----------------------------


def test_storage_client_sends_through_our_deadline_session(gcs_emulator: GcsEmulator) -> None:
    """The client is built with our session (its constructor's `_http`), which carries the
    error-body hook and the storage deadlines. The client keeps the session it was given at
    `client._http`; this fails if an upgrade stops using it: then look again (gcs.py)."""
    client = new_storage_client(gcs_emulator.host)
    try:
        session = client._http
        assert isinstance(session, DeadlineSession)
        assert release_error_body in session.hooks["response"]
    finally:
        client.close()


@pytest.mark.timeout(30)
def test_gcs_retried_download_leaves_no_socket_behind(proxied: tuple[FaultProxy, GCSSink]) -> None:
    """A download answered 503 and retried releases the failed connection at once: nothing is
    left for the garbage collector to find unclosed (a ResourceWarning)."""
    proxy, sink = proxied
    sink.put_bytes("r/blob", b"x" * 5000, content_type="application/octet-stream")
    proxy.set_rules([Rule("503", on="download", nth={1, 2})])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        assert sink.get_bytes("r/blob") == b"x" * 5000
        gc.collect()
    assert proxy.injected("download") == ["503", "503"]
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


@pytest.mark.timeout(30)
def test_gcs_sink_never_asks_for_bucket_metadata(proxied: tuple[FaultProxy, GCSSink]) -> None:
    """Object operations send no storage.buckets.get (the client's background OpenTelemetry
    lookup is switched off), so an object-only service account raises no denied requests."""
    proxy, sink = proxied
    sink.put_bytes("r/a", b"A")
    sink.compose("r/out", ["r/a"])
    assert sink.get_bytes("r/out") == b"A"
    assert [i.name for i in sink.list("r/")] == ["r/a", "r/out"]
    time.sleep(0.3)  # a background fetch starts at the first operation; give it time to show
    bucket_path = re.compile(r"^/storage/v1/b/[^/?]+(\?|$)")
    assert [e.path for e in proxy.events if bucket_path.match(e.path)] == []


# --- metadata --------------------------------------------------------------------------------


def test_metadata_round_trips_on_every_write_kind(sink: Sink, tmp_path: Path) -> None:
    """put_file, put_bytes and compose store the metadata given; stat and list return it."""
    path = tmp_path / "a.gz"
    path.write_bytes(gz_part(1))
    sink.put_file("m/a.gz", path, metadata={"records": "3", "complete": "true"})
    sink.put_bytes("m/b.json", b"{}", metadata={"kind": "note"})
    sink.compose("m/c.gz", ["m/a.gz"], metadata={"records": "3", "copied": "yes"})
    stats = {name: sink.stat(name) for name in ("m/a.gz", "m/b.json", "m/c.gz")}
    assert {n: dict(i.metadata) for n, i in stats.items() if i} == {
        "m/a.gz": {"records": "3", "complete": "true"},
        "m/b.json": {"kind": "note"},
        "m/c.gz": {"records": "3", "copied": "yes"},
    }
    listed = {info.name: dict(info.metadata) for info in sink.list("m/")}
    assert listed == {n: dict(i.metadata) for n, i in stats.items() if i}


def test_a_replace_without_metadata_drops_the_old_metadata(sink: Sink) -> None:
    """Metadata belongs to one version of the object: replacing it without metadata clears it."""
    first = sink.put_bytes("m/x.json", b"1", metadata={"v": "1"})
    second = sink.put_bytes("m/x.json", b"2", if_generation_match=first.generation)
    assert dict(second.metadata) == {}
    info = sink.stat("m/x.json")
    assert info is not None and dict(info.metadata) == {}


def test_local_sidecar_is_not_an_object_and_a_stale_one_is_ignored(local_sink: LocalSink) -> None:
    """Locally, metadata lives in `<name>.meta.json`: never listed, reserved as a name, and read
    only while it describes the bytes beside it (a kill between data and sidecar)."""
    local_sink.put_bytes("d/x.gz", b"old", metadata={"v": "1"})
    assert [i.name for i in local_sink.list("d/")] == ["d/x.gz"]
    with pytest.raises(ValueError, match="sidecar"):
        local_sink.put_bytes("d/x.gz.meta.json", b"{}")
    # the data is replaced behind the sidecar's back, as a kill between the two would leave it
    (Path(local_sink.root) / "d" / "x.gz").write_bytes(b"new bytes")
    info = local_sink.stat("d/x.gz")
    assert info is not None and dict(info.metadata) == {}
    local_sink.delete("d/x.gz")
    assert not (Path(local_sink.root) / "d" / "x.gz.meta.json").exists()


@pytest.mark.timeout(30)
def test_local_delete_removes_the_folders_it_empties_up_to_the_root(local_sink: LocalSink) -> None:
    """Folders exist only where objects are, as on GCS: deleting the last object of a folder
    removes it and every parent it leaves empty; the root and non-empty folders stay."""
    root = Path(local_sink.root)
    local_sink.put_bytes("runs/r/e/parts/acct/2025-01-01/t0.ndjson.gz", b"x", metadata={"k": "v"})
    local_sink.put_bytes("runs/r/e/summary.json", b"{}")
    local_sink.delete("runs/r/e/parts/acct/2025-01-01/t0.ndjson.gz")
    assert not (root / "runs/r/e/parts").exists()
    assert sorted(p.name for p in (root / "runs/r/e").iterdir()) == ["summary.json"]
    local_sink.delete("runs/r/e/summary.json")
    assert root.is_dir() and list(root.iterdir()) == []
    local_sink.delete("runs/r/e/summary.json")  # absent, folders gone: still quiet
    local_sink.put_bytes("runs/r/e/summary.json", b"{}")  # and the folders come back
    assert local_sink.get_bytes("runs/r/e/summary.json") == b"{}"


@pytest.mark.timeout(60)
def test_local_writes_racing_with_deletes_that_empty_their_folders_never_fail(
        local_sink: LocalSink) -> None:
    """Threads writing and deleting objects in shared folders: a delete that removes a folder
    a write is about to use never fails that write, and no object is lost or left behind."""
    errors: list[BaseException] = []
    kept: list[str] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        try:
            for n in range(400):
                name = f"scratch/{n % 3}/day/{index}-{n}.gz"
                local_sink.put_bytes(name, b"data")
                if n % 10 == 9:
                    with lock:
                        kept.append(name)
                else:
                    local_sink.delete(name)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [i.name for i in local_sink.list("scratch/")] == sorted(kept)
    for name in kept:
        local_sink.delete(name)
    assert list(Path(local_sink.root).iterdir()) == []
