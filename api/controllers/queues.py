"""Skills, agents' skill levels, queues and queue members."""

from __future__ import annotations

from uuid import UUID

from litestar import Response, delete, get, patch, post, put

from api.context import (
    AnyRequest,
    Page,
    idempotent,
    list_page,
    transaction,
)
from api.controllers.tenant import _RESPONSES, After, IdempotencyKey, Limit, TenantScoped
from tenancy.models import Origin, Subject
from tenancy.queues import service as queues
from tenancy.queues.models import (
    AgentSkills,
    AgentSkillsReplace,
    Queue,
    QueueCreate,
    QueueMembers,
    QueueMembersReplace,
    QueueUpdate,
    Skill,
    SkillCreate,
    SkillUpdate,
)


class SkillController(TenantScoped):
    path = "/v1/skills"
    tags = ["skills"]

    @post("/", responses=_RESPONSES, summary="Define a skill", status_code=201)
    async def create_skill(
        self,
        request: AnyRequest,
        subject: Subject,
        origin: Origin,
        data: SkillCreate,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[Skill]:
        return await idempotent(  # type: ignore[return-value]
            request, subject, lambda conn: queues.create_skill(conn, subject, origin, data)
        )

    @get("/", responses=_RESPONSES, summary="The tenant's skills")
    async def list_skills(
        self, request: AnyRequest, subject: Subject, limit: Limit = 20, starting_after: After = None
    ) -> Page[Skill]:
        return await list_page(request, subject, limit, starting_after, queues.list_skills)

    @get("/{skill_id:uuid}", responses=_RESPONSES, summary="Get a skill")
    async def get_skill(self, request: AnyRequest, subject: Subject, skill_id: UUID) -> Skill:
        async with transaction(request, subject) as conn:
            return await queues.get_skill(conn, subject, skill_id)

    @patch("/{skill_id:uuid}", responses=_RESPONSES, summary="Rename a skill")
    async def update_skill(
        self,
        request: AnyRequest,
        subject: Subject,
        origin: Origin,
        skill_id: UUID,
        data: SkillUpdate,
    ) -> Skill:
        async with transaction(request, subject) as conn:
            return await queues.update_skill(conn, subject, origin, skill_id, data)

    @delete(
        "/{skill_id:uuid}",
        responses=_RESPONSES,
        summary="Delete a skill (refused while a queue requires it; agents lose it)",
    )
    async def delete_skill(
        self, request: AnyRequest, subject: Subject, origin: Origin, skill_id: UUID
    ) -> None:
        async with transaction(request, subject) as conn:
            await queues.delete_skill(conn, subject, origin, skill_id)


class AgentSkillController(TenantScoped):
    path = "/v1/users"
    tags = ["skills"]

    @get("/{user_id:uuid}/skills", responses=_RESPONSES, summary="A user's skills and levels")
    async def get_skills(self, request: AnyRequest, subject: Subject, user_id: UUID) -> AgentSkills:
        async with transaction(request, subject) as conn:
            return await queues.get_agent_skills(conn, subject, user_id)

    @put(
        "/{user_id:uuid}/skills",
        responses=_RESPONSES,
        summary="Replace a user's skills and levels (skills left out are taken away)",
    )
    async def replace_skills(
        self,
        request: AnyRequest,
        subject: Subject,
        origin: Origin,
        user_id: UUID,
        data: AgentSkillsReplace,
    ) -> AgentSkills:
        async with transaction(request, subject) as conn:
            return await queues.replace_agent_skills(conn, subject, origin, user_id, data)


class QueueController(TenantScoped):
    path = "/v1/queues"
    tags = ["queues"]

    @post("/", responses=_RESPONSES, summary="Create a queue (within the plan)", status_code=201)
    async def create_queue(
        self,
        request: AnyRequest,
        subject: Subject,
        origin: Origin,
        data: QueueCreate,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[Queue]:
        return await idempotent(  # type: ignore[return-value]
            request, subject, lambda conn: queues.create_queue(conn, subject, origin, data)
        )

    @get("/", responses=_RESPONSES, summary="The tenant's queues")
    async def list_queues(
        self, request: AnyRequest, subject: Subject, limit: Limit = 20, starting_after: After = None
    ) -> Page[Queue]:
        return await list_page(request, subject, limit, starting_after, queues.list_queues)

    @get("/{queue_id:uuid}", responses=_RESPONSES, summary="Get a queue")
    async def get_queue(self, request: AnyRequest, subject: Subject, queue_id: UUID) -> Queue:
        async with transaction(request, subject) as conn:
            return await queues.get_queue(conn, subject, queue_id)

    @patch(
        "/{queue_id:uuid}",
        responses=_RESPONSES,
        summary="Change a queue (required_skills, if sent, replaces the whole list)",
    )
    async def update_queue(
        self,
        request: AnyRequest,
        subject: Subject,
        origin: Origin,
        queue_id: UUID,
        data: QueueUpdate,
    ) -> Queue:
        async with transaction(request, subject) as conn:
            return await queues.update_queue(conn, subject, origin, queue_id, data)

    @delete(
        "/{queue_id:uuid}",
        responses=_RESPONSES,
        summary="Delete a queue and its memberships (refused while another queue overflows to it)",
    )
    async def delete_queue(
        self, request: AnyRequest, subject: Subject, origin: Origin, queue_id: UUID
    ) -> None:
        async with transaction(request, subject) as conn:
            await queues.delete_queue(conn, subject, origin, queue_id)

    @get("/{queue_id:uuid}/members", responses=_RESPONSES, summary="A queue's members")
    async def get_members(
        self, request: AnyRequest, subject: Subject, queue_id: UUID
    ) -> QueueMembers:
        async with transaction(request, subject) as conn:
            return await queues.get_members(conn, subject, queue_id)

    @put(
        "/{queue_id:uuid}/members",
        responses=_RESPONSES,
        summary="Replace a queue's members (users left out leave the queue)",
    )
    async def replace_members(
        self,
        request: AnyRequest,
        subject: Subject,
        origin: Origin,
        queue_id: UUID,
        data: QueueMembersReplace,
    ) -> QueueMembers:
        async with transaction(request, subject) as conn:
            return await queues.replace_members(conn, subject, origin, queue_id, data)
