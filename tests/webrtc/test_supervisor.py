"""A supervisor on a live call, checked by ear at every party: the caller (SIPp) plays one tone,
the agent another and the supervisor a third. Listening, the supervisor hears both and neither
hears them; whispering, only the agent hears them; barging, both do; after leaving, nobody."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import MailCatcher
from tests.media.capture import can_capture
from tests.media.tones import tone_power
from tests.routing.center import Agent, ok
from tests.webrtc.floor import AGENT_TONE, CALLER_TONE, Caller, Floor
from tests.webrtc.softphone import PySoftphone

pytestmark = pytest.mark.skipif(not can_capture(), reason="capturing RTP needs AF_PACKET (root)")

SUPERVISOR_TONE = 1400.0
PRESENT = 0.12
ABSENT = 0.04


async def _user(floor: Floor, email: str, role: str) -> Agent:
    client = floor.api.client
    user = await ok(
        client.post("/v1/users", json={"email": email, "role": role}, headers=floor.center.auth)
    )
    token = MailCatcher.token_in(await floor.api.mail.wait_for(email, "invited"))
    password = "Supervise-Passw0rd"
    await ok(
        client.post("/v1/auth/accept-invitation", json={"token": token, "password": password}),
        200,
    )
    tokens = await ok(
        client.post("/v1/auth/login", json={"email": email, "password": password}), 200
    )
    return Agent(user["id"], email, {"Authorization": f"Bearer {tokens['access_token']}"})


async def _phone(floor: Floor, user: Agent, tone: float) -> PySoftphone:
    phone = PySoftphone(floor.ws_url, floor.token(user), tone)
    await phone.open()
    await phone.connect_media()
    return phone


async def _hear(
    caller: Caller, phones: dict[str, PySoftphone], seconds: float = 1.2
) -> dict[str, dict[float, float]]:
    """What each party heard over the same `seconds`: the share of each tone."""
    mark = caller.mark()
    marks = {name: len(phone.heard) for name, phone in phones.items()}
    await asyncio.sleep(seconds)
    tones = (CALLER_TONE, AGENT_TONE, SUPERVISOR_TONE)
    heard = {"caller": {f: tone_power(caller.heard_since(mark), 8000, f) for f in tones}}
    for name, phone in phones.items():
        pcm = bytes(phone.heard[marks[name] :])
        heard[name] = {f: tone_power(pcm, phone.heard_rate, f) for f in tones}
    return heard


def _check(heard: dict[str, dict[float, float]], party: str, tone: float, present: bool) -> None:
    share = heard[party][tone]
    if present:
        assert share > PRESENT, f"{party} should hear {tone} Hz: {heard}"
    else:
        assert share < ABSENT, f"{party} should not hear {tone} Hz: {heard}"


async def test_listen_whisper_and_barge_are_heard_by_exactly_the_right_parties(
    floor: Floor,
) -> None:
    supervisor_user = await _user(floor, "lead@acme.test", "supervisor")
    agent = await _phone(floor, floor.agents[0], AGENT_TONE)
    supervisor = await _phone(floor, supervisor_user, SUPERVISOR_TONE)
    try:
        await agent.ask({"type": "presence", "state": "available"}, "presence")
        caller = floor.call()
        call_id = (await agent.expect("offered", timeout=20))["call_id"]
        await agent.ask({"type": "answer", "call_id": call_id}, "call", state="connected")
        await asyncio.sleep(1.0)
        phones = {"agent": agent, "supervisor": supervisor}

        steps: list[tuple[str, dict[str, set[float]]]] = [
            # mode, then who hears which tones (the rest must be absent)
            ("listen", {"caller": {AGENT_TONE}, "agent": {CALLER_TONE},
                        "supervisor": {CALLER_TONE, AGENT_TONE}}),
            ("whisper", {"caller": {AGENT_TONE}, "agent": {CALLER_TONE, SUPERVISOR_TONE},
                         "supervisor": {CALLER_TONE, AGENT_TONE}}),
            ("barge", {"caller": {AGENT_TONE, SUPERVISOR_TONE},
                       "agent": {CALLER_TONE, SUPERVISOR_TONE},
                       "supervisor": {CALLER_TONE, AGENT_TONE}}),
        ]  # fmt: skip
        for mode, expected in steps:
            start = len(supervisor.messages)
            await supervisor.send({"type": "monitor", "call_id": call_id, "mode": mode})
            notice = await supervisor.expect("monitor", after=start)
            assert (notice["mode"], notice["agent_id"]) == (mode, floor.agents[0].id)
            await asyncio.sleep(0.4)
            heard = await _hear(caller, phones)
            for party in ("caller", "agent", "supervisor"):
                own = {"caller": CALLER_TONE, "agent": AGENT_TONE}.get(party, SUPERVISOR_TONE)
                for tone in (CALLER_TONE, AGENT_TONE, SUPERVISOR_TONE):
                    if tone != own:
                        _check(heard, party, tone, tone in expected[party])

        # The agent was told of the whisper and the barge, never of the listening.
        told = [m["mode"] for m in agent.of("supervisor")]
        assert told == ["whisper", "barge"]

        start = len(supervisor.messages)
        await supervisor.send({"type": "stop_monitor", "call_id": call_id})
        ended = await supervisor.expect("monitor", after=start)
        assert (ended["mode"], ended["cause"]) == ("ended", "stopped")
        await asyncio.sleep(0.4)
        heard = await _hear(caller, phones)
        _check(heard, "caller", AGENT_TONE, True)
        _check(heard, "caller", SUPERVISOR_TONE, False)
        _check(heard, "agent", CALLER_TONE, True)
        _check(heard, "agent", SUPERVISOR_TONE, False)
        _check(heard, "supervisor", CALLER_TONE, False)
        _check(heard, "supervisor", AGENT_TONE, False)
        assert [m["mode"] for m in agent.of("supervisor")] == ["whisper", "barge", None]

        # Hold while supervised: the caller hears hold music, agent and supervisor still talk.
        start = len(supervisor.messages)
        await supervisor.send({"type": "monitor", "call_id": call_id, "mode": "barge"})
        await supervisor.expect("monitor", lambda m: m["mode"] == "barge", after=start)
        await agent.ask({"type": "hold", "call_id": call_id}, "call", state="held")
        await asyncio.sleep(0.4)
        heard = await _hear(caller, phones)
        _check(heard, "caller", AGENT_TONE, False)
        _check(heard, "caller", SUPERVISOR_TONE, False)
        _check(heard, "agent", SUPERVISOR_TONE, True)
        _check(heard, "agent", CALLER_TONE, False)
        await agent.ask({"type": "resume", "call_id": call_id}, "call", state="connected")

        # The call ends: so does the supervision.
        start = len(supervisor.messages)
        await agent.ask({"type": "hangup", "call_id": call_id}, "call", state="ended")
        gone = await supervisor.expect("monitor", lambda m: m["mode"] == "ended", after=start)
        assert gone["cause"] == "call_ended"
        assert (await caller.result()).ok

        modes = [
            (e["mode"], e["supervisor_id"])
            for e in floor.timeline.of("call.monitored")
            if e["call_id"] == call_id
        ]
        assert [m for m, _ in modes] == ["listen", "whisper", "barge", "ended", "barge", "ended"]
        assert {s for _, s in modes} == {supervisor_user.id}
    finally:
        await agent.close()
        await supervisor.close()


async def test_who_may_supervise_and_what_is_refused(floor: Floor) -> None:
    agent = await _phone(floor, floor.agents[0], AGENT_TONE)
    try:
        await agent.ask({"type": "presence", "state": "available"}, "presence")
        caller = floor.call()
        call_id = (await agent.expect("offered", timeout=20))["call_id"]
        await agent.ask({"type": "answer", "call_id": call_id}, "call", state="connected")

        # An agent is not a supervisor, on the socket or over REST.
        start = len(agent.messages)
        await agent.send({"type": "monitor", "call_id": call_id, "mode": "listen"})
        assert (await agent.expect("error", after=start))["code"] == "forbidden"
        client = floor.api.client
        denied = await client.post(
            f"/v1/calls/{call_id}/monitor", json={"mode": "listen"}, headers=floor.agents[0].auth
        )
        assert denied.status_code == 403

        lead = await _user(floor, "lead@acme.test", "supervisor")
        # No softphone connected: a clear conflict, nothing joined.
        missing = await client.post(
            f"/v1/calls/{call_id}/monitor", json={"mode": "listen"}, headers=lead.auth
        )
        assert (missing.status_code, missing.json()["code"]) == (409, "no-media")
        bad_mode = await client.post(
            f"/v1/calls/{call_id}/monitor", json={"mode": "shout"}, headers=lead.auth
        )
        assert bad_mode.status_code in (400, 422)

        supervisor = await _phone(floor, lead, SUPERVISOR_TONE)
        try:
            unknown = await client.post(
                "/v1/calls/00000000-0000-4000-8000-000000000000/monitor",
                json={"mode": "listen"},
                headers=lead.auth,
            )
            assert unknown.status_code == 404
            joined = await client.post(
                f"/v1/calls/{call_id}/monitor", json={"mode": "listen"}, headers=lead.auth
            )
            assert joined.status_code == 200, joined.text
            assert joined.json() == {
                "call_id": call_id,
                "mode": "listen",
                "agent_id": floor.agents[0].id,
            }
            await asyncio.sleep(0.5)
            heard = supervisor.last_heard(0.4)
            assert tone_power(heard, supervisor.heard_rate, CALLER_TONE) > PRESENT
            stopped = await client.delete(f"/v1/calls/{call_id}/monitor", headers=lead.auth)
            assert stopped.status_code == 204
            again = await client.delete(f"/v1/calls/{call_id}/monitor", headers=lead.auth)
            assert again.status_code == 404
        finally:
            await supervisor.close()
        await agent.ask({"type": "hangup", "call_id": call_id}, "call", state="ended")
        assert (await caller.result()).ok
    finally:
        await agent.close()
