"""What counts as usage, as pure functions from what happened to ledger rows.

Seat-days. Each calendar day, in the tenant's time zone, on which a seat existed for any moment
counts once: a seat created at 23:30 and released at 00:10 the next day counts two days; a
day of 23 or 25 hours (a daylight-saving change) is still one day, and a date a zone skips
altogether counts for nothing. Key `seat_day:<seat_id>:<YYYY-MM-DD>`, quantity 1, happening at
the start of that local day, or at the seat's creation on its first day.

Minutes. Per call, from `call.ended`: the talk time (answer to hang-up, `talk_ms`) rounded up to
whole minutes, so 1 ms to 60 s is 1 minute and 60.001 s is 2. A call never answered, or with no
talk time, makes no row. Inbound and outbound calls both count; the direction is kept in the
row's detail. Key `minutes:<call_id>`, counted on the local day the call ended.

Number-months. Each calendar month, in the tenant's time zone, in which a number was held for
any moment counts once. Key `number_month:<number_id>:<YYYY-MM>`, quantity 1, happening at the
start of that local month, or at the purchase in its first month.

Corrections. A row is never changed or deleted. A correction is a new row
`correction:<original key>:<n>` carrying the difference (possibly negative) and naming the row
it corrects; it happens when the original did, so it lands in the same day and period.

Stripe's window. Stripe accepts a meter event only if it happened within the past 35 days, so
seat-days and number-months are made only for days that began (or started) within the 35 days
before the moment the rows are made. Older usage is never sent; reconciliation reports it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from uuid import UUID
from zoneinfo import ZoneInfo

from billing.models import LedgerEntry

STRIPE_WINDOW = timedelta(days=35)
"""How far back Stripe accepts a meter event's timestamp."""

MS_PER_MINUTE = 60_000


def _aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must carry a time zone")
    return value.astimezone(UTC)


def day_start(day: date, tz: ZoneInfo) -> datetime:
    """The first instant of the local `day`, in UTC. When a DST jump skips midnight the day
    starts at the jump: zoneinfo reads a missing wall time with the offset in force before it,
    which lands exactly on the jump."""
    return datetime.combine(day, time(), tz).astimezone(UTC)


def _exists(day: date, tz: ZoneInfo) -> bool:
    """False for a date the zone skips entirely (Pacific/Apia had no 30 December 2011)."""
    return day_start(day, tz).astimezone(tz).date() == day


def _local_days(first: datetime, last: datetime, tz: ZoneInfo) -> Iterator[date]:
    """Each local date that [first, last] touches."""
    first_day = first.astimezone(tz).date()
    day, end = first_day, last.astimezone(tz).date()
    while day <= end:
        if day == first_day or _exists(day, tz):
            yield day
        day += timedelta(days=1)


def _month_of(day: date) -> date:
    return day.replace(day=1)


def _next_month(month: date) -> date:
    return (month + timedelta(days=32)).replace(day=1)


def _local_months(first: datetime, last: datetime, tz: ZoneInfo) -> Iterator[date]:
    """The first of each local month that [first, last] touches."""
    month, end = _month_of(first.astimezone(tz).date()), _month_of(last.astimezone(tz).date())
    while month <= end:
        yield month
        month = _next_month(month)


def _bounds(
    started_at: datetime, ended_at: datetime | None, through: datetime
) -> tuple[datetime, datetime, datetime] | None:
    """(start, last instant counted, oldest acceptable occurred_at), or None before start."""
    start = _aware(started_at, "started_at")
    through = _aware(through, "through")
    last = through if ended_at is None else min(_aware(ended_at, "ended_at"), through)
    if last < start:
        return None
    return start, last, through - STRIPE_WINDOW


def seat_days(
    seat_id: UUID,
    started_at: datetime,
    ended_at: datetime | None,
    tz: ZoneInfo,
    through: datetime,
    *,
    since: datetime | None = None,
) -> list[LedgerEntry]:
    """The seat's seat-day rows for the local days from its creation to its release (or to
    `through`, if sooner), within Stripe's window before `through`; with `since`, only days
    from the local day of `since` on (for a sweep that already made the earlier ones)."""
    bounds = _bounds(started_at, ended_at, through)
    if bounds is None:
        return []
    start, last, oldest = bounds
    begin = max(start, oldest, start if since is None else _aware(since, "since"))
    start_day = start.astimezone(tz).date()
    rows = []
    for day in _local_days(begin, last, tz):
        occurred = start if day == start_day else day_start(day, tz)
        if occurred < oldest:
            continue
        rows.append(
            LedgerEntry(
                key=f"seat_day:{seat_id}:{day.isoformat()}",
                meter="seat_days",
                quantity=1,
                usage_day=day,
                occurred_at=occurred,
                source="seat",
                source_id=str(seat_id),
                detail={"time_zone": tz.key},
            )
        )
    return rows


def number_months(
    number_id: UUID,
    started_at: datetime,
    ended_at: datetime | None,
    tz: ZoneInfo,
    through: datetime,
    *,
    since: datetime | None = None,
) -> list[LedgerEntry]:
    """The number's number-month rows for the local months from its purchase to its release
    (or to `through`, if sooner), within Stripe's window before `through`; with `since`, only
    months from the local month of `since` on."""
    bounds = _bounds(started_at, ended_at, through)
    if bounds is None:
        return []
    start, last, oldest = bounds
    begin = max(start, oldest, start if since is None else _aware(since, "since"))
    start_month = _month_of(start.astimezone(tz).date())
    rows = []
    for month in _local_months(begin, last, tz):
        # A skipped 1st starts the month at the jump, i.e. at the start of its first real day.
        occurred = start if month == start_month else day_start(month, tz)
        if occurred < oldest:
            continue
        rows.append(
            LedgerEntry(
                key=f"number_month:{number_id}:{month.strftime('%Y-%m')}",
                meter="number_months",
                quantity=1,
                usage_day=occurred.astimezone(tz).date(),
                occurred_at=occurred,
                source="number",
                source_id=str(number_id),
                detail={"time_zone": tz.key},
            )
        )
    return rows


def talk_minutes(talk_ms: int) -> int:
    """Talk time rounded up to whole minutes."""
    return -(-max(talk_ms, 0) // MS_PER_MINUTE)


def call_minutes(
    call_id: UUID,
    direction: Literal["inbound", "outbound"],
    answered_at: datetime | None,
    ended_at: datetime,
    talk_ms: int,
    tz: ZoneInfo,
) -> LedgerEntry | None:
    """The call's minutes row, or None for a call nobody talked on."""
    if answered_at is None or talk_ms <= 0:
        return None
    ended = _aware(ended_at, "ended_at")
    return LedgerEntry(
        key=f"minutes:{call_id}",
        meter="voice_minutes",
        quantity=talk_minutes(talk_ms),
        usage_day=ended.astimezone(tz).date(),
        occurred_at=ended,
        source="call",
        source_id=str(call_id),
        detail={"direction": direction, "talk_ms": talk_ms},
    )


def correction(
    original: LedgerEntry,
    new_quantity: int,
    n: int,
    *,
    counted: int | None = None,
    reason: str = "",
) -> LedgerEntry:
    """The n-th correction of `original`, bringing what the ledger counts for it (`counted`:
    the original plus earlier corrections; the original alone by default) to `new_quantity`."""
    if original.corrects is not None:
        raise ValueError("correct the original row, not a correction")
    if n < 1:
        raise ValueError("corrections are numbered from 1")
    difference = new_quantity - (original.quantity if counted is None else counted)
    if difference == 0:
        raise ValueError(f"{original.key} already counts {new_quantity}")
    return LedgerEntry(
        key=f"correction:{original.key}:{n}",
        meter=original.meter,
        quantity=difference,
        usage_day=original.usage_day,
        occurred_at=original.occurred_at,
        source="correction",
        source_id=original.source_id,
        detail={"reason": reason, "now": new_quantity},
        corrects=original.key,
    )
