"""What tenancy does reaches the EVENTS stream, typed, through the outbox relay."""

from __future__ import annotations

import asyncio
import secrets

from bus.consumer import Consumer
from bus.events import Event
from tenancy import events as ev
from tests.conftest import Api, MailCatcher


async def test_account_lifecycle_events_arrive_once_each_in_order(api: Api) -> None:
    owner = await api.signup_verified("owner@acme.test")
    tenant = owner["tenant_id"]
    r = await api.client.post(
        "/v1/users", json={"email": "agent@acme.test", "role": "agent"}, headers=owner["auth"]
    )
    agent_id = r.json()["id"]
    token = MailCatcher.token_in(await api.mail.wait_for("agent@acme.test", "invited"))
    await api.client.post(
        "/v1/auth/accept-invitation", json={"token": token, "password": "Calls-Passw0rd-1"}
    )
    r = await api.client.post(
        "/v1/api-keys", json={"name": "k", "scopes": ["users:read"]}, headers=owner["auth"]
    )
    key_id = r.json()["id"]
    await api.client.delete(f"/v1/api-keys/{key_id}", headers=owner["auth"])

    seen: list[Event] = []
    done = asyncio.Event()

    async def collect(event: Event) -> None:
        seen.append(event)
        if isinstance(event, ev.ApiKeyRevoked):
            done.set()

    stop = asyncio.Event()
    consumer = Consumer(
        api.resources.bus,
        durable=f"test-{secrets.token_hex(4)}",
        filter_subject=f"tenant.{tenant}.>",
        codec=ev.codec,
        handler=collect,
    )
    task = asyncio.create_task(consumer.run(stop))
    try:
        await asyncio.wait_for(done.wait(), 20)
    finally:
        stop.set()
        await task
    assert [type(e) for e in seen] == [
        ev.TenantCreated,
        ev.TenantVerified,
        ev.UserCreated,
        ev.UserInvited,
        ev.UserCreated,
        ev.ApiKeyCreated,
        ev.ApiKeyRevoked,
    ]
    assert {str(e.tenant_id) for e in seen} == {tenant}
    assert len({e.event_id for e in seen}) == len(seen)
    invited = next(e for e in seen if isinstance(e, ev.UserInvited))
    assert str(invited.user_id) == agent_id
    assert invited.role == "agent"
    revoked = seen[-1]
    assert isinstance(revoked, ev.ApiKeyRevoked)
    assert str(revoked.api_key_id) == key_id
