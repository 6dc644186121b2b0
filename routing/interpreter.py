"""Runs a published IVR flow against one call, on the media node.

This covers the caller-facing nodes: play, menu, gather, business hours, set and hang up.
Nodes that hand the call to other parts of the platform (enqueue, contact and HTTP lookups,
voicemail, transfer) end the call with a reason that names them until those parts run here.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Protocol
from uuid import UUID

from media.audio import PcmAudio
from media.directory import CallScript
from routing.flows import (
    BusinessHoursNode,
    FlowDocument,
    GatherNode,
    HangupNode,
    MenuNode,
    Node,
    PlayNode,
    SetNode,
)

log = logging.getLogger(__name__)

DEFAULT_VOICE = "en-us"
MAX_STEPS = 1000
"""A flow may loop through menus; a caller who never hangs up still ends somewhere."""


class Caller(Protocol):
    """What the interpreter needs of a call (media.control.CallControl provides it)."""

    variables: dict[str, object]

    async def answer(self) -> None: ...

    async def play(self, audio: PcmAudio) -> None: ...

    async def prompt(self, prompt_id: UUID) -> PcmAudio: ...

    async def speech(self, text: str, voice: str) -> PcmAudio: ...

    async def collect(
        self,
        *,
        max_digits: int,
        between_digits: float,
        first_digit_within: float | None = None,
        terminator: str | None = "#",
        announcement: PcmAudio | None = None,
    ) -> str: ...

    async def hangup(self, reason: str = "normal") -> None: ...


def flow_script(flow: FlowDocument, *, now: type[datetime] = datetime) -> CallScript:
    """The script a media node runs for calls to a number routed to `flow`."""

    async def run(call: Caller) -> None:
        await FlowRun(flow, call, now=now).run()

    return run


class FlowRun:
    def __init__(self, flow: FlowDocument, call: Caller, *, now: type[datetime] = datetime) -> None:
        self._flow = flow
        self._call = call
        self._now = now
        self.visited: list[str] = []

    async def _announcement(self, prompt_id: UUID | None, text: str | None) -> PcmAudio | None:
        if prompt_id is not None:
            return await self._call.prompt(prompt_id)
        if text is not None:
            return await self._call.speech(text, DEFAULT_VOICE)
        return None

    async def run(self) -> None:
        node_id: str | None = self._flow.start
        steps = 0
        while node_id is not None:
            steps += 1
            if steps > MAX_STEPS:
                await self._call.hangup("flow_step_limit")
                return
            self.visited.append(node_id)
            node = self._flow.nodes[node_id]
            node_id = await self._step(node)
        await self._call.hangup("flow_finished")

    async def _step(self, node: Node) -> str | None:
        call = self._call
        if isinstance(node, PlayNode):
            audio = await self._announcement(node.prompt_id, node.text)
            if audio is not None:
                await call.play(audio)
            return node.next
        if isinstance(node, MenuNode):
            return await self._menu(node)
        if isinstance(node, GatherNode):
            audio = await self._announcement(node.prompt_id, node.text)
            digits = await call.collect(
                max_digits=node.max_digits,
                between_digits=node.timeout_seconds,
                terminator=node.terminator,
                announcement=audio,
            )
            if len(digits) < node.min_digits:
                return node.timeout if node.timeout is not None else node.next
            call.variables[node.variable] = digits
            return node.next
        if isinstance(node, BusinessHoursNode):
            return node.open if node.is_open(self._now.now(UTC)) else node.closed
        if isinstance(node, SetNode):
            if node.priority is not None:
                call.variables["priority"] = node.priority
            if node.skills:
                call.variables["skills"] = dict(node.skills)
            if node.attributes:
                call.variables.update(node.attributes)
            return node.next
        if isinstance(node, HangupNode):
            await call.hangup(node.reason or "flow_hangup")
            return None
        kind = type(node).__struct_config__.tag
        log.info("flow node %s is not run on media nodes yet; ending the call", kind)
        await call.hangup(f"flow_node_unavailable:{kind}")
        return None

    async def _menu(self, node: MenuNode) -> str | None:
        audio = await self._announcement(node.prompt_id, node.text)
        for attempt in range(node.retries + 1):
            digits = await self._call.collect(
                max_digits=1,
                between_digits=node.timeout_seconds,
                terminator=None,
                announcement=audio,
            )
            if digits in node.options:
                return node.options[digits]
            last_attempt = attempt == node.retries
            if not digits and node.timeout is not None:
                return node.timeout
            if digits and node.invalid is not None:
                return node.invalid
            if last_attempt:
                break
        return node.failed
