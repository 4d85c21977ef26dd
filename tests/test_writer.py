"""The unit writer: gzip NDJSON, one line per new conversion_id, bounded chunks."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

from app import jsoncodec
from app.models import id_key
from app.writer import Chunk, UnitWriter


def _read(chunks: list[Chunk]) -> list[dict[str, object]]:
    data = b"".join(c.path.read_bytes() for c in chunks)
    return [json.loads(line) for line in gzip.decompress(data).splitlines()]


def test_records_are_written_once_with_their_account(tmp_path: Path) -> None:
    """Duplicates by conversion_id are dropped; each line is the record plus `_account`."""
    chunks: list[Chunk] = []
    w = UnitWriter(account="IAByteC", scratch_dir=tmp_path, on_chunk=chunks.append)
    assert w.write([{"conversion_id": 1, "payout": "1.50"}, {"conversion_id": 2}]) == 2
    assert w.write([{"conversion_id": 2}, {"conversion_id": "1"}, {"conversion_id": 3}]) == 1
    w.close()
    rows = _read(chunks)
    assert rows == [
        {"conversion_id": 1, "payout": "1.50", "_account": "IAByteC"},
        {"conversion_id": 2, "_account": "IAByteC"},
        {"conversion_id": 3, "_account": "IAByteC"},
    ]
    assert (w.records, w.duplicates) == (3, 2)


def test_unknown_fields_and_unicode_are_kept(tmp_path: Path) -> None:
    """Extra fields are data: kept as they came, non-ASCII text intact."""
    chunks: list[Chunk] = []
    w = UnitWriter(account="a", scratch_dir=tmp_path, on_chunk=chunks.append)
    w.write([{"conversion_id": 9, "offer_name": "淘宝 Shopee", "new_field": {"x": [1, None]}}])
    w.close()
    assert _read(chunks) == [{"conversion_id": 9, "offer_name": "淘宝 Shopee",
                              "new_field": {"x": [1, None]}, "_account": "a"}]


def test_big_units_are_cut_into_chunks_that_concatenate(tmp_path: Path) -> None:
    """Past chunk_bytes a chunk is handed off; the chunks together decode as one stream."""
    chunks: list[Chunk] = []
    w = UnitWriter(account="a", scratch_dir=tmp_path, on_chunk=chunks.append, chunk_bytes=4096)
    for page in range(50):
        w.write([{"conversion_id": page * 100 + i,
                  "aff_sub1": hashlib.sha256(f"{page}-{i}".encode()).hexdigest()}
                 for i in range(100)])
    w.close()
    assert len(chunks) > 3
    rows = _read(chunks)
    assert [r["conversion_id"] for r in rows] == list(range(5000))
    assert sum(c.records for c in chunks) == 5000


def test_an_empty_unit_still_produces_a_valid_empty_part(tmp_path: Path) -> None:
    """A day without conversions yields one empty gzip member, so it has a part like any other."""
    chunks: list[Chunk] = []
    w = UnitWriter(account="a", scratch_dir=tmp_path, on_chunk=chunks.append)
    w.close()
    assert len(chunks) == 1 and gzip.decompress(chunks[0].path.read_bytes()) == b""


def test_record_budget_caps_the_output(tmp_path: Path) -> None:
    """With a budget of 3, the fourth new record is not written and the writer says it is capped."""
    budget = [3]

    def take() -> bool:
        if budget[0] == 0:
            return False
        budget[0] -= 1
        return True

    chunks: list[Chunk] = []
    w = UnitWriter(account="a", scratch_dir=tmp_path, on_chunk=chunks.append, take_record=take)
    w.write([{"conversion_id": i} for i in range(5)])
    w.close()
    assert len(_read(chunks)) == 3 and w.capped


def test_discard_leaves_no_file(tmp_path: Path) -> None:
    """A discarded unit leaves nothing in the scratch folder."""
    w = UnitWriter(account="a", scratch_dir=tmp_path, on_chunk=lambda c: None)
    w.write([{"conversion_id": 1}])
    w.discard()
    assert list(tmp_path.iterdir()) == []


def test_values_the_fast_encoder_refuses_are_written_unaltered(tmp_path: Path) -> None:
    """Integers past 64 bits and lone surrogates take the standard library's path: same values."""
    chunks: list[Chunk] = []
    writer = UnitWriter(account="a", scratch_dir=tmp_path, on_chunk=chunks.append)
    big = 123456789012345678901234567890
    records = [
        {"conversion_id": 1, "amount": big, "ratio": 0.1, "tiny": 5e-324, "neg": -(2**63)},
        {"conversion_id": 2, "note": "bad \ud800 text", "emoji": "\U0001f600"},
        {"conversion_id": 3, "nested": {"n": 2**64, "list": [1.5, None, True]}},
    ]
    writer.write(records)
    writer.close()
    raw = gzip.decompress(b"".join(c.path.read_bytes() for c in chunks))
    raw.decode("utf-8")  # every line is valid UTF-8, the lone surrogate included (escaped)
    assert _read(chunks) == [{**record, "_account": "a"} for record in records]
    assert str(big).encode() in raw  # the integer's digits, not a float's


def test_records_without_an_id_are_all_kept_and_an_empty_one_stays_valid(tmp_path: Path) -> None:
    """No conversion_id: nothing to dedupe by, every such record is written; `{}` too."""
    chunks: list[Chunk] = []
    writer = UnitWriter(account="a", scratch_dir=tmp_path, on_chunk=chunks.append)
    assert writer.write([{}, {"x": 1}, {"x": 1}, {"conversion_id": "0042"},
                         {"conversion_id": 42}]) == 4
    writer.close()
    assert _read(chunks) == [{"_account": "a"}, {"x": 1, "_account": "a"},
                             {"x": 1, "_account": "a"}, {"conversion_id": "0042", "_account": "a"}]
    assert writer.duplicates == 1


def test_what_the_writer_writes_the_one_json_rule_reads_back_exactly(tmp_path: Path) -> None:
    """Records out (the writer) and in (`jsoncodec.loads`, used for page bodies and old
    snapshots alike) follow one rule: integers past 64 bits in any field, lone surrogates and
    ordinary values all come back as they went in, with their types."""
    chunks: list[Chunk] = []
    writer = UnitWriter(account="a", scratch_dir=tmp_path, on_chunk=chunks.append)
    records = [{"conversion_id": 2**70 + 1, "amount": 1.5, "status": "pending"},
               {"conversion_id": 7, "nested": {"n": -(2**65)}, "note": "bad \ud800 text"},
               {"conversion_id": 8, "big_as_text": "1" * 30}]
    writer.write(records)
    writer.close()
    lines = gzip.decompress(b"".join(c.path.read_bytes() for c in chunks)).splitlines()
    back = [jsoncodec.loads(line) for line in lines]
    assert back == [{**record, "_account": "a"} for record in records]
    assert type(back[0]["conversion_id"]) is int and type(back[1]["nested"]["n"]) is int


def test_one_id_key_makes_digit_strings_and_numbers_one_record() -> None:
    """`id_key`, the one dedupe key: "123", " 123 " and 123 are the same conversion; other
    text stays text; no id is no key."""
    assert id_key("123") == id_key(" 123 ") == id_key(123) == 123
    assert id_key("0042") == 42
    assert id_key("A-17") == "A-17"
    assert id_key(None) is None
