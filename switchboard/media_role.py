"""The media node role: wires media.node to the catalog, the bus and the settings."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import secrets
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import asyncpg
import msgspec

from bus.connection import Bus
from bus.publisher import EventPublisher
from bus.requests import CommandService, notify, serve_commands, subscribe_notices
from media import events as call_events
from media.node import MediaNode, NodeConfig
from media.sip.endpoint import TransportName
from runtime.settings import Settings
from switchboard.media_directory import CatalogDirectory
from tenancy.vault import Vault
from webrtc.desk import (
    CONNECT_SUBJECT,
    AgentDesk,
    agent_command_subject,
    agent_notice_subject,
)
from webrtc.leg import IceServer

log = logging.getLogger("switchboard.media")

HEARTBEAT_SECONDS = 5.0
# Catalog changes after which cached routes and trunks are dropped at once.
_CATALOG_SUBJECTS = (
    "tenant.*.trunk.>",
    "tenant.*.number.>",
    "tenant.*.flow.>",
    "tenant.*.tenant.>",
)


def node_config(settings: Settings, **overrides: object) -> NodeConfig:
    master = settings.master_key_bytes
    # Every node keyed by one master key honours the others' digest challenges.
    nonce_secret = (
        hmac.new(master, b"switchboard sip nonce v1", hashlib.sha256).digest()
        if master is not None
        else secrets.token_bytes(32)
    )
    # TLS listens on its own port (sip_tls_port), opened once the node runs.
    plain: tuple[TransportName, ...] = ("udp", "tcp")
    transports = tuple(t for t in plain if t in settings.sip_transports)
    values: dict[str, object] = {
        "node_id": settings.node_id,
        "sip_host": settings.sip_host,
        "sip_port": settings.sip_port,
        "transports": transports,
        "public_host": settings.sip_public_host,
        "rtp_host": settings.rtp_host,
        "rtp_port_min": settings.rtp_port_min,
        "rtp_port_max": settings.rtp_port_max,
        "realm": settings.sip_realm,
        "digest_algorithm": settings.sip_digest_algorithm,
        "nonce_secret": nonce_secret,
        "source_rate": settings.sip_source_rate,
        "source_burst": settings.sip_source_burst,
        "recordings_dir": Path(settings.data_dir) / "recordings",
        "agent_device_networks": tuple(
            ipaddress.ip_network(n, strict=False) for n in settings.agent_device_networks
        ),
    }
    values.update(overrides)
    return NodeConfig(**values)  # type: ignore[arg-type]


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    if "tls" not in settings.sip_transports:
        return None
    assert settings.sip_tls_cert is not None
    assert settings.sip_tls_key is not None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.sip_tls_cert, settings.sip_tls_key)
    return context


@dataclass
class RunningNode:
    node: MediaNode
    directory: CatalogDirectory
    publisher: EventPublisher
    desk: AgentDesk


@contextlib.asynccontextmanager
async def media_node(
    settings: Settings, pool: asyncpg.Pool, bus: Bus, **overrides: object
) -> AsyncIterator[RunningNode]:
    """A started media node with its commands, heartbeats and cache invalidation; stopped
    (every call hung up with cause "shutdown", events flushed) on exit."""
    vault = Vault(settings.master_key_bytes)
    directory = CatalogDirectory(
        pool, vault, settings.master_key_bytes, allow_private_lookups=settings.test_mode
    )
    publisher = EventPublisher(bus, call_events.codec)
    publisher.start()
    node = MediaNode(
        node_config(settings, **overrides),
        directory,
        publisher,
        recording_key=directory.recording_key,
    )
    await node.start()
    context = tls_context(settings)
    if context is not None and node.endpoint is not None:
        node.sip_ports["tls"] = await node.endpoint.listen(
            "tls", settings.sip_host, settings.sip_tls_port, ssl=context
        )
    prefix = f"media.{node.config.node_id}."

    async def on_command(subject: str, payload: bytes) -> bytes:
        return await node.handle_command(subject.removeprefix(prefix), payload)

    async def on_catalog_change(_subject: str, _payload: bytes) -> None:
        directory.forget()

    async def on_prompt_change(_subject: str, _payload: bytes) -> None:
        directory.forget_prompts()

    async def on_contact_change(_subject: str, _payload: bytes) -> None:
        directory.forget_contacts()

    async def on_queue_change(_subject: str, _payload: bytes) -> None:
        directory.forget_queues()

    services: list[CommandService] = [await serve_commands(bus, prefix + "*", on_command)]

    # Notices to softphones leave in the order they were made, through one sender.
    notices: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

    def tell_agent(tenant_id: UUID, agent_id: UUID, message: dict[str, object]) -> None:
        notices.put_nowait(
            (agent_notice_subject(tenant_id, agent_id), msgspec.json.encode(message))
        )

    async def send_notices() -> None:
        while True:
            subject, payload = await notices.get()
            await notify(bus, subject, payload)

    async def serve_agent(tenant_id: UUID, agent_id: UUID) -> Callable[[], Awaitable[None]]:
        agent_prefix = agent_command_subject(tenant_id, agent_id, "")

        async def on_agent_command(subject: str, payload: bytes) -> bytes:
            return await desk.reply(subject.removeprefix(agent_prefix), payload)

        service = await serve_commands(bus, agent_prefix + "*", on_agent_command)
        return service.close

    stun = [IceServer(tuple(settings.stun_urls))] if settings.stun_urls else []
    desk = AgentDesk(
        node,
        tell_agent,
        serve_agent,
        ice_servers=stun,
        reconnect_grace_seconds=settings.agent_reconnect_grace_seconds,
    )
    node.agent_lines = desk

    async def on_connect(_subject: str, payload: bytes) -> bytes:
        return await desk.reply("connect", payload)

    services.append(await serve_commands(bus, CONNECT_SUBJECT, on_connect, queue="media-nodes"))
    for subject in _CATALOG_SUBJECTS:
        services.append(await subscribe_notices(bus, subject, on_catalog_change))
    services.append(await subscribe_notices(bus, "tenant.*.prompt.>", on_prompt_change))
    for subject in ("tenant.*.contact.>", "tenant.*.contacts.>"):
        services.append(await subscribe_notices(bus, subject, on_contact_change))
    services.append(await subscribe_notices(bus, "tenant.*.queue.>", on_queue_change))

    async def beat() -> None:
        while True:
            state = {
                **node.heartbeat(),
                **desk.counts(),
                "events_published": publisher.published,
                "events_waiting": publisher.backlog,
                "event_publish_retries": publisher.retries,
            }
            await notify(bus, f"media.heartbeat.{node.config.node_id}", msgspec.json.encode(state))
            await asyncio.sleep(HEARTBEAT_SECONDS)

    heart = asyncio.create_task(beat(), name="media-heartbeat")
    sender = asyncio.create_task(send_notices(), name="agent-notices")
    try:
        yield RunningNode(node, directory, publisher, desk)
    finally:
        for task in (heart, sender):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for service in services:
            await service.close()
        await node.stop("shutdown")
        await desk.close()
        await publisher.close()
        await directory.aclose()
