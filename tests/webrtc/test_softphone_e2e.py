"""The softphone page in headless Chromium, end to end: an agent signs in and goes available,
a SIPp caller (playing 440 Hz) is queued and offered, the page shows the screen pop, the test
clicks Answer, and each side hears the other's tone (the browser's fake microphone plays
1000 Hz); then hold, resume and hang up, with the events agreeing. It also times the caller's
INVITE -> the offer on screen, and the Answer click -> the caller hearing the agent
(loadtests/softphone_latency.py collects these over repeated runs)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.media.capture import can_capture
from tests.media.tones import decode_rtp_payloads, tone_power, write_tone_wav
from tests.webrtc.browser import chromium_page, remote_tone_power, requires_chromium
from tests.webrtc.floor import AGENT_TONE, CALLER, CALLER_TONE, Floor

pytestmark = [
    requires_chromium,
    pytest.mark.skipif(not can_capture(), reason="capturing RTP needs AF_PACKET (root)"),
]

PASSWORD = "Headset-0-Passw0rd"
"""What tests.routing.center.add_agents gives agent 0."""


async def _until(predicate: object, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():  # type: ignore[operator]
            await asyncio.sleep(0.05)


async def test_an_agent_in_chromium_takes_a_queued_call_with_two_way_audio(
    floor: Floor, tmp_path: Path
) -> None:
    wav = tmp_path / "agent.wav"
    write_tone_wav(wav, AGENT_TONE, 2.0)
    agent = floor.agents[0]
    async with chromium_page(wav) as page:
        await page.goto(f"{floor.http_url}/softphone")
        await page.fill("#login-email", agent.email)
        await page.fill("#login-password", PASSWORD)
        await page.click("#login-submit")
        await page.wait_for_function(
            "() => window.softphone && window.softphone.pc"
            " && window.softphone.pc.connectionState === 'connected'",
            timeout=20_000,
        )
        await page.select_option("#state-select", "available")
        await _presence(floor, agent.id, "available")

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

        await page.click("#hangup-btn")
        result = await caller.result()
        assert result.ok, result.explain()
        ended = (await floor.timeline.wait("call.ended"))[0]
        assert ended["agent_id"] == agent.id
        await page.wait_for_selector("#wrapup-form", state="visible", timeout=10_000)
        await _presence(floor, agent.id, "wrap_up")
        await page.fill("#wrapup-notes", "Caller asked about an invoice.")
        await page.click("#wrapup-submit")
        await _presence(floor, agent.id, "available", count=2)
        assert "ended" in (await page.inner_text("#call-list")).lower() or CALLER in (
            await page.inner_text("#call-list")
        )
        answered = floor.timeline.of("call.offer_answered")
        assert [e["agent_id"] for e in answered] == [agent.id]
        # The events tell the call in the order it happened.
        order = ["call.queued", "call.offer_answered", "call.held", "call.resumed", "call.ended"]
        times = [_at(floor.timeline.of(kind)[0]) for kind in order]
        assert times == sorted(times), dict(zip(order, times, strict=True))


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


async def _call_event(floor: Floor, kind: str) -> None:
    async def seen() -> bool:
        return bool(floor.timeline.of(kind))

    await _until(seen)
