"""Where numbers come from. Callers see only NumberProvider; the platform inventory ships, and a
carrier API (Telnyx, Twilio, Bandwidth) is another implementation of the same interface."""

from __future__ import annotations

from typing import Protocol

import asyncpg

from tenancy.errors import Conflict
from tenancy.numbers import repository as repo
from tenancy.numbers.models import AvailableNumber, NumberQuery

QUARANTINE_DAYS = 30


class NumberUnavailable(Conflict):
    code, title = "number-unavailable", "Number not available"


class NumberProvider(Protocol):
    name: str

    async def search(self, conn: asyncpg.Connection, query: NumberQuery) -> list[AvailableNumber]:
        """Numbers a tenant could buy now."""
        ...

    async def acquire(self, conn: asyncpg.Connection, e164: str) -> AvailableNumber:
        """Take the number off the market for the caller's transaction, or NumberUnavailable."""
        ...

    async def release(self, conn: asyncpg.Connection, e164: str) -> None:
        """Give the number back; it is not offered again during quarantine."""
        ...


class PlatformInventory:
    """Numbers the operator imported (`switchboard numbers import`), bound to platform trunks."""

    name = "platform"

    async def search(self, conn: asyncpg.Connection, query: NumberQuery) -> list[AvailableNumber]:
        rows = await repo.search_inventory(conn, query)
        return [
            AvailableNumber(
                e164=r["e164"],
                country=r["country"],
                area_code=r["area_code"],
                capabilities=list(r["capabilities"]),
            )
            for r in rows
        ]

    async def acquire(self, conn: asyncpg.Connection, e164: str) -> AvailableNumber:
        row = await repo.take_from_inventory(conn, e164)
        if row is None:
            raise NumberUnavailable(f"{e164} is not available.", field="e164")
        return AvailableNumber(
            e164=row["e164"],
            country=row["country"],
            area_code=row["area_code"],
            capabilities=list(row["capabilities"]),
        )

    async def release(self, conn: asyncpg.Connection, e164: str) -> None:
        await repo.quarantine_in_inventory(conn, e164, days=QUARANTINE_DAYS)
