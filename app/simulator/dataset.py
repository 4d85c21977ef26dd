"""The simulated conversions: deterministic from a seed, lazy per (account, day), live-insertable.

Nothing is stored per record. A day is a handful of integers (how many records it started
with, how many it holds now); record number `n` of a day (0 = oldest) is a pure function of
(seed, account, day, n), so a 500,000-record day costs nothing until a page of it is served,
and two datasets with the same seed serve identical records.

Serve order within a day is newest first, i.e. descending `n`. The original records fall in
00:00:00..22:59:59 with non-decreasing times as `n` grows; records inserted later (the live
dataset) take `n` = total, total + 1, ... with times from 23:00:00 on, so they are newer than
everything else and go to the front, shifting every other record one place down. A range of
several days is served newest day first.

Conversion ids are unique across accounts and days:
`day.toordinal() * 10**9 + account_index * 10**7 + n`.

Every record of an account is in the account's local currency (`currency.py` converts).

Statuses move on a validation clock (`advance`): a record that starts `pending` resolves to
`approved` or `rejected` at a validation step drawn once from (seed, account, day, n), as if
it had an independent chance `validation_rate` at every step, and never changes again. So the
status at epoch e is a pure function of (seed, account, day, n, e): nothing is stored per
record, only the epoch.
"""

from __future__ import annotations

import bisect
import datetime as dt
import hashlib
import math
import random
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.simulator.currency import check_local

RecordsPerDay = int | Callable[[str, dt.date], int]
"""Records a day starts with: a constant, or a function of (account name, day)."""

MAX_ACCOUNTS = 100
"""Ids reserve two digits for the account index."""
MAX_RECORDS_PER_DAY = 10_000_000
"""Ids reserve seven digits for the record number within a day (inserts included)."""
ORIGINAL_SPAN_SECONDS = 23 * 3600
"""Original records fall before 23:00:00; inserted ones from 23:00:00 on."""
STATUSES = ("approved", "pending", "rejected")
DEFAULT_CURRENCY = "MYR"
"""An account's local currency unless told (not USD, so conversion shows)."""

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_SOURCES = ("facebook", "instagram", "tiktok", "google", "youtube", "email", "telegram", "website")
_DEVICES = ("mobile", "desktop", "tablet", "app")
_MERCHANTS = (
    "Shopee", "Lazada", "Zalora", "Agoda", "Klook", "Traveloka", "Watsons", "Sephora",
    "Nike", "Adidas", "Uniqlo", "Trip.com", "Booking.com", "AliExpress", "Guardian", "Taobao",
)
_COUNTRIES = ("MY", "SG", "ID", "TH", "PH", "VN", "MY")  # MY twice: offers as before
_VALIDATION_SALT = 0x5A17_0F_DA7E_C0DE
_APPROVED_SHARE = 1638  # of 2048: a pending record that resolves is approved 80% of the time
VALIDATION_STEP_DAYS = 7
"""`datetime_conversion_updated` is the conversion time plus this many days per step."""
_OFFER_TYPES = ("CPS", "CPA", "CPS - New User", "CPS - App")


def _mix64(value: int) -> int:
    """SplitMix64 finaliser: a fast, well-spread 64-bit hash of an integer."""
    z = (value + _GOLDEN) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def stable_hash(*parts: object) -> int:
    """A 64-bit hash of `parts` that is the same in every process (unlike `hash()`)."""
    text = "\x1f".join(str(part) for part in parts)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def unit_draw(*parts: object) -> float:
    """A number in [0, 1) fixed by `parts`: seeded randomness independent of thread timing."""
    return stable_hash(*parts) / float(1 << 64)


def as_date(value: dt.date | str) -> dt.date:
    """Accept a `datetime.date` or an ISO `YYYY-MM-DD` string."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(value)


def _money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def _clock_text(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


@dataclass(frozen=True)
class _Offer:
    offer_id: int
    offer_name: str
    merchant_id: int
    rate_basis_points: int


@dataclass
class _Day:
    """What a day is made of; `total - 1 - position` is the record at a served position."""

    account: str
    date: dt.date
    currency: str
    key: int
    prefix: str
    base_id: int
    original: int
    total: int


@dataclass(frozen=True)
class Segment:
    """One day's part of a range: the record numbers it contributes, in served order, and
    the validation epoch its statuses are read at."""

    day: _Day
    numbers: Sequence[int]
    epoch: int = 0


def _make_offers(seed: int, account: str) -> tuple[_Offer, ...]:
    rng = random.Random(f"{seed}/offers/{account}")
    offers = []
    for merchant_id in sorted(rng.sample(range(1000, 9999), 12)):
        merchant = rng.choice(_MERCHANTS)
        country = rng.choice(_COUNTRIES)
        offers.append(_Offer(
            offer_id=rng.randrange(10_000, 99_999),
            offer_name=f"{merchant} {country} - {rng.choice(_OFFER_TYPES)}",
            merchant_id=merchant_id,
            rate_basis_points=rng.randrange(150, 1200),
        ))
    return tuple(offers)


class Dataset:
    """Every account's conversions, generated on first access to each (account, day).

    `currencies` maps account names to local currencies (default MYR); `validation_rate` is
    the chance that a pending record resolves at each validation step (0..1).
    """

    def __init__(self, accounts: Sequence[str], records_per_day: RecordsPerDay, seed: int, *,
                 currencies: Mapping[str, str] | None = None,
                 validation_rate: float = 0.3) -> None:
        if len(accounts) > MAX_ACCOUNTS:
            raise ValueError(f"at most {MAX_ACCOUNTS} accounts, got {len(accounts)}")
        if len(set(accounts)) != len(accounts):
            raise ValueError(f"account names must be unique: {list(accounts)}")
        if not 0.0 <= validation_rate <= 1.0:
            raise ValueError(f"validation_rate must be in 0..1, got {validation_rate}")
        self._seed = seed
        self._index = {name: i for i, name in enumerate(accounts)}
        self._offers = {name: _make_offers(seed, name) for name in accounts}
        self._currencies = {name: check_local((currencies or {}).get(name, DEFAULT_CURRENCY))
                            for name in accounts}
        self._records_per_day = records_per_day
        self._validation_rate = validation_rate
        # log(1 - rate): the geometric draw of a pending record's resolution step.
        self._log_keep = math.log1p(-validation_rate) if 0.0 < validation_rate < 1.0 else 0.0
        self._epoch = 0
        self._days: dict[tuple[str, dt.date], _Day] = {}
        self._lock = threading.Lock()

    @property
    def accounts(self) -> list[str]:
        """Account names in index order."""
        return list(self._index)

    def currency(self, account: str) -> str:
        """The account's local currency."""
        return self._currencies[account]

    # -- validation clock ---------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        """How many validation steps have passed (0 at start)."""
        with self._lock:
            return self._epoch

    def advance(self, steps: int = 1) -> int:
        """Move the validation clock `steps` steps on; return the new epoch."""
        if steps < 0:
            raise ValueError(f"the validation clock only moves forward, got {steps} steps")
        with self._lock:
            self._epoch += steps
            return self._epoch

    def _resolution(self, h: int) -> tuple[int | None, str]:
        """(step at which a pending record resolves, None = never; the status it resolves to)."""
        draw = _mix64(h ^ _VALIDATION_SALT)
        outcome = "approved" if draw & 0x7FF < _APPROVED_SHARE else "rejected"
        rate = self._validation_rate
        if rate >= 1.0:
            return 1, outcome
        if rate <= 0.0:
            return None, outcome
        u = (draw >> 11) / float(1 << 53)  # [0, 1)
        return 1 + int(math.log1p(-u) / self._log_keep), outcome

    # -- days ---------------------------------------------------------------------------------

    def _day(self, account: str, date: dt.date) -> _Day:
        """The day's state, created on first access (call with the lock held)."""
        found = self._days.get((account, date))
        if found is not None:
            return found
        if account not in self._index:
            raise KeyError(f"unknown simulator account {account!r}")
        wanted = self._records_per_day
        original = wanted(account, date) if callable(wanted) else wanted
        if not 0 <= original <= MAX_RECORDS_PER_DAY:
            raise ValueError(f"records per day must be in 0..{MAX_RECORDS_PER_DAY}, got {original}")
        day = _Day(
            account=account,
            date=date,
            currency=self._currencies[account],
            key=stable_hash(self._seed, "day", account, date.isoformat()),
            prefix=date.isoformat() + " ",
            base_id=date.toordinal() * 10**9 + self._index[account] * 10**7,
            original=original,
            total=original,
        )
        self._days[(account, date)] = day
        return day

    def generated_days(self) -> list[tuple[str, dt.date]]:
        """Every (account, day) generated so far, in first-access order."""
        with self._lock:
            return list(self._days)

    def total(self, account: str, date: dt.date | str) -> int:
        """How many records the day holds now."""
        with self._lock:
            return self._day(account, as_date(date)).total

    def insert(self, account: str, date: dt.date | str, count: int = 1) -> list[int]:
        """Add `count` new conversions to the day, newest of all; return their ids."""
        if count < 0:
            raise ValueError(f"cannot insert {count} records")
        with self._lock:
            day = self._day(account, as_date(date))
            if day.total + count > MAX_RECORDS_PER_DAY:
                raise ValueError(f"day {day.date} of {account!r} would exceed "
                                 f"{MAX_RECORDS_PER_DAY} records")
            first = day.total
            day.total += count
        return [day.base_id + n for n in range(first, first + count)]

    # -- records ------------------------------------------------------------------------------

    @staticmethod
    def _hash(day: _Day, n: int) -> int:
        return _mix64(day.key ^ ((n * _GOLDEN) & _MASK64))

    @staticmethod
    def _seconds(day: _Day, n: int, h: int) -> int:
        """Second of the day for record `n`; non-decreasing in `n`."""
        if n >= day.original:
            return min(ORIGINAL_SPAN_SECONDS + (n - day.original), 86_399)
        # Record n sits inside its own slot [n, n + 1) of the original span, so order holds.
        return ((n << 16) + (h & 0xFFFF)) * ORIGINAL_SPAN_SECONDS // (day.original << 16)

    def _time_key(self, day: _Day) -> Callable[[int], int]:
        """Record number -> second of the day, for bisecting a day by time."""
        return lambda n: self._seconds(day, n, self._hash(day, n))

    def build(self, day: _Day, n: int, epoch: int = 0) -> dict[str, Any]:
        """Record number `n` of the day at validation epoch `epoch`, as the API would return
        it (in the local currency)."""
        h = self._hash(day, n)
        offers = self._offers[day.account]
        offer = offers[(h >> 16) % len(offers)]
        sale = 500 + ((h >> 24) & 0xFFFFF) % 60_000
        base = sale * offer.rate_basis_points // 10_000
        bonus = 100 * (1 + ((h >> 44) & 0x3)) if (h >> 46) & 0x7 == 0 else 0
        roll = (h >> 49) & 0x3F
        status = "approved" if roll < 35 else ("pending" if roll < 57 else "rejected")
        seconds = self._seconds(day, n, h)
        updated = None
        if status == "pending" and epoch > 0:
            step, outcome = self._resolution(h)
            if step is not None and step <= epoch:
                status = outcome
                updated = (dt.datetime.combine(day.date, dt.time())
                           + dt.timedelta(days=VALIDATION_STEP_DAYS * step, seconds=seconds))
        order = _mix64(h) % 10**10
        record: dict[str, Any] = {
            "conversion_id": day.base_id + n,
            "offer_id": offer.offer_id,
            "offer_name": offer.offer_name,
            "merchant_id": offer.merchant_id,
            "sale_amount": _money(sale),
            "payout": _money(base + bonus),
            "base_payout": _money(base),
            "bonus_payout": _money(bonus),
            "currency": day.currency,
            "conversion_status": status,
            "datetime_conversion": day.prefix + _clock_text(seconds),
            "aff_sub1": _SOURCES[(h >> 55) & 0x7],
            "aff_sub2": f"cmp{(h >> 58) & 0x3F:02d}",
            "aff_sub3": _DEVICES[(h >> 8) & 0x3],
            "aff_sub4": "",
            "aff_sub5": "",
            "adv_sub1": f"ORD{order:010d}",
            "adv_sub2": "",
            "adv_sub3": "",
            "adv_sub4": "",
            "adv_sub5": "",
        }
        if updated is not None:
            record["datetime_conversion_updated"] = updated.strftime("%Y-%m-%d %H:%M:%S")
        return record

    def records(self, account: str, date: dt.date | str) -> list[dict[str, Any]]:
        """The day's current records (current statuses) in served order (newest first)."""
        with self._lock:
            day = self._day(account, as_date(date))
            total, epoch = day.total, self._epoch
        return [self.build(day, n, epoch) for n in range(total - 1, -1, -1)]

    def statuses(self, account: str, date: dt.date | str) -> dict[int, str]:
        """Conversion id -> current status, for every record the day holds now."""
        return {int(record["conversion_id"]): str(record["conversion_status"])
                for record in self.records(account, date)}

    def expected_ids(self, account: str, start: dt.date | str, end: dt.date | str) -> set[int]:
        """Ids the dataset holds now for the inclusive range."""
        ids: set[int] = set()
        with self._lock:
            for date in _days_between(as_date(start), as_date(end)):
                day = self._day(account, date)
                ids.update(range(day.base_id, day.base_id + day.total))
        return ids

    def truth_ids(self, account: str, start: dt.date | str, end: dt.date | str
                  ) -> Iterator[int]:
        """The ids the dataset holds now for the inclusive range, ascending (days ascending,
        oldest first within a day), one day at a time: a huge range costs no memory."""
        for date in _days_between(as_date(start), as_date(end)):
            with self._lock:
                day = self._day(account, date)
                total = day.total
            yield from range(day.base_id, day.base_id + total)

    def truth_records(self, account: str, start: dt.date | str, end: dt.date | str
                      ) -> Iterator[dict[str, Any]]:
        """The records `truth_ids` names, as the API serves them now (current statuses, local
        currency), in the same order, one record at a time."""
        for date in _days_between(as_date(start), as_date(end)):
            with self._lock:
                day = self._day(account, date)
                total, epoch = day.total, self._epoch
            for n in range(total):
                yield self.build(day, n, epoch)

    # -- ranges -------------------------------------------------------------------------------

    def segments(self, account: str, start: dt.datetime, end: dt.datetime,
                 keep: Callable[[dict[str, Any]], bool] | None = None) -> list[Segment]:
        """The records between two instants (inclusive), newest day first, per day.

        `keep` filters records (the optional API filters); without it a segment is a `range`
        and nothing is built, so a page of a huge day stays cheap.
        """
        result = []
        with self._lock:
            days = [self._day(account, date)
                    for date in reversed(_days_between(start.date(), end.date()))]
            totals = [day.total for day in days]
            epoch = self._epoch
        for day, total in zip(days, totals, strict=True):
            low, high = 0, total
            numbers = range(total)
            if day.date == start.date():
                since = start.hour * 3600 + start.minute * 60 + start.second
                low = bisect.bisect_left(numbers, since, key=self._time_key(day))
            if day.date == end.date():
                until = end.hour * 3600 + end.minute * 60 + end.second
                high = bisect.bisect_right(numbers, until, key=self._time_key(day))
            served: Sequence[int] = range(high - 1, low - 1, -1)
            if keep is not None:
                served = [n for n in served if keep(self.build(day, n, epoch))]
            result.append(Segment(day, served, epoch))
        return result

    def page(self, segments: Sequence[Segment], page: int, limit: int
             ) -> tuple[int, list[dict[str, Any]]]:
        """(total count, records of the 1-based page) over the concatenated segments."""
        count = sum(len(segment.numbers) for segment in segments)
        skip = (page - 1) * limit
        wanted = limit
        out: list[dict[str, Any]] = []
        for segment in segments:
            size = len(segment.numbers)
            if skip >= size:
                skip -= size
                continue
            for n in segment.numbers[skip:skip + wanted]:
                out.append(self.build(segment.day, n, segment.epoch))
            wanted = limit - len(out)
            skip = 0
            if wanted <= 0:
                break
        return count, out


def _days_between(start: dt.date, end: dt.date) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def record_filter(form: Mapping[str, str]) -> Callable[[dict[str, Any]], bool] | None:
    """The API's optional filters (`filters[conversion_status]`, `[offer_id]`,
    `[conversion_id]`, pipe-separated) as a predicate, or None when there are none."""
    tests: list[Callable[[dict[str, Any]], bool]] = []
    statuses = _pipe_values(form.get("filters[conversion_status]"))
    if statuses:
        tests.append(lambda record: record["conversion_status"] in statuses)
    offers = _pipe_values(form.get("filters[offer_id]"))
    if offers:
        tests.append(lambda record: str(record["offer_id"]) in offers)
    ids = _pipe_values(form.get("filters[conversion_id]"))
    if ids:
        tests.append(lambda record: str(record["conversion_id"]) in ids)
    if not tests:
        return None
    return lambda record: all(test(record) for test in tests)


def _pipe_values(raw: str | None) -> frozenset[str]:
    if not raw:
        return frozenset()
    return frozenset(part.strip() for part in raw.split("|") if part.strip())


def pages_for(count: int, limit: int) -> int:
    """How many pages `count` records fill at `limit` per page."""
    return math.ceil(count / limit) if count else 0


def ids_of(records: Iterable[Mapping[str, Any]]) -> tuple[int, ...]:
    """The conversion ids of served records, in order."""
    return tuple(int(record["conversion_id"]) for record in records)
