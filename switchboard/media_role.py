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
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

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
                "events_published": publisher.published,
                "events_waiting": publisher.backlog,
                "event_publish_retries": publisher.retries,
            }
            await notify(bus, f"media.heartbeat.{node.config.node_id}", msgspec.json.encode(state))
            await asyncio.sleep(HEARTBEAT_SECONDS)

    heart = asyncio.create_task(beat(), name="media-heartbeat")
    try:
        yield RunningNode(node, directory, publisher)
    finally:
        heart.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heart
        for service in services:
            await service.close()
        await node.stop("shutdown")
        await publisher.close()
        await directory.aclose()
