"""The metering rules, without a database: seat-days and number-months by local calendar day and
month (DST days included), minutes rounded up, corrections, Stripe's 35-day window."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.ledger import rules
from billing.models import LedgerEntry

ZONES = [
    ZoneInfo(name)
    for name in (
        "UTC",
        "America/New_York",
        "Europe/London",
        "Europe/Berlin",
        "Asia/Kolkata",
        "Asia/Kathmandu",
        "Australia/Lord_Howe",  # DST shifts by 30 minutes
        "Pacific/Chatham",
        "America/Santiago",  # DST jumps at midnight
        "America/Havana",
        "Pacific/Apia",  # skipped 30 December 2011 altogether
        "Pacific/Kiritimati",
        "Pacific/Pago_Pago",
    )
]
NY = ZoneInfo("America/New_York")
SEAT = UUID("00000000-0000-7000-8000-000000000001")

zones = st.sampled_from(ZONES)
instants = st.datetimes(
    min_value=datetime(1980, 1, 1),  # noqa: DTZ001 - hypothesis wants naive bounds
    max_value=datetime(2035, 1, 1),  # noqa: DTZ001
    timezones=st.just(UTC),
)
STEP = timedelta(minutes=15)  # every zone's offsets are whole quarter hours since 1980


def touched_dates(a: datetime, b: datetime, tz: ZoneInfo) -> set[date]:
    """Brute force: the local dates of instants every 15 minutes across [a, b], and b. A local
    day lasts far longer than 15 minutes, so no date the span touches is stepped over."""
    seen = {b.astimezone(tz).date()}
    t = a
    while t <= b:
        seen.add(t.astimezone(tz).date())
        t += STEP
    return seen


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@settings(max_examples=150, deadline=None)
@given(
    zone=zones,
    a=instants,
    length=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=33)),
    released=st.booleans(),
)
def test_a_seat_counts_exactly_the_local_dates_it_existed_on(
    zone: ZoneInfo, a: datetime, length: timedelta, released: bool
) -> None:
    b = a + length
    through = b + timedelta(hours=1) if released else b
    rows = rules.seat_days(SEAT, a, b if released else None, zone, through)
    days = [r.usage_day for r in rows]
    assert sorted(days) == sorted(touched_dates(a, b, zone))
    assert len({r.key for r in rows}) == len(rows)
    assert all(r.quantity == 1 and r.meter == "seat_days" for r in rows)
    for r in rows:
        assert r.key == f"seat_day:{SEAT}:{r.usage_day.isoformat()}"
        assert r.occurred_at.astimezone(zone).date() == r.usage_day
        assert a <= r.occurred_at <= b
        if r.occurred_at != a:
            # It happened at the very start of the local day.
            before = r.occurred_at - timedelta(microseconds=1)
            assert before.astimezone(zone).date() < r.usage_day


@settings(max_examples=150, deadline=None)
@given(
    zone=zones,
    through=instants,
    age=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=80)),
    life=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=80)),
)
def test_only_days_within_stripes_window_are_made_and_every_sweep_agrees_on_each_row(
    zone: ZoneInfo, through: datetime, age: timedelta, life: timedelta
) -> None:
    started = through - age
    ended = started + life
    oldest = through - rules.STRIPE_WINDOW
    rows = rules.seat_days(SEAT, started, ended, zone, through)
    last = min(ended, through)
    expected = {
        d
        for d in touched_dates(max(started, oldest - timedelta(days=1)), last, zone)
        if max(started, rules.day_start(d, zone)) >= oldest
    }
    assert {r.usage_day for r in rows} == expected
    assert all(r.occurred_at >= oldest for r in rows)
    # A sweep an hour or a day later makes the same row for every key they share.
    for later in (through + timedelta(hours=1), through + timedelta(days=1)):
        again = {r.key: r for r in rules.seat_days(SEAT, started, ended, zone, later)}
        assert all(again[r.key] == r for r in rows if r.key in again)


@settings(max_examples=100, deadline=None)
@given(
    zone=zones,
    through=instants,
    age=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=40)),
    lag=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=40)),
)
def test_a_sweep_since_an_earlier_one_makes_the_same_rows_from_that_local_day_on(
    zone: ZoneInfo, through: datetime, age: timedelta, lag: timedelta
) -> None:
    started, since = through - age, through - lag
    full = rules.seat_days(SEAT, started, None, zone, through)
    partial = rules.seat_days(SEAT, started, None, zone, through, since=since)
    since_day = since.astimezone(zone).date()
    assert partial == [r for r in full if r.usage_day >= since_day]


@settings(max_examples=100, deadline=None)
@given(
    zone=zones,
    a=instants,
    length=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=33)),
)
def test_a_number_counts_each_local_month_it_was_held_in_once(
    zone: ZoneInfo, a: datetime, length: timedelta
) -> None:
    b = a + length
    number = uuid4()
    rows = rules.number_months(number, a, b, zone, b)
    months = {(d.year, d.month) for d in touched_dates(a, b, zone)}
    assert sorted((r.usage_day.year, r.usage_day.month) for r in rows) == sorted(months)
    assert len({r.key for r in rows}) == len(rows)
    for r in rows:
        assert r.key == f"number_month:{number}:{r.usage_day.strftime('%Y-%m')}"
        assert r.occurred_at == a or r.occurred_at == rules.day_start(
            r.usage_day.replace(day=1), zone
        )


def test_dst_days_of_23_and_25_hours_are_one_seat_day_each() -> None:
    for day in (date(2024, 3, 10), date(2024, 11, 3)):
        start = rules.day_start(day, NY)
        end = rules.day_start(day + timedelta(days=1), NY)
        assert (end - start) in (timedelta(hours=23), timedelta(hours=25))
        whole_day = rules.seat_days(SEAT, start, end - timedelta(microseconds=1), NY, end)
        assert [r.usage_day for r in whole_day] == [day]
        into_next = rules.seat_days(SEAT, start, end, NY, end)
        assert [r.usage_day for r in into_next] == [day, day + timedelta(days=1)]


def test_a_seat_created_at_2330_utc_counts_for_that_evening_in_new_york() -> None:
    created = utc(2026, 1, 15, 23, 30)  # 18:30 in New York, 15 January
    rows = rules.seat_days(SEAT, created, created + timedelta(minutes=20), NY, utc(2026, 1, 16))
    assert [r.usage_day for r in rows] == [date(2026, 1, 15)]
    in_utc = rules.seat_days(
        SEAT, created, created + timedelta(minutes=40), ZoneInfo("UTC"), utc(2026, 1, 17)
    )
    assert [r.usage_day for r in in_utc] == [date(2026, 1, 15), date(2026, 1, 16)]


def test_a_day_the_zone_skipped_is_not_counted() -> None:
    apia = ZoneInfo("Pacific/Apia")
    start = datetime(2011, 12, 29, 12, tzinfo=apia)
    rows = rules.seat_days(SEAT, start, None, apia, start + timedelta(hours=36))
    assert [r.usage_day for r in rows] == [date(2011, 12, 29), date(2011, 12, 31)]


def test_a_seat_released_mid_day_counts_that_day_and_none_after() -> None:
    rows = rules.seat_days(
        SEAT, utc(2026, 2, 1, 9), utc(2026, 2, 2, 11), ZoneInfo("UTC"), utc(2026, 2, 9)
    )
    assert [r.usage_day for r in rows] == [date(2026, 2, 1), date(2026, 2, 2)]
    assert rows[0].occurred_at == utc(2026, 2, 1, 9)
    assert rows[1].occurred_at == utc(2026, 2, 2)


def test_nothing_is_counted_before_a_seat_exists() -> None:
    assert rules.seat_days(SEAT, utc(2026, 2, 2), None, NY, utc(2026, 2, 1)) == []


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="time zone"):
        rules.seat_days(SEAT, datetime(2026, 2, 2), None, NY, utc(2026, 2, 3))  # noqa: DTZ001


@pytest.mark.parametrize(
    ("talk_ms", "minutes"),
    [(1, 1), (59_999, 1), (60_000, 1), (60_001, 2), (61_000, 2), (120_000, 2), (3_600_001, 61)],
)
def test_talk_time_is_rounded_up_to_whole_minutes(talk_ms: int, minutes: int) -> None:
    call = uuid4()
    ended = utc(2026, 3, 1, 4, 30)
    row = rules.call_minutes(call, "outbound", ended - timedelta(minutes=5), ended, talk_ms, NY)
    assert row is not None
    assert row.quantity == minutes
    assert row.key == f"minutes:{call}"
    assert row.meter == "voice_minutes"
    assert row.usage_day == date(2026, 2, 28)  # 23:30 the evening before, in New York
    assert row.detail == {"direction": "outbound", "talk_ms": talk_ms}


@given(talk_ms=st.integers(min_value=1, max_value=10**9))
def test_minutes_never_undercount_and_overcount_by_less_than_one(talk_ms: int) -> None:
    minutes = rules.talk_minutes(talk_ms)
    assert (minutes - 1) * 60_000 < talk_ms <= minutes * 60_000


def test_an_unanswered_or_silent_call_makes_no_row() -> None:
    ended = utc(2026, 3, 1)
    assert rules.call_minutes(uuid4(), "inbound", None, ended, 0, NY) is None
    assert rules.call_minutes(uuid4(), "inbound", ended, ended, 0, NY) is None


def _original(quantity: int = 3) -> LedgerEntry:
    return LedgerEntry(
        key="minutes:abc",
        meter="voice_minutes",
        quantity=quantity,
        usage_day=date(2026, 3, 1),
        occurred_at=utc(2026, 3, 1, 12),
        source="call",
        source_id="abc",
    )


def test_a_correction_is_a_new_row_with_the_difference() -> None:
    original = _original(3)
    down = rules.correction(original, 1, 1, reason="duplicate leg")
    assert down.key == "correction:minutes:abc:1"
    assert down.quantity == -2
    assert down.corrects == "minutes:abc"
    assert down.source == "correction"
    assert (down.usage_day, down.occurred_at, down.meter) == (
        original.usage_day,
        original.occurred_at,
        original.meter,
    )
    up = rules.correction(original, 4, 2, counted=1)
    assert (up.key, up.quantity) == ("correction:minutes:abc:2", 3)


def test_a_correction_that_changes_nothing_or_corrects_a_correction_is_refused() -> None:
    original = _original(3)
    with pytest.raises(ValueError, match="already counts"):
        rules.correction(original, 3, 1)
    with pytest.raises(ValueError, match="original"):
        rules.correction(rules.correction(original, 1, 1), 2, 1)
