"""The media node's directory against the real catalog: callers' contacts (cached, dropped on
contact changes), queues' hold music (their prompt, else the platform's own melody), the lookup
signing secret, and voicemails stored for the tenant alone."""

from __future__ import annotations

import base64
import itertools
import math
import struct
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from cryptography.exceptions import InvalidTag

from media.directory import ContactInfo, VoicemailRecord
from runtime.db import tenant_tx
from switchboard.media_directory import CatalogDirectory, platform_hold_music
from tenancy import media as catalog
from tenancy.models import TenantId
from tenancy.vault import Vault
from tests.conftest import Api
from tests.media import sine_wav
from tests.routing.test_interpreter import ScriptedCall

NUMBER = "+12125550100"


async def _ok(response: Any, status: int = 201) -> Any:
    r = await response
    assert r.status_code == status, r.text
    return r.json() if r.content else None


def _directory(api: Api, **options: Any) -> CatalogDirectory:
    master = api.settings.master_key_bytes
    return CatalogDirectory(api.pool, Vault(master), master, **options)


def _samples(pcm: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(pcm) // 2}h", pcm))


# --- contacts -----------------------------------------------------------------------------------


async def test_a_caller_is_found_in_the_tenants_contacts_by_number(api: Api) -> None:
    a = await api.signup_verified("owner@a.test", "Tenant A")
    b = await api.signup_verified("owner@b.test", "Tenant B")
    ann = await _ok(
        api.client.post(
            "/v1/contacts",
            json={"phone": "+4930123456", "name": "Ann", "vip": True, "attributes": {"tier": "1"}},
            headers=a["auth"],
        )
    )
    await _ok(
        api.client.post(
            "/v1/contacts",
            json={"phone": "+4930123456", "name": "Bea", "blocked": True},
            headers=b["auth"],
        )
    )
    directory = _directory(api)
    try:
        found_a = await directory.contact(uuid.UUID(a["tenant_id"]), "+4930123456")
        found_b = await directory.contact(uuid.UUID(b["tenant_id"]), "+4930123456")
        stranger = await directory.contact(uuid.UUID(a["tenant_id"]), "+4930999999")
        withheld = await directory.contact(uuid.UUID(a["tenant_id"]), "anonymous")
    finally:
        await directory.aclose()
    assert found_a == ContactInfo(
        contact_id=uuid.UUID(ann["id"]), name="Ann", vip=True, blocked=False, fields={"tier": "1"}
    )
    assert found_b is not None
    assert (found_b.name, found_b.vip, found_b.blocked) == ("Bea", False, True)
    assert stranger is None
    assert withheld is None


async def test_a_cached_contact_is_read_again_once_contacts_change(api: Api) -> None:
    owner = await api.signup_verified("owner@a.test")
    tenant = uuid.UUID(owner["tenant_id"])
    contact = await _ok(
        api.client.post("/v1/contacts", json={"phone": "+4930123456"}, headers=owner["auth"])
    )
    directory = _directory(api, ttl=600)
    try:
        before = await directory.contact(tenant, "+4930123456")
        await _ok(
            api.client.patch(
                f"/v1/contacts/{contact['id']}", json={"blocked": True}, headers=owner["auth"]
            ),
            200,
        )
        cached = await directory.contact(tenant, "+4930123456")
        directory.forget_contacts()
        after = await directory.contact(tenant, "+4930123456")
    finally:
        await directory.aclose()
    assert before is not None
    assert cached == before
    assert after is not None
    assert after.blocked


# --- hold music -------------------------------------------------------------------------------


async def test_a_queue_holds_callers_with_its_own_prompt(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    owner = await api.signup_verified("owner@a.test")
    prompt = await _ok(
        api.client.post(
            "/v1/prompts",
            params={"name": "Jazz"},
            content=sine_wav(8000, 1, 1.0, freq=440.0),
            headers={**owner["auth"], "Content-Type": "audio/wav"},
        )
    )
    queue = await _ok(
        api.client.post(
            "/v1/queues",
            json={
                "name": "Sales",
                "strategy": "round_robin",
                "hold_music_prompt_id": prompt["id"],
            },
            headers=owner["auth"],
        )
    )
    plain = await _ok(
        api.client.post(
            "/v1/queues", json={"name": "Support", "strategy": "round_robin"}, headers=owner["auth"]
        )
    )
    stored = bytes(
        await admin_conn.fetchval("select audio from prompts where id = $1", prompt["id"])
    )
    tenant = uuid.UUID(owner["tenant_id"])
    directory = _directory(api)
    try:
        own = await directory.hold_music(tenant, uuid.UUID(queue["id"]))
        platform = await directory.hold_music(tenant, uuid.UUID(plain["id"]))
        unknown = await directory.hold_music(tenant, uuid.uuid4())
    finally:
        await directory.aclose()
    assert own.samples == stored
    assert own.duration_ms == 1000
    assert platform == platform_hold_music()
    assert unknown == platform_hold_music()


async def test_a_queues_new_hold_music_is_played_once_queues_change(api: Api) -> None:
    owner = await api.signup_verified("owner@a.test")
    prompt = await _ok(
        api.client.post(
            "/v1/prompts",
            params={"name": "Jazz"},
            content=sine_wav(8000, 1, 0.5),
            headers={**owner["auth"], "Content-Type": "audio/wav"},
        )
    )
    queue = await _ok(
        api.client.post(
            "/v1/queues", json={"name": "Sales", "strategy": "round_robin"}, headers=owner["auth"]
        )
    )
    tenant, queue_id = uuid.UUID(owner["tenant_id"]), uuid.UUID(queue["id"])
    directory = _directory(api, ttl=600)
    try:
        before = await directory.hold_music(tenant, queue_id)
        await _ok(
            api.client.patch(
                f"/v1/queues/{queue['id']}",
                json={"hold_music_prompt_id": prompt["id"]},
                headers=owner["auth"],
            ),
            200,
        )
        directory.forget_queues()
        after = await directory.hold_music(tenant, queue_id)
    finally:
        await directory.aclose()
    assert before == platform_hold_music()
    assert after.duration_ms == 500


def test_the_platform_hold_music_is_an_audible_melody_that_loops_without_a_click() -> None:
    music = platform_hold_music()
    samples = _samples(music.samples)
    assert music.duration_ms == len(samples) * 1000 // 8000
    assert 5_000 <= music.duration_ms <= 60_000
    rms = math.sqrt(sum(s * s for s in samples) / len(samples))
    assert rms > 800, "hold music must not be silence"
    assert max(abs(s) for s in samples) < 16_000, "and not loud"
    # Seamless loop: the end and the start meet near silence.
    assert max(abs(s) for s in samples[:8] + samples[-8:]) < 200
    # A melody, not one tone: the pitch (zero crossings per 0.4 s note) changes.
    note = 3200
    pitches = {
        round(
            sum(1 for a, b in itertools.pairwise(samples[i : i + note]) if (a < 0) != (b < 0)) / 20
        )
        for i in range(0, len(samples) - note + 1, note)
    }
    assert len(pitches) >= 4


# --- the lookup secret ------------------------------------------------------------------------


async def test_each_tenant_has_its_own_stable_lookup_secret(api: Api) -> None:
    a = await api.signup_verified("owner@a.test", "Tenant A")
    b = await api.signup_verified("owner@b.test", "Tenant B")
    first, second = _directory(api), _directory(api)
    try:
        a1 = await first.lookup_secret(uuid.UUID(a["tenant_id"]))
        a2 = await second.lookup_secret(uuid.UUID(a["tenant_id"]))
        b1 = await first.lookup_secret(uuid.UUID(b["tenant_id"]))
    finally:
        await first.aclose()
        await second.aclose()
    assert len(a1) == 32
    assert a1 == a2
    assert a1 != b1
    r = await api.client.get("/v1/integrations/lookup-secret", headers=a["auth"])
    assert r.status_code == 200, r.text
    assert base64.b64decode(r.json()["secret"].removeprefix("whsec_")) == a1


# --- voicemail ----------------------------------------------------------------------------------


def _record(path: Path, **changes: Any) -> VoicemailRecord:
    values: dict[str, Any] = {
        "voicemail_id": uuid.uuid4(),
        "call_id": uuid.uuid4(),
        "mailbox": "sales",
        "queue_id": None,
        "from_number": "+4930123456",
        "path": path,
        "duration_ms": 3100,
        "recorded_at": datetime(2025, 6, 4, 12, 0, tzinfo=UTC),
        **changes,
    }
    return VoicemailRecord(**values)


async def test_a_stored_voicemail_belongs_to_its_tenant_only_and_is_stored_once(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    a = await api.signup_verified("owner@a.test", "Tenant A")
    b = await api.signup_verified("owner@b.test", "Tenant B")
    record = _record(Path("recordings") / "vm.sbrec")
    directory = _directory(api)
    try:
        await directory.store_voicemail(uuid.UUID(a["tenant_id"]), record)
        await directory.store_voicemail(uuid.UUID(a["tenant_id"]), record)  # a retry
    finally:
        await directory.aclose()
    rows = await admin_conn.fetch("select * from voicemails")
    assert len(rows) == 1
    row = rows[0]
    assert str(row["tenant_id"]) == a["tenant_id"]
    assert row["voicemail_id"] == record.voicemail_id
    assert row["call_id"] == record.call_id
    assert (row["mailbox"], row["queue_id"], row["from_number"]) == ("sales", None, "+4930123456")
    assert row["path"] == str(Path.cwd() / "recordings" / "vm.sbrec")
    assert (row["duration_ms"], row["recorded_at"]) == (3100, record.recorded_at)
    assert row["listened_at"] is None
    r = await api.client.get("/v1/voicemails", headers=a["auth"])
    assert [v["id"] for v in r.json()["data"]] == [str(record.voicemail_id)]
    r = await api.client.get("/v1/voicemails", headers=b["auth"])
    assert r.json()["data"] == []
    # The app role with B's tenant set cannot see A's row either.
    async with tenant_tx(api.pool, TenantId(uuid.UUID(b["tenant_id"]))) as conn:
        assert await conn.fetchval("select count(*) from voicemails") == 0


async def test_a_voicemail_from_a_withheld_number_is_stored_as_anonymous(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    owner = await api.signup_verified("owner@a.test")
    directory = _directory(api)
    try:
        await directory.store_voicemail(
            uuid.UUID(owner["tenant_id"]),
            _record(Path("/tmp/vm.sbrec"), from_number="", mailbox=None, queue_id=uuid.uuid4()),  # noqa: S108
        )
    finally:
        await directory.aclose()
    assert await admin_conn.fetchval("select from_number from voicemails") == "anonymous"


# --- flows get the directory ------------------------------------------------------------------


async def test_a_published_flows_contact_lookup_reads_the_tenants_contacts(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    await admin_conn.execute(
        "insert into platform_trunks (name, host, allowed_sources)"
        " values ('carrier-a', '127.0.0.1', '{127.0.0.1/32}')"
    )
    await admin_conn.execute(
        "insert into number_inventory (e164, country, area_code, trunk)"
        " values ($1, 'US', '212', 'carrier-a')",
        NUMBER,
    )
    owner = await api.signup_verified("owner@a.test")
    auth = owner["auth"]
    await admin_conn.execute(
        "update tenants set plan = 'growth' where tenant_id = $1", owner["tenant_id"]
    )
    c = api.client
    number = await _ok(
        c.post("/v1/numbers", json={"e164": NUMBER}, headers={**auth, "Idempotency-Key": "n1"})
    )
    await _ok(c.post("/v1/contacts", json={"phone": "+4930123456", "blocked": True}, headers=auth))
    document = {
        "start": "who",
        "nodes": {
            "who": {"type": "contact_lookup", "blocked": "reject", "next": "welcome"},
            "reject": {"type": "hangup", "reason": "blocked_caller"},
            "welcome": {"type": "hangup", "reason": "welcome"},
        },
    }
    flow = await _ok(c.post("/v1/flows", json={"name": "Main", "document": document}, headers=auth))
    await _ok(c.post(f"/v1/flows/{flow['id']}/publish", headers=auth))
    await _ok(
        c.put(f"/v1/numbers/{number['id']}/flow", json={"flow_id": flow["id"]}, headers=auth), 200
    )
    directory = _directory(api)
    try:
        route = await directory.inbound_route(NUMBER)
        assert route is not None
        assert route.script is not None
        blocked = ScriptedCall(caller="+4930123456", tenant_id=route.tenant_id)
        stranger = ScriptedCall(caller="+4930999999", tenant_id=route.tenant_id)
        await route.script(blocked)  # type: ignore[arg-type]
        await route.script(stranger)  # type: ignore[arg-type]
    finally:
        await directory.aclose()
    assert blocked.did == [("hangup", "blocked_caller")]
    assert stranger.did == [("hangup", "welcome")]


async def test_the_lookup_secret_is_derived_in_the_tenants_own_transaction(api: Api) -> None:
    owner = await api.signup_verified("owner@a.test")
    tenant = TenantId(uuid.UUID(owner["tenant_id"]))
    vault = Vault(api.settings.master_key_bytes)
    async with tenant_tx(api.pool, tenant) as conn:
        direct = await catalog.lookup_secret(conn, vault, tenant)
    directory = _directory(api)
    try:
        assert await directory.lookup_secret(tenant) == direct
    finally:
        await directory.aclose()
    # The data key is sealed under the operator's master key: another key cannot derive it.
    async with tenant_tx(api.pool, tenant) as conn:
        with pytest.raises(InvalidTag):
            await catalog.lookup_secret(conn, Vault(bytes(32)), tenant)
