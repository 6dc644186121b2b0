"""KV buckets and leases: one holder at a time, handed over when the holder stops renewing."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from bus.connection import Bus
from bus.kv import Lease, Stale, open_bucket


def _name(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(4)}"


async def test_values_round_trip_and_compare_and_set_refuses_a_stale_revision(bus: Bus) -> None:
    bucket = await open_bucket(bus, _name("STATE"))
    assert await bucket.get("t.a") is None
    first = await bucket.put("t.a", b"one")
    entry = await bucket.get("t.a")
    assert entry is not None
    assert entry.value == b"one"
    assert entry.revision == first
    second = await bucket.update("t.a", b"two", first)
    with pytest.raises(Stale):
        await bucket.update("t.a", b"three", first)
    entry = await bucket.get("t.a")
    assert entry is not None
    assert (entry.value, entry.revision) == (b"two", second)
    with pytest.raises(Stale):
        await bucket.create("t.a", b"again")
    await bucket.delete("t.a")
    assert await bucket.get("t.a") is None
    assert await bucket.create("t.a", b"back") > second
    assert await bucket.keys() == ["t.a"]


async def test_a_lease_has_one_holder_and_passes_on_when_released(bus: Bus) -> None:
    bucket = await open_bucket(bus, _name("LEASES"), ttl=30)
    a = Lease(bucket, "p0", "router-a")
    b = Lease(bucket, "p0", "router-b")
    assert await a.acquire()
    assert not await b.acquire()
    assert await a.renew()
    assert not b.held
    await a.release()
    assert not a.held
    assert await b.acquire()
    assert not await a.acquire()


async def test_a_lease_nobody_renews_ages_out_and_the_next_router_takes_it(bus: Bus) -> None:
    bucket = await open_bucket(bus, _name("LEASES"), ttl=1.0)
    dead = Lease(bucket, "p1", "router-dead")
    assert await dead.acquire()
    successor = Lease(bucket, "p1", "router-next")
    assert not await successor.acquire()
    async with asyncio.timeout(10):
        while not await successor.acquire():
            await asyncio.sleep(0.2)
    # The old holder wakes up and finds it has lost the lease.
    assert not await dead.renew()
    assert not dead.held


async def test_a_restarted_holder_with_the_same_name_takes_its_lease_back(bus: Bus) -> None:
    bucket = await open_bucket(bus, _name("LEASES"), ttl=30)
    assert await Lease(bucket, "p2", "router-a").acquire()
    again = Lease(bucket, "p2", "router-a")
    assert await again.acquire()
    assert await again.renew()
