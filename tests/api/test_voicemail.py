"""Voicemail over the API: list (by mailbox, queue, listened; cursor pages), play the encrypted
recording as WAV, mark listened, delete with its audio; owners, admins and supervisors only; bad
input refused with problem+json and nothing changed; another tenant sees nothing. And the lookup
signing secret, for owners and admins."""

from __future__ import annotations

import base64
import io
import struct
import uuid
import wave
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from media.directory import VoicemailRecord
from media.node import recording_aad
from media.recorder import Recorder
from runtime.db import tenant_tx
from switchboard.media_directory import CatalogDirectory
from tenancy import media as catalog
from tenancy.models import TenantId
from tenancy.vault import Vault
from tests.conftest import Api
from tests.media import sine_samples

QUEUE = uuid.UUID("0190a000-0000-7000-8000-0000000000aa")


def _pcm(seconds: float, freq: float) -> bytes:
    samples = sine_samples(8000, int(8000 * seconds), freq=freq, amp=0.3)
    return struct.pack(f"<{len(samples)}h", *samples)


async def _leave(
    api: Api,
    tenant_id: str,
    folder: Path,
    *,
    mailbox: str | None = "sales",
    queue_id: uuid.UUID | None = None,
    seconds: float = 1.5,
    freq: float = 440.0,
    minutes_ago: int = 0,
) -> tuple[uuid.UUID, Path, bytes]:
    """A message as the media node leaves it: the recording sealed with the tenant's recording
    key, then stored through the node's directory."""
    tenant = TenantId(uuid.UUID(tenant_id))
    vault = Vault(api.settings.master_key_bytes)
    async with tenant_tx(api.pool, tenant) as conn:
        key = await catalog.recording_key(conn, vault, tenant)
    voicemail_id = uuid.uuid4()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{voicemail_id}.sbrec"
    pcm = _pcm(seconds, freq)
    recorder = Recorder(path, key, aad=recording_aad(tenant, voicemail_id))
    recorder.add(0, pcm)
    await recorder.close()
    directory = CatalogDirectory(api.pool, vault, api.settings.master_key_bytes)
    try:
        await directory.store_voicemail(
            tenant,
            VoicemailRecord(
                voicemail_id=voicemail_id,
                call_id=uuid.uuid4(),
                mailbox=mailbox,
                queue_id=queue_id,
                from_number="+4930123456",
                path=path,
                duration_ms=int(seconds * 1000),
                recorded_at=datetime.now(UTC) - timedelta(minutes=minutes_ago),
            ),
        )
    finally:
        await directory.aclose()
    return voicemail_id, path, pcm


def _problem(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    assert body["status"] == status
    return body


async def _snapshot(conn: asyncpg.Connection) -> dict[str, Any]:
    return {
        "voicemails": [dict(r) for r in await conn.fetch("select * from voicemails order by 2")],
        "events": await conn.fetchval(
            "select count(*) from outbox where subject like '%.voicemail.%'"
        ),
    }


# --- the life of a message ----------------------------------------------------------------------


async def test_a_voicemail_is_listed_played_marked_listened_and_deleted_with_its_audio(
    api: Api, admin_conn: asyncpg.Connection, tmp_path: Path
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    c, auth = api.client, owner["auth"]
    voicemail_id, path, pcm = await _leave(api, owner["tenant_id"], tmp_path)

    r = await c.get("/v1/voicemails", headers=auth)
    assert r.status_code == 200, r.text
    page = r.json()
    assert page["has_more"] is False
    [listed] = page["data"]
    assert listed["id"] == str(voicemail_id)
    assert listed["mailbox"] == "sales"
    assert listed["queue_id"] is None
    assert listed["from_number"] == "+4930123456"
    assert listed["duration_ms"] == 1500
    assert listed["listened_at"] is None
    assert "path" not in listed
    r = await c.get(f"/v1/voicemails/{voicemail_id}", headers=auth)
    assert r.json() == listed

    # Played: the WAV holds exactly what the caller said; the file on disk stays sealed.
    r = await c.get(f"/v1/voicemails/{voicemail_id}/audio", headers=auth)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/wav"
    assert r.headers["cache-control"] == "private, no-store"
    with wave.open(io.BytesIO(r.content)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
        assert w.readframes(w.getnframes()) == pcm
    assert pcm[:4000] not in path.read_bytes()

    r = await c.post(f"/v1/voicemails/{voicemail_id}/listened", headers=auth)
    assert r.status_code == 200, r.text
    listened_at = r.json()["listened_at"]
    assert listened_at is not None
    r = await c.post(f"/v1/voicemails/{voicemail_id}/listened", headers=auth)
    assert r.json()["listened_at"] == listened_at  # the first time counts
    r = await c.get("/v1/voicemails", params={"listened": "false"}, headers=auth)
    assert r.json()["data"] == []
    r = await c.get("/v1/voicemails", params={"listened": "true"}, headers=auth)
    assert [v["id"] for v in r.json()["data"]] == [str(voicemail_id)]

    r = await c.delete(f"/v1/voicemails/{voicemail_id}", headers=auth)
    assert r.status_code == 204, r.text
    assert not path.exists()
    _problem(await c.get(f"/v1/voicemails/{voicemail_id}", headers=auth), 404)
    _problem(await c.get(f"/v1/voicemails/{voicemail_id}/audio", headers=auth), 404)
    _problem(await c.delete(f"/v1/voicemails/{voicemail_id}", headers=auth), 404)
    assert await admin_conn.fetchval("select count(*) from voicemails") == 0

    subjects = [
        r["subject"]
        for r in await admin_conn.fetch(
            "select subject from outbox where subject like '%.voicemail.%' order by created_at"
        )
    ]
    assert subjects == [
        f"tenant.{owner['tenant_id']}.voicemail.{voicemail_id}.listened",
        f"tenant.{owner['tenant_id']}.voicemail.{voicemail_id}.deleted",
    ]
    actions = {
        r["action"]
        for r in await admin_conn.fetch(
            "select action from audit_log where target_id = $1", str(voicemail_id)
        )
    }
    assert actions == {"voicemail.listened", "voicemail.deleted"}


async def test_voicemails_are_filtered_by_mailbox_and_queue_and_paged_with_a_cursor(
    api: Api, tmp_path: Path
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    c, auth = api.client, owner["auth"]
    sales = [(await _leave(api, owner["tenant_id"], tmp_path))[0] for _ in range(3)]
    queued = [
        (await _leave(api, owner["tenant_id"], tmp_path, mailbox=None, queue_id=QUEUE))[0]
        for _ in range(2)
    ]

    async def ids(**params: Any) -> tuple[list[str], bool]:
        r = await c.get("/v1/voicemails", params=params, headers=auth)
        assert r.status_code == 200, r.text
        return [v["id"] for v in r.json()["data"]], r.json()["has_more"]

    everything, _ = await ids(limit=100)
    assert sorted(everything) == sorted(str(v) for v in sales + queued)
    assert set((await ids(mailbox="sales"))[0]) == {str(v) for v in sales}
    assert set((await ids(queue_id=str(QUEUE)))[0]) == {str(v) for v in queued}
    assert (await ids(mailbox="support"))[0] == []
    first, more = await ids(limit=2)
    assert (first, more) == (everything[:2], True)
    second, more = await ids(limit=2, starting_after=first[-1])
    assert (second, more) == (everything[2:4], True)
    third, more = await ids(limit=2, starting_after=second[-1])
    assert (third, more) == (everything[4:], False)


# --- bad input and errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, None),
        ({"limit": "101"}, None),
        ({"starting_after": "not-an-id"}, None),
        ({"queue_id": "not-a-uuid"}, "queue_id"),
        ({"mailbox": "m" * 65}, "mailbox"),
        ({"mailbox": ""}, "mailbox"),
        ({"listened": "maybe"}, "listened"),
    ],
    ids=[
        "limit-zero",
        "limit-too-big",
        "bad-cursor",
        "bad-queue",
        "long-mailbox",
        "empty-mailbox",
        "bad-bool",
    ],
)
async def test_a_bad_list_query_is_refused_with_a_problem(
    api: Api, params: dict[str, str], field: str | None
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    r = await api.client.get("/v1/voicemails", params=params, headers=owner["auth"])
    body = _problem(r, 422)
    if field is not None:
        assert field in [e["field"] for e in body.get("errors", [])], body


async def test_an_unknown_or_malformed_voicemail_id_is_not_found_and_nothing_changes(
    api: Api, admin_conn: asyncpg.Connection, tmp_path: Path
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    c, auth = api.client, owner["auth"]
    await _leave(api, owner["tenant_id"], tmp_path)
    before = await _snapshot(admin_conn)
    unknown = uuid.uuid4()
    for method, path in [
        ("GET", f"/v1/voicemails/{unknown}"),
        ("GET", f"/v1/voicemails/{unknown}/audio"),
        ("POST", f"/v1/voicemails/{unknown}/listened"),
        ("DELETE", f"/v1/voicemails/{unknown}"),
        ("GET", "/v1/voicemails/not-an-id"),
        ("DELETE", "/v1/voicemails/not-an-id"),
    ]:
        _problem(await c.request(method, path, headers=auth), 404)
    _problem(await c.get("/v1/voicemails"), 401)
    assert await _snapshot(admin_conn) == before


async def test_a_recording_that_is_gone_or_altered_is_reported_not_played(
    api: Api, tmp_path: Path
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    c, auth = api.client, owner["auth"]
    gone_id, gone_path, _ = await _leave(api, owner["tenant_id"], tmp_path)
    gone_path.unlink()
    body = _problem(await c.get(f"/v1/voicemails/{gone_id}/audio", headers=auth), 410)
    assert body["code"] == "recording-gone"

    altered_id, altered_path, _ = await _leave(api, owner["tenant_id"], tmp_path)
    data = bytearray(altered_path.read_bytes())
    data[60] ^= 0x01
    altered_path.write_bytes(bytes(data))
    body = _problem(await c.get(f"/v1/voicemails/{altered_id}/audio", headers=auth), 500)
    assert body["code"] == "recording-unreadable"

    # Another message's file put in place of this one's does not decrypt: the AAD names the id.
    swapped_id, swapped_path, _ = await _leave(api, owner["tenant_id"], tmp_path)
    _, other_path, _ = await _leave(api, owner["tenant_id"], tmp_path, freq=880.0)
    swapped_path.write_bytes(other_path.read_bytes())
    body = _problem(await c.get(f"/v1/voicemails/{swapped_id}/audio", headers=auth), 500)
    assert body["code"] == "recording-unreadable"


# --- who may ------------------------------------------------------------------------------------


async def test_supervisors_and_admins_handle_voicemail_but_agents_finance_and_developers_cannot(
    api: Api, admin_conn: asyncpg.Connection, tmp_path: Path
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    c = api.client
    voicemail_id, path, _ = await _leave(api, owner["tenant_id"], tmp_path)
    refused = [
        await api.member(owner, "agent@acme.test", "agent"),
        await api.member(owner, "finance@acme.test", "finance"),
        await api.member(owner, "dev@acme.test", "developer"),
    ]
    r = await c.post(
        "/v1/api-keys",
        json={"name": "reader", "scopes": ["queues:read", "queues:write", "contacts:read"]},
        headers=owner["auth"],
    )
    refused.append({"Authorization": f"Bearer {r.json()['secret']}"})
    before = await _snapshot(admin_conn)
    for auth in refused:
        for method, url in [
            ("GET", "/v1/voicemails"),
            ("GET", f"/v1/voicemails/{voicemail_id}"),
            ("GET", f"/v1/voicemails/{voicemail_id}/audio"),
            ("POST", f"/v1/voicemails/{voicemail_id}/listened"),
            ("DELETE", f"/v1/voicemails/{voicemail_id}"),
        ]:
            _problem(await c.request(method, url, headers=auth), 403)
    assert await _snapshot(admin_conn) == before
    assert path.exists()

    supervisor = await api.member(owner, "sup@acme.test", "supervisor")
    admin = await api.member(owner, "admin@acme.test", "admin")
    r = await c.get(f"/v1/voicemails/{voicemail_id}/audio", headers=supervisor)
    assert r.status_code == 200, r.text
    r = await c.post(f"/v1/voicemails/{voicemail_id}/listened", headers=supervisor)
    assert r.status_code == 200, r.text
    r = await c.delete(f"/v1/voicemails/{voicemail_id}", headers=admin)
    assert r.status_code == 204, r.text
    assert not path.exists()


async def test_another_tenant_gets_404_for_a_voicemail_and_changes_nothing(
    api: Api, admin_conn: asyncpg.Connection, tmp_path: Path
) -> None:
    a = await api.signup_verified("alice@a.test", "Tenant A")
    b = await api.signup_verified("bob@b.test", "Tenant B")
    c = api.client
    voicemail_id, path, _ = await _leave(api, a["tenant_id"], tmp_path / "a")
    await _leave(api, b["tenant_id"], tmp_path / "b", mailbox="sales")
    r = await c.post(
        "/v1/api-keys",
        json={"name": "b-ops", "scopes": ["voicemails:read", "voicemails:write"]},
        headers=b["auth"],
    )
    b_key = {"Authorization": f"Bearer {r.json()['secret']}"}
    before = await _snapshot(admin_conn)
    file_before = path.read_bytes()
    for creds in (b["auth"], b_key):
        for method, url in [
            ("GET", f"/v1/voicemails/{voicemail_id}"),
            ("GET", f"/v1/voicemails/{voicemail_id}/audio"),
            ("POST", f"/v1/voicemails/{voicemail_id}/listened"),
            ("DELETE", f"/v1/voicemails/{voicemail_id}"),
        ]:
            _problem(await c.request(method, url, headers=creds), 404)
        r = await c.get("/v1/voicemails", params={"mailbox": "sales"}, headers=creds)
        assert str(voicemail_id) not in {v["id"] for v in r.json()["data"]}
        assert len(r.json()["data"]) == 1  # B's own message only
    assert await _snapshot(admin_conn) == before
    assert path.read_bytes() == file_before
    r = await c.get(f"/v1/voicemails/{voicemail_id}/audio", headers=a["auth"])
    assert r.status_code == 200


# --- the lookup signing secret ------------------------------------------------------------------


async def test_owners_and_admins_read_the_lookup_secret_and_every_read_is_audited(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    c = api.client
    r = await c.get("/v1/integrations/lookup-secret", headers=owner["auth"])
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    secret = r.json()["secret"]
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    admin = await api.member(owner, "admin@acme.test", "admin")
    r = await c.get("/v1/integrations/lookup-secret", headers=admin)
    assert r.json()["secret"] == secret
    supervisor = await api.member(owner, "sup@acme.test", "supervisor")
    _problem(await c.get("/v1/integrations/lookup-secret", headers=supervisor), 403)
    other = await api.signup_verified("owner@other.test", "Other")
    r = await c.get("/v1/integrations/lookup-secret", headers=other["auth"])
    assert r.json()["secret"] != secret
    reads = await admin_conn.fetchval(
        "select count(*) from audit_log where tenant_id = $1"
        " and action = 'integration.lookup_secret_revealed'",
        owner["tenant_id"],
    )
    assert reads == 2
