"""Flow rules: every draft and every published version is a valid flow over the tenant's own
queues and prompts; published versions never change; numbers route to published flows."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from bus.outbox import enqueue
from routing import events as ev
from routing import repository as repo
from routing.flows import (
    FlowDocument,
    FlowInvalid,
    decode_flow,
    encode_flow,
    referenced_prompts,
    referenced_queues,
    validate_flow,
)
from routing.models import Flow, FlowCreate, FlowUpdate, FlowVersion
from runtime.ids import new_id
from tenancy.errors import Conflict, InvalidInput, NotFound
from tenancy.models import Origin, Subject
from tenancy.numbers import events as number_events
from tenancy.numbers.models import Number
from tenancy.numbers.service import to_number
from tenancy.service import audit_by, require


class FlowRejected(InvalidInput):
    code, title = "invalid-flow", "Invalid flow"


def _rejected(problems: list[Any]) -> FlowRejected:
    errors = [("document" + (f".{p.field}" if p.field else ""), p.message) for p in problems]
    return FlowRejected(
        f"The flow has {len(errors)} problem{'s' if len(errors) != 1 else ''}.", errors=errors
    )


async def _record_references(
    conn: asyncpg.Connection, subject: Subject, flow_id: UUID, *documents: Any
) -> None:
    """The queues and prompts the draft and the published version use, so neither can be
    deleted while a flow might still send a caller to it."""
    queues: set[UUID] = set()
    prompts: set[UUID] = set()
    for document in documents:
        if document is not None:
            doc = decode_flow(document)
            queues |= referenced_queues(doc)
            prompts |= referenced_prompts(doc)
    await repo.set_references(conn, subject.tenant_id, flow_id, queues, prompts)


async def checked(conn: asyncpg.Connection, subject: Subject, document: Any) -> dict[str, Any]:
    """The document in canonical form, or FlowRejected listing every problem by field."""
    try:
        doc: FlowDocument = decode_flow(document)
    except FlowInvalid as exc:
        raise _rejected(exc.problems) from None
    problems = validate_flow(
        doc,
        queues=await repo.queue_ids(conn, subject.tenant_id),
        prompts=await repo.prompt_ids(conn, subject.tenant_id),
    )
    if problems:
        raise _rejected(problems)
    canonical: dict[str, Any] = msgspec.json.decode(encode_flow(doc))
    return canonical


async def _published(conn: asyncpg.Connection, row: asyncpg.Record) -> Any:
    if row["published_version"] is None:
        return None
    version = await repo.get_version(conn, row["tenant_id"], row["id"], row["published_version"])
    return None if version is None else version["document"]


def to_flow(row: asyncpg.Record) -> Flow:
    return Flow(
        id=row["id"],
        name=row["name"],
        draft=row["draft"],
        draft_updated_at=row["draft_updated_at"],
        published_version=row["published_version"],
        created_at=row["created_at"],
    )


def to_version(row: asyncpg.Record) -> FlowVersion:
    return FlowVersion(
        flow_id=row["flow_id"],
        version=row["version"],
        document=row["document"],
        published_at=row["published_at"],
        published_by=row["published_by"],
    )


async def create_flow(
    conn: asyncpg.Connection, subject: Subject, origin: Origin, data: FlowCreate
) -> Flow:
    require(subject, "flows:write")
    draft = await checked(conn, subject, data.document)
    flow_id = new_id()
    row = await repo.insert_flow(conn, subject.tenant_id, flow_id, data.name.strip(), draft)
    if row is None:
        raise Conflict("A flow with this name exists.", field="name")
    await _record_references(conn, subject, flow_id, draft)
    await enqueue(
        conn,
        ev.FlowCreated(tenant_id=subject.tenant_id, flow_id=flow_id, name=row["name"]),
        ev.codec,
    )
    await audit_by(conn, subject, origin, "flow.created", "flow", flow_id)
    return to_flow(row)


async def _get(
    conn: asyncpg.Connection, subject: Subject, flow_id: UUID, *, lock: bool = False
) -> asyncpg.Record:
    row = await repo.get_flow(conn, subject.tenant_id, flow_id, lock=lock)
    if row is None:
        raise NotFound("Flow not found.")
    return row


async def get_flow(conn: asyncpg.Connection, subject: Subject, flow_id: UUID) -> Flow:
    require(subject, "flows:read")
    return to_flow(await _get(conn, subject, flow_id))


async def list_flows(
    conn: asyncpg.Connection, subject: Subject, *, limit: int, after: UUID | None
) -> list[Flow]:
    require(subject, "flows:read")
    return [
        to_flow(r) for r in await repo.list_flows(conn, subject.tenant_id, limit=limit, after=after)
    ]


async def update_flow(
    conn: asyncpg.Connection, subject: Subject, origin: Origin, flow_id: UUID, data: FlowUpdate
) -> Flow:
    """Rename and/or replace the draft. Published versions are untouched."""
    require(subject, "flows:write")
    row = await _get(conn, subject, flow_id, lock=True)
    name = row["name"] if data.name is msgspec.UNSET else data.name.strip()
    if name.lower() != row["name"].lower() and await repo.name_taken(
        conn, subject.tenant_id, name, flow_id
    ):
        raise Conflict("A flow with this name exists.", field="name")
    draft_changed = data.document is not msgspec.UNSET
    draft = await checked(conn, subject, data.document) if draft_changed else row["draft"]
    row = await repo.update_flow(
        conn, subject.tenant_id, flow_id, name=name, draft=draft, draft_changed=draft_changed
    )
    if draft_changed:
        await _record_references(conn, subject, flow_id, draft, await _published(conn, row))
    await enqueue(
        conn,
        ev.FlowDraftUpdated(tenant_id=subject.tenant_id, flow_id=flow_id, name=name),
        ev.codec,
    )
    await audit_by(conn, subject, origin, "flow.updated", "flow", flow_id)
    return to_flow(row)


async def publish(
    conn: asyncpg.Connection, subject: Subject, origin: Origin, flow_id: UUID
) -> FlowVersion:
    """Freeze the current draft as the next version; numbers on this flow take it at once.
    The draft is checked again: a queue or prompt it names may have gone since it was saved."""
    require(subject, "flows:write")
    row = await _get(conn, subject, flow_id, lock=True)
    document = await checked(conn, subject, row["draft"])
    version = await repo.add_version(conn, subject.tenant_id, flow_id, document, subject.actor_id)
    await _record_references(conn, subject, flow_id, document)
    await enqueue(
        conn,
        ev.FlowPublished(tenant_id=subject.tenant_id, flow_id=flow_id, version=version["version"]),
        ev.codec,
    )
    await audit_by(
        conn, subject, origin, "flow.published", "flow", flow_id, version=version["version"]
    )
    return to_version(version)


async def list_versions(
    conn: asyncpg.Connection, subject: Subject, flow_id: UUID
) -> list[FlowVersion]:
    require(subject, "flows:read")
    await _get(conn, subject, flow_id)
    return [to_version(r) for r in await repo.list_versions(conn, subject.tenant_id, flow_id)]


async def get_version(
    conn: asyncpg.Connection, subject: Subject, flow_id: UUID, version: int
) -> FlowVersion:
    require(subject, "flows:read")
    row = await repo.get_version(conn, subject.tenant_id, flow_id, version)
    if row is None:
        raise NotFound("No such flow version.")
    return to_version(row)


async def delete_flow(
    conn: asyncpg.Connection, subject: Subject, origin: Origin, flow_id: UUID
) -> None:
    require(subject, "flows:write")
    await _get(conn, subject, flow_id, lock=True)
    routed = await repo.numbers_routed_to(conn, subject.tenant_id, flow_id)
    if routed:
        raise Conflict(f"Numbers still route to this flow: {', '.join(routed)}.")
    await repo.delete_flow(conn, subject.tenant_id, flow_id)
    await enqueue(conn, ev.FlowDeleted(tenant_id=subject.tenant_id, flow_id=flow_id), ev.codec)
    await audit_by(conn, subject, origin, "flow.deleted", "flow", flow_id)


async def route_number(
    conn: asyncpg.Connection,
    subject: Subject,
    origin: Origin,
    number_id: UUID,
    flow_id: UUID | None,
) -> Number:
    """Point a number at a flow's published version (or stop routing it with None)."""
    require(subject, "numbers:write")
    if flow_id is not None:
        flow = await repo.get_flow(conn, subject.tenant_id, flow_id)
        if flow is None:
            raise InvalidInput("No such flow in this tenant.", field="flow_id")
        if flow["published_version"] is None:
            raise InvalidInput("Publish the flow before routing numbers to it.", field="flow_id")
    row = await repo.route_number(conn, subject.tenant_id, number_id, flow_id)
    if row is None:
        raise NotFound("Number not found.")
    await enqueue(
        conn,
        number_events.NumberRouted(
            tenant_id=subject.tenant_id, number_id=number_id, e164=row["e164"], flow_id=flow_id
        ),
        number_events.codec,
    )
    await audit_by(
        conn,
        subject,
        origin,
        "number.routed",
        "number",
        number_id,
        flow_id=None if flow_id is None else str(flow_id),
    )
    return to_number(row)
