"""A call center for browser-agent tests: the API served over HTTP (for WebSockets and pages),
a router, a media node, one queue behind one number, and SIPp callers that play a tone."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import msgspec

from runtime.embedded import free_port
from switchboard import roles
from switchboard.media_role import RunningNode
from tests.conftest import Api, MailCatcher, Services
from tests.media.capture import UdpCapture
from tests.media.sipp import SippResult, run_sipp, scenario
from tests.media.test_node import running_node
from tests.media.test_queueing import media_port
from tests.media.tones import decode_rtp_payloads, tone_power, write_tone_pcap
from tests.routing.center import Agent, Center, add_agents, add_queue, ok, open_center
from tests.routing.center import routing_api as _routing_api

NUMBER = "+12125550111"
CALLER = "+14155552671"
CALLER_TONE = 440.0
AGENT_TONE = 1000.0


@dataclass
class Timeline:
    all: list[dict[str, Any]] = field(default_factory=list)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.all if e["type"] == kind]

    async def wait(self, kind: str, count: int = 1, timeout: float = 20) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout):
            while len(self.of(kind)) < count:
                await asyncio.sleep(0.05)
        return self.of(kind)


@dataclass
class Caller:
    """A SIPp caller playing `CALLER_TONE`, and what reached its media port."""

    task: asyncio.Task[SippResult]
    capture: UdpCapture
    port: int

    def datagrams(self) -> list[bytes]:
        return [d for packets in list(self.capture.by_source.values()) for d in list(packets)]

    def mark(self) -> int:
        return len(self.datagrams())

    def heard_since(self, mark: int) -> bytes:
        return decode_rtp_payloads(self.datagrams()[mark:])

    async def hears(self, freq: float, *, seconds: float = 1.0, share: float = 0.5) -> float:
        """Listen for `seconds`; the share of what arrived that is `freq`."""
        mark = self.mark()
        await asyncio.sleep(seconds)
        pcm = self.heard_since(mark)
        assert pcm, "no audio reached the caller"
        return tone_power(pcm, 8000, freq)

    async def result(self) -> SippResult:
        try:
            return await asyncio.wait_for(asyncio.shield(self.task), 30)
        finally:
            self.capture.stop()


@dataclass
class Floor:
    api: Api
    center: Center
    node: RunningNode
    http_url: str
    timeline: Timeline
    tmp: Path
    queue: dict[str, Any]
    agents: list[Agent]

    @property
    def ws_url(self) -> str:
        return self.http_url.replace("http://", "ws://") + "/v1/agent/ws"

    def token(self, agent: Agent) -> str:
        return agent.auth["Authorization"].removeprefix("Bearer ")

    def call(self, *, talk_seconds: float = 60.0) -> Caller:
        work = self.tmp / f"caller-{len(list(self.tmp.iterdir()))}"
        work.mkdir()
        pcap = work / "tone.pcap"
        write_tone_pcap(pcap, CALLER_TONE, talk_seconds, codec="PCMA")
        media = f'<nop><action><exec play_pcap_audio="{pcap}"/></action></nop>'
        port = media_port()
        capture = UdpCapture(port)
        capture.start()
        task = asyncio.create_task(
            run_sipp(
                f"127.0.0.1:{self.node.node.sip_ports['udp']}",
                scenario("queue_caller.xml", work, MEDIA=media, CALLER=CALLER),
                work,
                service=NUMBER.lstrip("+"),
                media_port=port,
                timeout=talk_seconds + 30,
            )
        )
        return Caller(task, capture, port)


@contextlib.asynccontextmanager
async def open_floor(
    services: Services,
    database: str,
    smtp: tuple[MailCatcher, int],
    admin_conn: asyncpg.Connection,
    tmp: Path,
    *,
    agents: int = 1,
    wrap_up_seconds: int = 0,
) -> AsyncIterator[Floor]:
    from tests.routing.center import running_router

    port = free_port()
    async with _routing_api(services, database, smtp, http_port=port) as api:
        await admin_conn.execute(
            "insert into platform_trunks (name, host, port, allowed_sources)"
            " values ('carrier-a', '127.0.0.1', $1, '{127.0.0.1/32}')",
            free_port(),
        )
        await admin_conn.execute(
            "insert into number_inventory (e164, country, area_code, trunk)"
            " values ($1, 'US', '212', 'carrier-a')",
            NUMBER,
        )
        center = await open_center(api)
        made = await add_agents(api, center, agents)
        queue = await add_queue(api, center, "Support", made, wrap_up_seconds=wrap_up_seconds)
        number = await ok(
            api.client.post(
                "/v1/numbers",
                json={"e164": NUMBER},
                headers={**center.auth, "Idempotency-Key": "n"},
            )
        )
        document = {
            "start": "hello",
            "nodes": {
                "hello": {"type": "play", "text": "Thank you for calling.", "next": "queue"},
                "queue": {"type": "enqueue", "queue_id": queue["id"]},
            },
        }
        flow = await ok(
            api.client.post(
                "/v1/flows",
                json={"name": "Support line", "document": document},
                headers=center.auth,
            )
        )
        await ok(api.client.post(f"/v1/flows/{flow['id']}/publish", headers=center.auth))
        await ok(
            api.client.put(
                f"/v1/numbers/{number['id']}/flow",
                json={"flow_id": flow["id"]},
                headers=center.auth,
            ),
            200,
        )
        timeline = Timeline()

        async def on_event(msg: Any) -> None:
            timeline.all.append(msgspec.json.decode(msg.data))

        sub = await api.resources.bus.nc.subscribe(f"tenant.{center.tenant_id}.>", cb=on_event)
        stop = asyncio.Event()
        http = asyncio.create_task(roles.serve_api(api.resources, stop))
        try:
            async with running_node(api, trunk_keepalive_seconds=0) as node, running_router(api):
                yield Floor(
                    api,
                    center,
                    node,
                    f"http://127.0.0.1:{port}",
                    timeline,
                    tmp,
                    queue,
                    made,
                )
        finally:
            stop.set()
            await http
            await sub.unsubscribe()
