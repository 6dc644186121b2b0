"""What other processes (the API) ask of the ACD router, by request/reply on
`router.<partition>.<verb>` to whichever router holds the tenant's partition now."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import msgspec

from bus.connection import Bus
from bus.requests import NoResponder, send_command
from routing.router import partition_of


def router_subject(namespace: str, partition: int) -> str:
    """Where the router serving `partition` takes commands (add `.<verb>`)."""
    return f"router.{namespace}.{partition}" if namespace else f"router.{partition}"


class RouterUnavailable(Exception):
    """No router answered for the tenant's partition (restarting, or none running)."""


class RouterRefused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class RouterClient:
    def __init__(
        self,
        bus: Bus,
        partitions: int,
        *,
        namespace: str = "",
        wait: float = 5.0,
        attempts: int = 3,
    ) -> None:
        self._bus = bus
        self._namespace = namespace
        self._partitions = partitions
        self._wait = wait
        self._attempts = attempts

    async def _ask(self, tenant_id: UUID, verb: str, body: dict[str, Any]) -> dict[str, Any]:
        partition = partition_of(tenant_id, self._partitions)
        subject = f"{router_subject(self._namespace, partition)}.{verb}"
        payload = msgspec.json.encode({"tenant_id": str(tenant_id), **body})
        for attempt in range(self._attempts):
            try:
                raw = await send_command(self._bus, subject, payload, wait=self._wait)
            except NoResponder as exc:
                if attempt + 1 == self._attempts:
                    raise RouterUnavailable(str(exc)) from exc
                continue
            reply: dict[str, Any] = msgspec.json.decode(raw)
            if reply.get("ok"):
                return reply
            code = str(reply.get("error"))
            if code == "not_owner" and attempt + 1 < self._attempts:
                continue  # the partition is moving between routers
            raise RouterRefused(code, str(reply.get("message", "")))
        raise RouterUnavailable(subject)

    async def set_presence(
        self,
        tenant_id: UUID,
        agent_id: UUID,
        state: str,
        *,
        reason: str | None = None,
        device: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"agent_id": str(agent_id), "state": state}
        if reason is not None:
            body["reason"] = reason
        if device is not None:
            body["device"] = device
        reply = await self._ask(tenant_id, "presence", body)
        agent: dict[str, Any] = reply["agent"]
        return agent

    async def end_wrap_up(self, tenant_id: UUID, agent_id: UUID) -> dict[str, Any]:
        reply = await self._ask(tenant_id, "end_wrap_up", {"agent_id": str(agent_id)})
        agent: dict[str, Any] = reply["agent"]
        return agent

    async def agents(self, tenant_id: UUID) -> list[dict[str, Any]]:
        reply = await self._ask(tenant_id, "agents", {})
        agents: list[dict[str, Any]] = reply["agents"]
        return agents

    async def queue(self, tenant_id: UUID, queue_id: UUID) -> dict[str, Any]:
        reply = await self._ask(tenant_id, "queue", {"queue_id": str(queue_id)})
        queue: dict[str, Any] = reply["queue"]
        return queue
