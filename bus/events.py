"""The base of every typed event, and the codec that turns events into JSON and back."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Union
from uuid import UUID

import msgspec

from bus.errors import UnknownEvent
from runtime.ids import new_id


def _now() -> datetime:
    return datetime.now(UTC)


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Something that happened to a tenant's resource. Concrete events subclass this with a
    `tag` (`class CallAnswered(Event, frozen=True, kw_only=True, tag="call.answered")`) and say
    which subject they are published on."""

    event_id: UUID = msgspec.field(default_factory=new_id)
    tenant_id: UUID
    occurred_at: datetime = msgspec.field(default_factory=_now)

    def subject(self) -> str:
        """`tenant.<tenant_id>.<resource>.<id>.<verb>`: the subject in stream EVENTS."""
        raise NotImplementedError(f"{type(self).__name__} must say which subject it goes to")


class _NeverSent(Event, frozen=True, kw_only=True, tag="bus.never-sent"):
    """Keeps a one-event codec's decoder a tagged union, so its `type` is checked as for many."""


class EventCodec:
    """JSON for a fixed set of event classes, decoded with one decoder over their union."""

    def __init__(self, events: Iterable[type[Event]]) -> None:
        self._tags: dict[type[Event], str] = {}
        seen: dict[str, type[Event]] = {}
        for cls in events:
            if not (isinstance(cls, type) and issubclass(cls, Event)) or cls is Event:
                raise TypeError(f"{cls!r} is not a concrete Event class")
            tag = cls.__struct_config__.tag
            if not isinstance(tag, str) or tag == cls.__name__:
                raise TypeError(f"{cls.__name__} needs an explicit tag, e.g. tag='call.answered'")
            if cls.subject is Event.subject:
                raise TypeError(f"{cls.__name__} must define subject()")
            if tag in seen and seen[tag] is not cls:
                raise TypeError(f"{seen[tag].__name__} and {cls.__name__} share the tag {tag!r}")
            seen[tag] = cls
            self._tags[cls] = tag
        if not self._tags:
            raise ValueError("an EventCodec needs at least one event class")
        members: tuple[type[Event], ...] = tuple(self._tags)
        if len(members) == 1:
            members += (_NeverSent,)
        union: Any = Union[members]  # noqa: UP007 - a union built at run time
        self._decoder: msgspec.json.Decoder[Event] = msgspec.json.Decoder(union)
        self._encoder = msgspec.json.Encoder()

    @property
    def tags(self) -> dict[str, type[Event]]:
        return {tag: cls for cls, tag in self._tags.items()}

    def encode(self, event: Event) -> bytes:
        if type(event) not in self._tags:
            raise UnknownEvent(f"{type(event).__name__} is not one of this codec's events")
        return self._encoder.encode(event)

    def decode(self, data: bytes) -> Event:
        try:
            event = self._decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise UnknownEvent(str(exc)) from exc
        if isinstance(event, _NeverSent):
            raise UnknownEvent(f"{event.__struct_config__.tag!r} is not an event this codec knows")
        return event
