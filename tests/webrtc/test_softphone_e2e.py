"""The softphone page in headless Chromium, end to end: an agent signs in and goes available,
a SIPp caller (playing 440 Hz) is queued and offered, the page shows the screen pop, the test
clicks Answer, and each side hears the other's tone (the browser's fake microphone plays
1000 Hz); then hold and resume, a blind transfer from the page's dialog to a second agent in
another Chromium (whose microphone plays 1400 Hz), who answers, talks and hangs up; the first
agent wraps up; the events agree with all of it, in order. It also times the caller's
INVITE -> the offer on screen, and the Answer click -> the caller hearing the agent
(loadtests/softphone_latency.py collects these over repeated runs)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import datetime
from pathlib import Path
from uuid import UUID

import asyncpg
import pytest
from playwright.async_api import Page

from tests.media.capture import can_capture
from tests.media.tones import decode_rtp_payloads, tone_power, write_tone_wav
from tests.routing.center import add_agents
from tests.webrtc.browser import chromium_page, remote_tone_power, requires_chromium
from tests.webrtc.floor import AGENT_TONE, CALLER, CALLER_TONE, Floor
from tests.webrtc.softphone import PySoftphone

pytestmark = [
    requires_chromium,
    pytest.mark.skipif(not can_capture(), reason="capturing RTP needs AF_PACKET (root)"),
]

SECOND_TONE = 1400.0


def _password(index: int) -> str:
    """What tests.routing.center.add_agents gives agent `index`."""
    return f"Headset-{index}-Passw0rd"


async def _until(predicate: object, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():  # type: ignore[operator]
            await asyncio.sleep(0.05)


async def test_an_agent_in_chromium_takes_a_queued_call_with_two_way_audio(
    floor: Floor, tmp_path: Path, admin_conn: asyncpg.Connection
) -> None:
    wav = tmp_path / "agent.wav"
    write_tone_wav(wav, AGENT_TONE, 2.0)
    second_wav = tmp_path / "second.wav"
    write_tone_wav(second_wav, SECOND_TONE, 2.0)
    agent = floor.agents[0]
    # In no queue: the caller reaches them only by the transfer.
    (second,) = await add_agents(floor.api, floor.center, 1, start=1)
    async with chromium_page(wav) as page, chromium_page(second_wav) as second_page:
        await _sign_in(page, floor, agent.email, _password(0))
        await _sign_in(second_page, floor, second.email, _password(1))
        await page.select_option("#state-select", "available")
        await _presence(floor, agent.id, "available")
        await second_page.select_option("#state-select", "available")
        await _presence(floor, second.id, "available")

        caller = floor.call()
        await page.wait_for_selector("#offer-banner", state="visible", timeout=20_000)
        shown = time.time()
        assert CALLER in (await page.inner_text("#offer-from"))
        assert "Support" in (await page.inner_text("#offer-queue")) or floor.queue["id"] in (
            await page.inner_text("#offer-queue")
        )

        mark = caller.mark()
        clicked = time.monotonic()
        await page.click("#answer-btn")
        # Answer -> two-way audio: the first moment the caller hears the agent's tone.
        first_heard = None
        async with asyncio.timeout(10):
            while first_heard is None:
                datagrams = caller.datagrams()[mark:]
                for i in range(len(datagrams)):
                    pcm = decode_rtp_payloads(datagrams[i : i + 5])
                    if len(pcm) >= 1600 and tone_power(pcm, 8000, AGENT_TONE) > 0.5:
                        first_heard = time.monotonic()
                        break
                if first_heard is None:
                    await asyncio.sleep(0.02)
        started = _at(floor.timeline.of("call.started")[0])
        queued = _at(floor.timeline.of("call.queued")[0])
        _record(
            invite_to_offer_ms=1000 * (shown - started),
            queued_to_offer_ms=1000 * (shown - queued),
            answer_to_audio_ms=1000 * (first_heard - clicked),
        )

        await asyncio.sleep(1.0)
        assert await caller.hears(AGENT_TONE) > 0.5
        assert await remote_tone_power(page, CALLER_TONE) > 0.5

        await page.click("#hold-btn")
        await _call_event(floor, "call.held")
        await asyncio.sleep(0.3)
        assert await caller.hears(AGENT_TONE) < 0.1
        await page.click("#hold-btn")
        await _call_event(floor, "call.resumed")
        await asyncio.sleep(0.3)
        assert await caller.hears(AGENT_TONE) > 0.5

        # A blind transfer from the page's dialog to the second agent.
        await page.click("#transfer-btn")
        await page.select_option("#transfer-kind", "agent")
        await page.fill("#transfer-to", second.id)
        await page.click("#transfer-submit")
        await second_page.wait_for_selector("#offer-banner", state="visible", timeout=20_000)
        await page.wait_for_selector("#wrapup-form", state="visible", timeout=10_000)
        await _presence(floor, agent.id, "wrap_up")
        await second_page.click("#answer-btn")
        await _call_event(floor, "call.offer_answered", count=2)
        await asyncio.sleep(1.0)
        assert await caller.hears(SECOND_TONE) > 0.5
        assert await caller.hears(AGENT_TONE) < 0.1
        assert await remote_tone_power(second_page, CALLER_TONE) > 0.5

        await second_page.click("#hangup-btn")
        result = await caller.result()
        assert result.ok, result.explain()
        ended = (await floor.timeline.wait("call.ended"))[0]
        assert ended["agent_id"] == second.id
        await second_page.wait_for_selector("#wrapup-form", state="visible", timeout=10_000)
        await page.fill("#wrapup-notes", "Caller asked about an invoice; passed to billing.")
        await page.click("#wrapup-submit")
        await _presence(floor, agent.id, "available", count=2)
        # The wrap-up is kept, by call and agent, in the tenant's rows.
        wrap_up = await admin_conn.fetchrow(
            "select tenant_id::text, agent_id::text, notes from call_wrapups where call_id = $1",
            UUID(ended["call_id"]),
        )
        assert wrap_up is not None
        assert tuple(wrap_up) == (
            floor.center.tenant_id,
            agent.id,
            "Caller asked about an invoice; passed to billing.",
        )
        assert "ended" in (await page.inner_text("#call-list")).lower() or CALLER in (
            await page.inner_text("#call-list")
        )
        answered = floor.timeline.of("call.offer_answered")
        assert [e["agent_id"] for e in answered] == [agent.id, second.id]
        (transferred,) = floor.timeline.of("call.transferred")
        assert (transferred["agent_id"], transferred["to"]) == (agent.id, second.id)
        # The events tell the call in the order it happened.
        order = [
            floor.timeline.of("call.queued")[0],
            answered[0],
            floor.timeline.of("call.held")[0],
            floor.timeline.of("call.resumed")[0],
            transferred,
            answered[1],
            ended,
        ]
        times = [_at(event) for event in order]
        assert times == sorted(times), [(e["type"], t) for e, t in zip(order, times, strict=True)]


async def _sign_in(page: Page, floor: Floor, email: str, password: str) -> None:
    await page.goto(f"{floor.http_url}/softphone")
    await page.fill("#login-email", email)
    await page.fill("#login-password", password)
    await page.click("#login-submit")
    await page.wait_for_function(
        "() => window.softphone && window.softphone.pc"
        " && window.softphone.pc.connectionState === 'connected'",
        timeout=20_000,
    )


def _at(event: dict[str, object]) -> float:
    return datetime.fromisoformat(str(event["occurred_at"])).timestamp()


def _record(**timings: float) -> None:
    """Timings for loadtests/softphone_latency.py, which runs this test repeatedly."""
    out = os.environ.get("SWITCHBOARD_LATENCY_OUT")
    if out:
        with open(out, "a") as f:
            f.write(json.dumps(timings) + "\n")


async def _presence(floor: Floor, agent_id: str, state: str, count: int = 1) -> None:
    async def reached() -> bool:
        changes = floor.timeline.of("agent.state")
        return sum(1 for e in changes if e["agent_id"] == agent_id and e["state"] == state) >= count

    await _until(reached)


async def _call_event(floor: Floor, kind: str, count: int = 1) -> None:
    async def seen() -> bool:
        return len(floor.timeline.of(kind)) >= count

    await _until(seen)


async def test_an_attended_transfer_from_the_page(floor: Floor, tmp_path: Path) -> None:
    """The page's transfer dialog with "attended" ticked: the agent talks to a colleague (a
    Python softphone) while the caller waits, then completes the transfer from the page."""
    wav = tmp_path / "agent.wav"
    write_tone_wav(wav, AGENT_TONE, 2.0)
    agent = floor.agents[0]
    (second,) = await add_agents(floor.api, floor.center, 1, start=1)
    colleague = PySoftphone(floor.ws_url, floor.token(second), SECOND_TONE)
    async with chromium_page(wav) as page:
        try:
            await colleague.open()
            await colleague.connect_media()
            await colleague.ask({"type": "presence", "state": "available"}, "presence")
            await _sign_in(page, floor, agent.email, _password(0))
            await page.select_option("#state-select", "available")
            await _presence(floor, agent.id, "available")
            caller = floor.call()
            await page.wait_for_selector("#offer-banner", state="visible", timeout=20_000)
            await page.click("#answer-btn")
            await _call_event(floor, "call.offer_answered")

            await page.click("#transfer-btn")
            await page.select_option("#transfer-kind", "agent")
            await page.fill("#transfer-to", second.id)
            await page.check("#transfer-attended")
            await page.click("#transfer-submit")
            await page.wait_for_selector("#consult-bar", state="visible", timeout=10_000)
            assert await page.is_disabled("#consult-complete")
            call_id = (await colleague.expect("offered"))["call_id"]
            await colleague.ask({"type": "answer", "call_id": call_id}, "call", state="connected")
            await page.wait_for_selector("#consult-complete:enabled", timeout=10_000)
            assert "Talking to" in await page.inner_text("#consult-status")
            await asyncio.sleep(1.0)
            assert await remote_tone_power(page, SECOND_TONE) > 0.5
            assert await caller.hears(AGENT_TONE) < 0.1

            await page.click("#consult-complete")
            await page.wait_for_selector("#call-panel", state="hidden", timeout=10_000)
            await asyncio.sleep(1.0)
            assert await caller.hears(SECOND_TONE) > 0.5
            await colleague.ask({"type": "hangup", "call_id": call_id}, "call", state="ended")
            assert (await caller.result()).ok
            states = [e["state"] for e in floor.timeline.of("call.consult")]
            assert states == ["ringing", "connected", "completed"]
        finally:
            await colleague.close()
