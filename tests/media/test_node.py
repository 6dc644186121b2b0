"""The media node end to end, with SIPp on loopback as the carrier and as the far end.

A tenant provisions a number, prompts and a flow through the API; a media node serves it from
the catalog; SIPp places the calls. Call events are read back from NATS.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import msgspec
import pytest

from bus.requests import send_command
from media.g711 import alaw_encode
from media.node import recording_aad
from media.recorder import RecordingError, read_recording
from media.rtp import RtpPacket
from media.sip.digest import parse_credentials
from runtime.embedded import free_port
from switchboard.media_role import RunningNode, media_node
from tests.conftest import Api
from tests.media.capture import UdpCapture, can_capture
from tests.media.sipp import run_sipp, scenario, start_sipp_server

NUMBER = "+12125550101"
OTHER_NUMBER = "+12125550102"
_rtp_base = iter(range(30000, 60000, 400))


@dataclass
class Tenant:
    id: str
    auth: dict[str, str]
    number_id: str
    greeting: bytes
    """The greeting prompt's stored PCM (8 kHz s16le)."""


@dataclass
class CallEvents:
    by_type: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, event: dict[str, Any]) -> None:
        self.by_type.setdefault(event["type"], []).append(event)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return self.by_type.get(kind, [])

    async def wait(self, kind: str, count: int, timeout: float = 20) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout):
            while len(self.of(kind)) < count:
                await asyncio.sleep(0.05)
        return self.of(kind)


async def _ok(response: Any, status: int = 201) -> Any:
    r = await response
    assert r.status_code == status, r.text
    return r.json() if r.content else None


async def provision(api: Api, admin_conn: asyncpg.Connection) -> Tenant:
    """A tenant on the growth plan with a number on platform trunk carrier-a (127.0.0.1), a
    greeting that asks for a key, and a goodbye long enough that the caller hangs up first."""
    await admin_conn.execute(
        "insert into platform_trunks (name, host, allowed_sources)"
        " values ('carrier-a', '127.0.0.1', '{127.0.0.1/32}')"
    )
    await admin_conn.execute(
        "insert into number_inventory (e164, country, area_code, trunk) values"
        " ($1, 'US', '212', 'carrier-a'), ($2, 'US', '212', 'carrier-a')",
        NUMBER,
        OTHER_NUMBER,
    )
    owner = await api.signup_verified("owner@acme.test", "Acme")
    auth = owner["auth"]
    await admin_conn.execute(
        "update tenants set plan = 'growth' where tenant_id = $1", owner["tenant_id"]
    )
    c = api.client
    number = await _ok(
        c.post("/v1/numbers", json={"e164": NUMBER}, headers={**auth, "Idempotency-Key": "n1"})
    )
    greeting = await _ok(
        c.post(
            "/v1/prompts",
            json={"name": "Greeting", "text": "Welcome to Acme. For sales, press one."},
            headers=auth,
        )
    )
    goodbye = await _ok(
        c.post(
            "/v1/prompts",
            json={
                "name": "Goodbye",
                "text": "Thank you. Every one of our agents is busy helping other callers, "
                "so please stay on the line and we will be with you as soon as we can.",
            },
            headers=auth,
        )
    )
    document = {
        "start": "greet",
        "nodes": {
            "greet": {
                "type": "gather",
                "prompt_id": greeting["id"],
                "max_digits": 1,
                "terminator": None,
                "timeout_seconds": 20,
                "variable": "choice",
                "next": "thanks",
            },
            "thanks": {"type": "play", "prompt_id": goodbye["id"]},
        },
    }
    flow = await _ok(c.post("/v1/flows", json={"name": "Main", "document": document}, headers=auth))
    await _ok(c.post(f"/v1/flows/{flow['id']}/publish", headers=auth))
    await _ok(
        c.put(f"/v1/numbers/{number['id']}/flow", json={"flow_id": flow["id"]}, headers=auth), 200
    )
    audio = await admin_conn.fetchval("select audio from prompts where id = $1", greeting["id"])
    return Tenant(owner["tenant_id"], auth, number["id"], bytes(audio))


@contextlib.asynccontextmanager
async def running_node(
    api: Api, *, settings_overrides: dict[str, Any] | None = None, **overrides: Any
) -> AsyncIterator[RunningNode]:
    low = next(_rtp_base)
    settings = msgspec.structs.replace(
        api.settings,
        sip_port=0,
        rtp_port_min=low,
        rtp_port_max=low + 399,
        **(settings_overrides or {}),
    )
    values: dict[str, Any] = {"node_id": "node-test", "t1": 0.1, **overrides}
    async with media_node(settings, api.pool, api.resources.bus, **values) as running:
        yield running


async def listen_calls(api: Api, tenant_id: str) -> tuple[CallEvents, Any]:
    events = CallEvents()

    async def on_event(msg: Any) -> None:
        events.add(msgspec.json.decode(msg.data))

    sub = await api.resources.bus.nc.subscribe(f"tenant.{tenant_id}.call.>", cb=on_event)
    return events, sub


async def settled(running: RunningNode, timeout: float = 10) -> None:
    """Wait until the node holds no call, dialog or RTP port."""
    node = running.node
    async with asyncio.timeout(timeout):
        while node.calls or node.ports.in_use or (node.ua is not None and node.ua.calls()):
            await asyncio.sleep(0.05)


def _rtp_audio(datagrams: list[bytes], payload_type: int) -> bytes:
    audio = bytearray()
    for data in datagrams:
        try:
            packet = RtpPacket.parse(data)
        except ValueError:
            continue
        if packet.payload_type == payload_type:
            audio += packet.payload
    return bytes(audio)


async def test_twenty_carrier_calls_hear_the_prompt_press_one_and_leave_nothing_behind(
    api: Api, admin_conn: asyncpg.Connection, tmp_path: Path
) -> None:
    tenant = await provision(api, admin_conn)
    events, sub = await listen_calls(api, tenant.id)
    media_port = free_port()
    capture = UdpCapture(media_port) if can_capture() else None
    if capture is None and os.geteuid() == 0:
        pytest.fail("running as root but cannot open an AF_PACKET socket")
    async with running_node(api) as running:
        if capture is not None:
            capture.start()
        try:
            result = await run_sipp(
                f"127.0.0.1:{running.node.sip_ports['udp']}",
                scenario("inbound_prompt_dtmf.xml", tmp_path),
                tmp_path,
                service=NUMBER.lstrip("+"),
                calls=20,
                rate=5,
                limit=20,
                media_port=media_port,
            )
        finally:
            if capture is not None:
                capture.stop()
        assert result.ok, result.explain()
        ended = await events.wait("call.ended", 20)
        await settled(running)
    await sub.unsubscribe()

    assert len(events.of("call.started")) == 20
    assert len(events.of("call.answered")) == 20
    assert {e["codec"] for e in events.of("call.answered")} == {"PCMA"}
    digits = events.of("call.dtmf")
    assert Counter(e["call_id"] for e in digits) == {e["call_id"]: 1 for e in ended}
    assert {e["digit"] for e in digits} == {"1"}
    assert Counter(e["cause"] for e in ended) == {"remote_bye": 20}
    assert all(e["talk_ms"] > 8000 for e in ended), [e["talk_ms"] for e in ended]
    # g711a.pcap is 236 packets of the caller's voice, then 10 of RFC 4733 events.
    assert all(e["packets_received"] >= 240 for e in ended), [e["packets_received"] for e in ended]
    assert all(e["packets_lost"] == 0 for e in ended), [e["packets_lost"] for e in ended]

    if capture is not None:
        # What each call's RTP carried to SIPp starts with the greeting, byte for byte.
        expected = alaw_encode(tenant.greeting)
        streams = [_rtp_audio(d, 8) for d in capture.by_source.values()]
        streams = [s for s in streams if s]
        assert len(streams) == 20
        for audio in streams:
            assert len(audio) >= len(expected)
            assert audio[: len(expected)] == expected
            assert len(set(expected[:8000])) > 20  # the greeting is speech, not silence


async def test_a_retransmitted_invite_while_ringing_makes_one_call(
    api: Api, admin_conn: asyncpg.Connection, tmp_path: Path
) -> None:
    tenant = await provision(api, admin_conn)
    events, sub = await listen_calls(api, tenant.id)
    async with running_node(api, ring_seconds=1.0) as running:
        result = await run_sipp(
            f"127.0.0.1:{running.node.sip_ports['udp']}",
            scenario("retransmitted_invite.xml", tmp_path),
            tmp_path,
            service=NUMBER.lstrip("+"),
        )
        assert result.ok, result.explain()
        await events.wait("call.ended", 1)
        await settled(running)
    await sub.unsubscribe()
    assert len(events.of("call.started")) == 1
    assert len(events.of("call.answered")) == 1


async def test_cancel_before_answer_gets_487_and_never_a_later_200(
    api: Api, admin_conn: asyncpg.Connection, tmp_path: Path
) -> None:
    tenant = await provision(api, admin_conn)
    events, sub = await listen_calls(api, tenant.id)
    async with running_node(api, ring_seconds=2.0) as running:
        result = await run_sipp(
            f"127.0.0.1:{running.node.sip_ports['udp']}",
            scenario("cancel_before_answer.xml", tmp_path),
            tmp_path,
            service=NUMBER.lstrip("+"),
        )
        assert result.ok, result.explain()
        ended = await events.wait("call.ended", 1)
        await settled(running)
    await sub.unsubscribe()
    assert result.messages.count("SIP/2.0 200 OK") == 1  # the CANCEL's, and only that
    assert events.of("call.answered") == []
    assert ended[0]["cause"] == "cancelled"
    assert ended[0]["talk_ms"] == 0


async def test_reinvite_puts_the_call_on_hold_and_resumes_it(
    api: Api, admin_conn: asyncpg.Connection, tmp_path: Path
) -> None:
    tenant = await provision(api, admin_conn)
    events, sub = await listen_calls(api, tenant.id)
    async with running_node(api) as running:
        result = await run_sipp(
            f"127.0.0.1:{running.node.sip_ports['udp']}",
            scenario("hold_resume.xml", tmp_path),
            tmp_path,
            service=NUMBER.lstrip("+"),
        )
        assert result.ok, result.explain()
        await events.wait("call.ended", 1)
        await settled(running)
    await sub.unsubscribe()
    assert [e["by"] for e in events.of("call.held")] == ["caller"]
    assert [e["by"] for e in events.of("call.resumed")] == ["caller"]


@pytest.mark.parametrize(
    ("who", "local_ip", "dialed", "status"),
    [
        ("an unknown number", "127.0.0.1", "12125550199", "404"),
        ("a number the tenant has not bought", "127.0.0.1", OTHER_NUMBER.lstrip("+"), "404"),
        ("an unlisted source", "127.0.0.2", NUMBER.lstrip("+"), "401"),
        ("an unlisted source dialing nobody", "127.0.0.2", "12125550199", "401"),
    ],
)
async def test_calls_that_must_not_reach_a_tenant_are_refused(
    api: Api,
    admin_conn: asyncpg.Connection,
    tmp_path: Path,
    who: str,
    local_ip: str,
    dialed: str,
    status: str,
) -> None:
    tenant = await provision(api, admin_conn)
    events, sub = await listen_calls(api, tenant.id)
    async with running_node(api) as running:
        result = await run_sipp(
            f"127.0.0.1:{running.node.sip_ports['udp']}",
            scenario("expect_status.xml", tmp_path, STATUS=status),
            tmp_path,
            service=dialed,
            local_ip=local_ip,
        )
        assert result.ok, f"{who}: {result.explain()}"
        await settled(running)
        assert running.node.heartbeat()["rejected"] == {status: 1}, who
    await asyncio.sleep(0.2)
    await sub.unsubscribe()
    assert events.by_type == {}, who


async def test_callers_of_a_suspended_tenant_hear_a_notice_and_no_flow_runs(
    api: Api, admin_conn: asyncpg.Connection, tmp_path: Path
) -> None:
    tenant = await provision(api, admin_conn)
    await admin_conn.execute(
        "update tenants set status = 'suspended' where tenant_id = $1", tenant.id
    )
    events, sub = await listen_calls(api, tenant.id)
    async with running_node(api) as running:
        result = await run_sipp(
            f"127.0.0.1:{running.node.sip_ports['udp']}",
            scenario("queue_caller.xml", tmp_path, MEDIA="", CALLER="12125550111"),
            tmp_path,
            service=NUMBER.lstrip("+"),
            timeout=45,
        )
        assert result.ok, result.explain()
        ended = await events.wait("call.ended", 1)
        await settled(running)
    await sub.unsubscribe()
    steps = events.of("call.flow_step")
    assert [(s["node"], s["node_type"]) for s in steps] == [("suspended", "notice")]
    assert (ended[0]["cause"], ended[0]["reason"]) == ("local_hangup", "tenant_suspended")
    # The notice is a few seconds of speech, played in full before the node hangs up.
    assert ended[0]["talk_ms"] > 3000, ended[0]


async def test_draining_node_answers_503_with_retry_after_and_keeps_its_calls(
    api: Api, admin_conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await provision(api, admin_conn)
    async with running_node(api) as running:
        reply = await send_command(api.resources.bus, "media.node-test.drain", b"{}")
        assert msgspec.json.decode(reply) == {"ok": True, "draining": True}
        result = await run_sipp(
            f"127.0.0.1:{running.node.sip_ports['udp']}",
            scenario("expect_status.xml", tmp_path, STATUS="503"),
            tmp_path,
            service=NUMBER.lstrip("+"),
        )
        assert result.ok, result.explain()
        assert "Retry-After: 60" in result.messages


async def test_outbound_call_answers_a_retransmitted_407_once_and_is_answered(
    api: Api, admin_conn: asyncpg.Connection, tmp_path: Path
) -> None:
    tenant = await provision(api, admin_conn)
    far_port, far_media = free_port(), free_port()
    trunk = await _ok(
        api.client.post(
            "/v1/trunks",
            json={
                "name": "Carrier B",
                "host": "127.0.0.1",
                "port": far_port,
                "inbound": {"allowed_sources": ["127.0.0.1"]},
                "outbound": {"username": "acme-out", "password": "Trunk-Secret-1"},
                "codecs": ["PCMU"],
            },
            headers=tenant.auth,
        )
    )
    events, sub = await listen_calls(api, tenant.id)
    far_end = await start_sipp_server(
        scenario("uas_proxy_auth.xml", tmp_path), tmp_path, port=far_port, media_port=far_media
    )
    try:
        await asyncio.sleep(0.5)
        async with running_node(api, trunk_keepalive_seconds=0) as running:
            bus = api.resources.bus
            reply = msgspec.json.decode(
                await send_command(
                    bus,
                    "media.node-test.originate",
                    msgspec.json.encode(
                        {
                            "tenant_id": tenant.id,
                            "to": "+14155552671",
                            "caller_id": NUMBER,
                            "trunk_id": trunk["id"],
                            "max_concurrent_calls": 10,
                        }
                    ),
                )
            )
            assert reply["ok"], reply
            answered = await events.wait("call.answered", 1)
            assert answered[0]["call_id"] == reply["call_id"]
            await send_command(
                bus,
                "media.node-test.hangup",
                msgspec.json.encode({"tenant_id": tenant.id, "call_id": reply["call_id"]}),
            )
            ended = await events.wait("call.ended", 1)
            await settled(running)
        out, err = await asyncio.wait_for(far_end.communicate(), 30)
    finally:
        if far_end.returncode is None:
            far_end.kill()
            await far_end.wait()
    await sub.unsubscribe()
    messages = (tmp_path / "uas_proxy_auth.messages").read_text()
    assert far_end.returncode == 0, (out, err, messages)
    # SIPp may log one received message twice (once more when it was unexpected): count the
    # distinct INVITEs by branch and CSeq.
    assert len(_received_invites(messages)) == 2, messages  # the first, one authenticated retry
    authorization = next(
        line.split(":", 1)[1].strip()
        for line in messages.splitlines()
        if line.startswith("Proxy-Authorization:")
    )
    assert _digest_is_right(authorization, "INVITE", "acme-out", "Trunk-Secret-1")
    assert ended[0]["cause"] == "local_hangup"
    assert events.of("call.started")[0]["direction"] == "outbound"


async def test_outbound_policy_and_caller_id_are_checked_before_any_invite(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    tenant = await provision(api, admin_conn)
    async with running_node(api) as running:
        bus = api.resources.bus

        async def originate(**fields: Any) -> dict[str, Any]:
            body = {"tenant_id": tenant.id, "to": "+14155552671", "caller_id": NUMBER, **fields}
            reply = await send_command(bus, "media.node-test.originate", msgspec.json.encode(body))
            return dict(msgspec.json.decode(reply))

        assert (await originate(caller_id=OTHER_NUMBER))["error"] == "caller_id_not_owned"
        assert (await originate(to="+442079460000"))["error"] == "international_not_allowed"
        assert (await originate(to="+19005551234"))["error"] == "premium_not_allowed"
        assert (await originate(to="12345"))["error"] == "invalid_destination"
        assert (await originate(surprise=1))["error"] == "invalid_command"
        assert running.node.calls == {}


def _received_invites(messages: str) -> set[tuple[str, str]]:
    invites = set()
    for block in messages.split("-" * 47):
        body = [line.strip() for line in block.splitlines() if line.strip()]
        start = next((i for i, line in enumerate(body) if "received" in line), None)
        if start is None or start + 1 >= len(body) or not body[start + 1].startswith("INVITE "):
            continue
        headers = dict(line.split(":", 1) for line in body[start + 2 :] if ":" in line)
        invites.add((headers["Via"].strip(), headers["CSeq"].strip()))
    return invites


def _digest_is_right(header: str, method: str, username: str, password: str) -> bool:
    """RFC 2617/7616 MD5 with qop=auth, computed here independently of media.sip.digest."""
    c = parse_credentials(header)
    assert c.realm == "carrier.test"
    assert c.qop == "auth"

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()  # noqa: S324 - the protocol's own hash

    ha1 = md5(f"{username}:{c.realm}:{password}")
    ha2 = md5(f"{method}:{c.uri}")
    expected = md5(f"{ha1}:{c.nonce}:{c.nc:08x}:{c.cnonce}:{c.qop}:{ha2}")
    return c.username == username and c.response == expected


async def test_node_registers_to_a_trunk_that_wants_it_and_unregisters_on_shutdown(
    api: Api, admin_conn: asyncpg.Connection, tmp_path: Path
) -> None:
    tenant = await provision(api, admin_conn)
    registrar_port = free_port()
    await _ok(
        api.client.post(
            "/v1/trunks",
            json={
                "name": "Registering carrier",
                "host": "127.0.0.1",
                "port": registrar_port,
                "inbound": {"allowed_sources": ["127.0.0.1"]},
                "outbound": {"username": "acme-reg", "password": "Reg-Secret-9"},
                "register": True,
                "register_expires": 60,
            },
            headers=tenant.auth,
        )
    )
    registrar = await start_sipp_server(
        scenario("registrar.xml", tmp_path), tmp_path, port=registrar_port, media_port=free_port()
    )
    try:
        await asyncio.sleep(0.5)
        async with running_node(api, trunk_keepalive_seconds=0) as running:
            node = running.node
            async with asyncio.timeout(15):
                while not any(r.registered for r in node.registrations.values()):
                    await asyncio.sleep(0.05)
            assert list(node.heartbeat()["registrations"].values()) == [True]
        out, err = await asyncio.wait_for(registrar.communicate(), 30)
    finally:
        if registrar.returncode is None:
            registrar.kill()
            await registrar.wait()
    messages = (tmp_path / "registrar.messages").read_text()
    assert registrar.returncode == 0, (out, err, messages)
    authorization = next(
        line.split(":", 1)[1].strip()
        for line in messages.splitlines()
        if line.startswith("Authorization:")
    )
    assert _digest_is_right(authorization, "REGISTER", "acme-reg", "Reg-Secret-9")


async def test_two_calls_are_bridged_and_one_is_recorded_sealed_for_its_tenant(
    api: Api, admin_conn: asyncpg.Connection, tmp_path: Path
) -> None:
    tenant = await provision(api, admin_conn)
    far_port = free_port()
    trunk = await _ok(
        api.client.post(
            "/v1/trunks",
            json={
                "name": "Carrier C",
                "host": "127.0.0.1",
                "port": far_port,
                "inbound": {"allowed_sources": ["127.0.0.1"]},
                "codecs": ["PCMA"],
            },
            headers=tenant.auth,
        )
    )
    events, sub = await listen_calls(api, tenant.id)
    far_end = await start_sipp_server(
        scenario("uas_answer_play.xml", tmp_path),
        tmp_path,
        port=far_port,
        media_port=free_port(),
        calls=2,
    )
    bus = api.resources.bus

    async def command(verb: str, **body: Any) -> dict[str, Any]:
        reply = await send_command(
            bus, f"media.node-test.{verb}", msgspec.json.encode({"tenant_id": tenant.id, **body})
        )
        decoded = dict(msgspec.json.decode(reply))
        assert decoded["ok"], decoded
        return decoded

    try:
        await asyncio.sleep(0.5)
        async with running_node(api, trunk_keepalive_seconds=0) as running:
            legs = [
                (
                    await command(
                        "originate",
                        to=to,
                        caller_id=NUMBER,
                        trunk_id=trunk["id"],
                        max_concurrent_calls=10,
                    )
                )["call_id"]
                for to in ("+14155552671", "+14155552672")
            ]
            await events.wait("call.answered", 2)
            await command("bridge", call_id=legs[0], other_call_id=legs[1])
            started = await command("record", call_id=legs[0])
            await asyncio.sleep(3)
            stopped = await command("record", call_id=legs[0], start=False)
            forwarded = {
                leg: running.node.calls[UUID(leg)].stream.stats().packets_sent for leg in legs
            }
            for leg in legs:
                await command("hangup", call_id=leg)
            await events.wait("call.ended", 2)
            await settled(running)
            key = await running.directory.recording_key(UUID(tenant.id))
        await asyncio.wait_for(far_end.communicate(), 30)
    finally:
        if far_end.returncode is None:
            far_end.kill()
            await far_end.wait()
    await sub.unsubscribe()

    # Nothing was played to either leg: what they sent is what the other far end said.
    assert all(count > 75 for count in forwarded.values()), forwarded
    path = Path(started["path"])
    assert stopped["path"] == started["path"]
    assert path.is_relative_to(running.node.config.recordings_dir / tenant.id)
    recording = read_recording(path, key, recording_aad(UUID(tenant.id), UUID(legs[0])))
    assert 2500 <= recording.duration_ms <= 3500
    assert max(abs(s) for s in memoryview(recording.samples).cast("h")) > 1000  # speech
    with pytest.raises(RecordingError):
        read_recording(path, key, recording_aad(UUID(tenant.id), UUID(legs[1])))


async def _roaming_trunk(api: Api, tenant: Tenant) -> None:
    """A BYOC trunk on no allow-list: its carrier authenticates as acme-in / Digest-In-7."""
    await _ok(
        api.client.post(
            "/v1/trunks",
            json={
                "name": "Roaming carrier",
                "host": "127.0.0.2",
                "inbound": {"digest_username": "acme-in", "digest_password": "Digest-In-7"},
            },
            headers=tenant.auth,
        )
    )


async def test_a_carrier_on_no_allow_list_gets_in_with_its_trunks_digest_credentials(
    api: Api, admin_conn: asyncpg.Connection, tmp_path: Path
) -> None:
    tenant = await provision(api, admin_conn)
    await _roaming_trunk(api, tenant)
    events, sub = await listen_calls(api, tenant.id)
    # SIPp answers only the first challenge, and only MD5.
    async with running_node(api, trunk_keepalive_seconds=0, digest_algorithm="MD5") as running:
        result = await run_sipp(
            f"127.0.0.1:{running.node.sip_ports['udp']}",
            scenario("uac_digest.xml", tmp_path, PASSWORD="Digest-In-7"),
            tmp_path,
            service=NUMBER.lstrip("+"),
            local_ip="127.0.0.2",
        )
        assert result.ok, result.explain()
        ended = await events.wait("call.ended", 1)
        await settled(running)
    await sub.unsubscribe()
    started = events.of("call.started")
    assert [e["to_number"] for e in started] == [NUMBER]
    assert started[0]["trunk"] != "carrier-a"  # it came over the tenant's own trunk
    assert ended[0]["cause"] == "remote_bye"


async def test_a_wrong_digest_password_gets_403_and_no_call(
    api: Api, admin_conn: asyncpg.Connection, tmp_path: Path
) -> None:
    tenant = await provision(api, admin_conn)
    await _roaming_trunk(api, tenant)
    events, sub = await listen_calls(api, tenant.id)
    async with running_node(api, trunk_keepalive_seconds=0, digest_algorithm="MD5") as running:
        result = await run_sipp(
            f"127.0.0.1:{running.node.sip_ports['udp']}",
            scenario("uac_digest.xml", tmp_path, PASSWORD="Guess-1234"),
            tmp_path,
            service=NUMBER.lstrip("+"),
            local_ip="127.0.0.2",
        )
        await settled(running)
    await asyncio.sleep(0.2)
    await sub.unsubscribe()
    assert not result.ok
    assert "SIP/2.0 403 Forbidden" in result.messages
    assert events.by_type == {}
