"""Prompt events. Subjects: tenant.<tenant_id>.prompt.<prompt_id>.<verb>. They never carry the
audio: a media node that caches a prompt drops its copy on `updated` or `deleted` and fetches
it again when a flow next plays it."""

from __future__ import annotations

from uuid import UUID

from bus.events import Event, EventCodec


class PromptCreated(Event, frozen=True, kw_only=True, tag="prompt.created"):
    prompt_id: UUID
    name: str
    source: str
    duration_ms: int

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.prompt.{self.prompt_id}.created"


class PromptUpdated(Event, frozen=True, kw_only=True, tag="prompt.updated"):
    prompt_id: UUID
    name: str
    changed: list[str]

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.prompt.{self.prompt_id}.updated"


class PromptDeleted(Event, frozen=True, kw_only=True, tag="prompt.deleted"):
    prompt_id: UUID
    name: str

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.prompt.{self.prompt_id}.deleted"


codec = EventCodec((PromptCreated, PromptUpdated, PromptDeleted))
