"""Voicemail: list the messages callers left, play one (WAV), mark it listened, delete it.
And the secret that signs the tenant's flow HTTP lookups, for the endpoint that checks them.

Recordings are encrypted at rest; the audio endpoint decrypts one in memory with the tenant's
recording key and answers WAV. Nothing is ever written in the clear."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated
from uuid import UUID

import msgspec
from litestar import Response, delete, get, post
from litestar.params import Parameter

from api.context import AnyRequest, Page, deps_of, list_page, transaction
from api.controllers.tenant import _RESPONSES, After, Limit, TenantScoped
from api.problems import ApiError, problem_spec
from media.audio import to_wav
from media.node import recording_aad
from media.recorder import RecordingError, read_recording
from tenancy import media as catalog
from tenancy.models import Origin, Subject
from tenancy.voicemail import service as voicemails
from tenancy.voicemail.models import MAX_MAILBOX, Voicemail, VoicemailQuery

log = logging.getLogger(__name__)

MailboxFilter = Annotated[
    str | None,
    Parameter(
        min_length=1, max_length=MAX_MAILBOX, description="Only messages left in this mailbox"
    ),
]
QueueFilter = Annotated[UUID | None, Parameter(description="Only messages left for this queue")]
ListenedFilter = Annotated[
    bool | None, Parameter(description="true: only listened messages; false: only new ones")
]
_AUDIO_RESPONSES = {
    **_RESPONSES,
    410: problem_spec("The message's recording is no longer stored"),
    500: problem_spec("The recording could not be decrypted"),
}


class LookupSecret(msgspec.Struct, kw_only=True):
    secret: str
    """`whsec_` then the key in base64. Verify `webhook-signature` (`v1,<base64 HMAC-SHA256>` of
    `<webhook-id>.<webhook-timestamp>.<body>`) with the decoded key."""


class VoicemailController(TenantScoped):
    path = "/v1/voicemails"
    tags = ["voicemail"]

    @get(
        "/",
        responses=_RESPONSES,
        summary="Messages callers left, oldest first; by mailbox, queue or listened",
    )
    async def list_voicemails(
        self,
        request: AnyRequest,
        subject: Subject,
        mailbox: MailboxFilter = None,
        queue_id: QueueFilter = None,
        listened: ListenedFilter = None,
        limit: Limit = 20,
        starting_after: After = None,
    ) -> Page[Voicemail]:
        query = VoicemailQuery(mailbox=mailbox, queue_id=queue_id, listened=listened)
        return await list_page(
            request,
            subject,
            limit,
            starting_after,
            lambda conn, subject, **page: voicemails.list_voicemails(conn, subject, query, **page),
        )

    @get("/{voicemail_id:uuid}", responses=_RESPONSES, summary="Get a voicemail")
    async def get_voicemail(
        self, request: AnyRequest, subject: Subject, voicemail_id: UUID
    ) -> Voicemail:
        async with transaction(request, subject) as conn:
            return await voicemails.get_voicemail(conn, subject, voicemail_id)

    @get(
        "/{voicemail_id:uuid}/audio",
        responses=_AUDIO_RESPONSES,
        summary="Play a voicemail (WAV, 8 kHz mono 16-bit)",
        media_type="audio/wav",
    )
    async def get_audio(
        self, request: AnyRequest, subject: Subject, voicemail_id: UUID
    ) -> Response[bytes]:
        async with transaction(request, subject) as conn:
            voicemail, path = await voicemails.recording(conn, subject, voicemail_id)
            key = await catalog.recording_key(conn, deps_of(request).vault, subject.tenant_id)
        aad = recording_aad(subject.tenant_id, voicemail.id)
        try:
            audio = await asyncio.to_thread(read_recording, path, key, aad)
        except FileNotFoundError:
            raise ApiError(
                410, "recording-gone", "Recording gone", "This message's recording is not stored."
            ) from None
        except RecordingError:
            log.exception("voicemail %s cannot be read from %s", voicemail.id, path)
            raise ApiError(
                500,
                "recording-unreadable",
                "Recording unreadable",
                "This message's recording could not be decrypted.",
            ) from None
        return Response(
            to_wav(audio),
            media_type="audio/wav",
            headers={
                "Content-Disposition": f'attachment; filename="voicemail-{voicemail.id}.wav"',
                "Cache-Control": "private, no-store",
            },
        )

    @post(
        "/{voicemail_id:uuid}/listened",
        responses=_RESPONSES,
        status_code=200,
        summary="Mark a voicemail listened (again: keeps the first time)",
    )
    async def mark_listened(
        self, request: AnyRequest, subject: Subject, origin: Origin, voicemail_id: UUID
    ) -> Voicemail:
        async with transaction(request, subject) as conn:
            return await voicemails.mark_listened(conn, subject, origin, voicemail_id)

    @delete(
        "/{voicemail_id:uuid}", responses=_RESPONSES, summary="Delete a voicemail and its audio"
    )
    async def delete_voicemail(
        self, request: AnyRequest, subject: Subject, origin: Origin, voicemail_id: UUID
    ) -> None:
        async with transaction(request, subject) as conn:
            path = await voicemails.delete_voicemail(conn, subject, origin, voicemail_id)
        # Only once the row is gone for good: a rolled-back delete keeps its audio.
        await asyncio.to_thread(_remove, path)


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        log.exception("could not remove the recording of a deleted voicemail: %s", path)


class IntegrationController(TenantScoped):
    path = "/v1/integrations"
    tags = ["integrations"]

    @get(
        "/lookup-secret",
        responses=_RESPONSES,
        summary="The secret that signs the flows' HTTP lookups (owners and admins)",
        description=(
            "A flow's http_lookup node POSTs JSON to the tenant's endpoint with Standard "
            "Webhooks headers: `webhook-id`, `webhook-timestamp` and `webhook-signature` "
            "(`v1,` then the base64 HMAC-SHA256 of `<id>.<timestamp>.<body>` under this key). "
            "Every read is written to the audit log."
        ),
    )
    async def lookup_secret(
        self, request: AnyRequest, subject: Subject, origin: Origin
    ) -> Response[LookupSecret]:
        async with transaction(request, subject) as conn:
            secret = await catalog.reveal_lookup_secret(
                conn, subject, origin, deps_of(request).vault
            )
        return Response(LookupSecret(secret=secret), headers={"Cache-Control": "no-store"})
