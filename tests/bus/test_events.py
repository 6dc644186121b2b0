"""Typed events: JSON with a `type` tag, decoded with one decoder over a union."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

import msgspec
import pytest

from bus.errors import UnknownEvent
from bus.events import Event, EventCodec

TENANT = UUID("0190f0a0-0000-7000-8000-000000000001")
EVENT = UUID("0190f0a0-0000-7000-8000-0000000000e1")
USER = UUID("0190f0a0-0000-7000-8000-00000000000a")
CALL = UUID("0190f0a0-0000-7000-8000-00000000000c")
AT = datetime(2025, 3, 1, 12, 30, 5, 250000, tzinfo=UTC)


class UserCreated(Event, frozen=True, kw_only=True, tag="user.created"):
    user_id: UUID
    email: str

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.user.{self.user_id}.created"


class CallAnswered(Event, frozen=True, kw_only=True, tag="call.answered"):
    call_id: UUID
    agent_id: UUID

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.call.{self.call_id}.answered"


codec = EventCodec([UserCreated, CallAnswered])

GOLDEN = (
    b'{"type":"user.created",'
    b'"event_id":"0190f0a0-0000-7000-8000-0000000000e1",'
    b'"tenant_id":"0190f0a0-0000-7000-8000-000000000001",'
    b'"occurred_at":"2025-03-01T12:30:05.250000Z",'
    b'"user_id":"0190f0a0-0000-7000-8000-00000000000a",'
    b'"email":"ada@example.com"}'
)


def user_created() -> UserCreated:
    return UserCreated(
        event_id=EVENT, tenant_id=TENANT, occurred_at=AT, user_id=USER, email="ada@example.com"
    )


def test_event_encodes_to_json_tagged_with_its_type_and_decodes_back_equal() -> None:
    assert codec.encode(user_created()) == GOLDEN
    assert codec.decode(GOLDEN) == user_created()


def test_each_event_type_decodes_to_its_own_class() -> None:
    answered = CallAnswered(tenant_id=TENANT, call_id=CALL, agent_id=USER)
    decoded = codec.decode(codec.encode(answered))
    assert type(decoded) is CallAnswered
    assert decoded == answered


def test_new_event_gets_a_fresh_id_and_an_aware_timestamp() -> None:
    a = UserCreated(tenant_id=TENANT, user_id=USER, email="a@example.com")
    b = UserCreated(tenant_id=TENANT, user_id=USER, email="a@example.com")
    assert a.event_id != b.event_id
    assert a.event_id.version == 7
    assert a.occurred_at.tzinfo is not None


def test_unknown_tag_is_rejected() -> None:
    data = GOLDEN.replace(b'"user.created"', b'"user.deleted"')
    with pytest.raises(UnknownEvent, match="type"):
        codec.decode(data)


def test_payload_without_a_tag_or_not_json_is_rejected() -> None:
    with pytest.raises(UnknownEvent):
        codec.decode(GOLDEN.replace(b'"type":"user.created",', b""))
    with pytest.raises(UnknownEvent):
        codec.decode(b"\x00not json")


def test_codec_of_one_event_still_checks_the_tag() -> None:
    only_users = EventCodec([UserCreated])
    assert only_users.decode(GOLDEN) == user_created()
    answered = codec.encode(CallAnswered(tenant_id=TENANT, call_id=CALL, agent_id=USER))
    with pytest.raises(UnknownEvent):
        only_users.decode(answered)
    with pytest.raises(UnknownEvent):
        only_users.decode(GOLDEN.replace(b'"type":"user.created",', b""))


def test_codec_refuses_to_encode_an_event_it_cannot_decode() -> None:
    only_users = EventCodec([UserCreated])
    with pytest.raises(UnknownEvent):
        only_users.encode(CallAnswered(tenant_id=TENANT, call_id=CALL, agent_id=USER))


def test_events_are_immutable() -> None:
    with pytest.raises(AttributeError):
        user_created().email = "eve@example.com"  # type: ignore[misc]


def test_subject_is_built_from_the_event_ids() -> None:
    answered = CallAnswered(tenant_id=TENANT, call_id=CALL, agent_id=USER)
    assert user_created().subject() == f"tenant.{TENANT}.user.{USER}.created"
    assert answered.subject() == f"tenant.{TENANT}.call.{CALL}.answered"


def test_event_without_a_subject_says_so() -> None:
    class Nameless(Event, frozen=True, kw_only=True, tag="nameless.thing"):
        pass

    with pytest.raises(NotImplementedError, match="Nameless"):
        Nameless(tenant_id=TENANT).subject()


def test_codec_rejects_untagged_and_clashing_events() -> None:
    class Untagged(Event, frozen=True, kw_only=True):
        pass

    class Clash(Event, frozen=True, kw_only=True, tag="user.created"):
        def subject(self) -> str:
            return f"tenant.{self.tenant_id}.user.clash"

    class Nowhere(Event, frozen=True, kw_only=True, tag="user.nowhere"):
        pass

    with pytest.raises(TypeError, match="explicit tag"):
        EventCodec([Untagged])
    with pytest.raises(TypeError, match="must define subject"):
        EventCodec([Nowhere])
    with pytest.raises(TypeError, match="share the tag"):
        EventCodec([UserCreated, Clash])
    with pytest.raises(ValueError, match="at least one"):
        EventCodec([])


def test_decode_errors_keep_msgspecs_reason() -> None:
    with pytest.raises(UnknownEvent) as info:
        codec.decode(GOLDEN.replace(b'"ada@example.com"', b"42"))
    assert isinstance(info.value.__cause__, msgspec.ValidationError)
    assert "email" in str(info.value)
