"""Prompts: upload WAV or MP3, or have text spoken; list, download, rename, delete.

The edge turns what was sent into 8 kHz mono PCM (media.audio) before any transaction opens,
then tenancy stores it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote
from uuid import UUID

import msgspec
from litestar import Response, delete, get, patch, post
from litestar.exceptions import ValidationException
from litestar.openapi.spec import (
    OpenAPIMediaType,
    OpenAPIType,
    Operation,
    RequestBody,
    Schema,
)
from litestar.params import Parameter

from api.context import (
    AnyRequest,
    Page,
    idempotent,
    list_page,
    transaction,
)
from api.controllers.tenant import _RESPONSES, After, IdempotencyKey, Limit, TenantScoped
from api.problems import ApiError, problem_spec
from media.audio import AudioError, PcmAudio, UnknownVoice, decode_to_pcm8k, render_tts, to_wav
from tenancy.errors import InvalidInput
from tenancy.models import Origin, Subject
from tenancy.prompts import service as prompts
from tenancy.prompts.models import (
    MAX_NAME,
    MAX_TEXT,
    VOICE_PATTERN,
    Prompt,
    PromptCreate,
    PromptUpdate,
    Source,
)

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
AUDIO_TYPES = frozenset({"audio/wav", "audio/x-wav", "audio/mpeg"})
_MAX_SECONDS = prompts.MAX_DURATION_MS // 1000
_CREATE_RESPONSES = {
    **_RESPONSES,
    415: problem_spec("The body is neither JSON nor audio/wav, audio/x-wav or audio/mpeg"),
}

UploadName = Annotated[
    str | None,
    Parameter(
        required=False,
        description="The prompt's name, for an audio upload (a JSON body carries its own).",
    ),
]


@dataclass
class _CreatePromptOperation(Operation):
    """The handler reads its body itself (JSON or audio), so say what it takes."""

    def __post_init__(self) -> None:
        tts = Schema(
            type=OpenAPIType.OBJECT,
            required=["name", "text"],
            properties={
                "name": Schema(type=OpenAPIType.STRING, min_length=1, max_length=MAX_NAME),
                "text": Schema(type=OpenAPIType.STRING, min_length=1, max_length=MAX_TEXT),
                "voice": Schema(type=OpenAPIType.STRING, pattern=VOICE_PATTERN, default="en-us"),
            },
            additional_properties=False,
        )
        audio = {
            media_type: OpenAPIMediaType(
                schema=Schema(type=OpenAPIType.STRING, content_media_type=media_type)
            )
            for media_type in sorted(AUDIO_TYPES)
        }
        self.request_body = RequestBody(
            required=True,
            content={"application/json": OpenAPIMediaType(schema=tts), **audio},
        )


def _media_type(request: AnyRequest) -> str:
    return request.headers.get("content-type", "").partition(";")[0].strip().lower()


def _tts_request(body: bytes) -> PromptCreate:
    """Decode the JSON body with the same problems litestar gives for a typed `data`."""
    try:
        return msgspec.json.decode(body, type=PromptCreate)
    except msgspec.ValidationError as exc:
        raise ValidationException(
            detail="Validation failed for POST /v1/prompts",
            extra=[{"message": str(exc), "key": "data", "source": "body"}],
        ) from None
    except msgspec.DecodeError:
        raise ValidationException(detail="Malformed JSON body") from None


async def _speak(data: PromptCreate) -> PcmAudio:
    try:
        return await render_tts(data.text, voice=data.voice, max_seconds=_MAX_SECONDS)
    except UnknownVoice as exc:
        raise InvalidInput(exc.message, field="voice") from None
    except AudioError as exc:
        raise InvalidInput(exc.message, field="text") from None


async def _decode(body: bytes) -> PcmAudio:
    try:
        return await asyncio.to_thread(decode_to_pcm8k, body, max_seconds=_MAX_SECONDS)
    except AudioError as exc:
        raise InvalidInput(exc.message, field="audio") from None


class PromptController(TenantScoped):
    path = "/v1/prompts"
    tags = ["prompts"]

    @post(
        "/",
        responses=_CREATE_RESPONSES,
        status_code=201,
        request_max_body_size=MAX_UPLOAD_BYTES,
        operation_class=_CreatePromptOperation,
        summary="Upload a prompt, or have text spoken",
        description=(
            "Either the audio file itself as the body, with `Content-Type: audio/wav`, "
            "`audio/x-wav` or `audio/mpeg` and the name in `?name=`; or JSON "
            '`{"name": ..., "text": ..., "voice": "en-us"}` to have the text spoken. WAV may '
            "hold PCM, μ-law or A-law at any rate. At most 10 MB and 10 minutes. The audio is "
            "stored as 8 kHz mono 16-bit PCM, what a call plays."
        ),
    )
    async def create_prompt(
        self,
        request: AnyRequest,
        subject: Subject,
        origin: Origin,
        name: UploadName = None,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[Prompt]:
        media_type = _media_type(request)
        source: Source
        tts_text: str | None = None
        tts_voice: str | None = None
        if media_type == "application/json":
            if name is not None:
                raise InvalidInput("With a JSON body, the name goes in the body.", field="name")
            data = prompts.check_tts(subject, _tts_request(await request.body()))
            pcm = await _speak(data)
            tts_text, tts_voice = data.text, data.voice
            prompt_name, source = data.name, "tts"
        elif media_type in AUDIO_TYPES:
            prompt_name = prompts.may_create(subject, name)
            pcm = await _decode(await request.body())
            source = "upload"
        else:
            raise ApiError(
                415,
                "unsupported-media-type",
                "Unsupported media type",
                "Send the audio as audio/wav, audio/x-wav or audio/mpeg, "
                "or JSON to have text spoken.",
            )
        return await idempotent(  # type: ignore[return-value]
            request,
            subject,
            lambda conn: prompts.create(
                conn,
                subject,
                origin,
                name=prompt_name,
                pcm_samples=pcm.samples,
                duration_ms=pcm.duration_ms,
                source=source,
                tts_text=tts_text,
                tts_voice=tts_voice,
            ),
        )

    @get("/", responses=_RESPONSES, summary="The tenant's prompts (metadata, never audio)")
    async def list_prompts(
        self, request: AnyRequest, subject: Subject, limit: Limit = 20, starting_after: After = None
    ) -> Page[Prompt]:
        return await list_page(request, subject, limit, starting_after, prompts.list_prompts)

    @get("/{prompt_id:uuid}", responses=_RESPONSES, summary="Get a prompt")
    async def get_prompt(self, request: AnyRequest, subject: Subject, prompt_id: UUID) -> Prompt:
        async with transaction(request, subject) as conn:
            return await prompts.get_prompt(conn, subject, prompt_id)

    @get(
        "/{prompt_id:uuid}/audio",
        responses=_RESPONSES,
        summary="Download a prompt's audio (WAV, 8 kHz mono 16-bit)",
        media_type="audio/wav",
    )
    async def get_audio(
        self, request: AnyRequest, subject: Subject, prompt_id: UUID
    ) -> Response[bytes]:
        async with transaction(request, subject) as conn:
            prompt, samples = await prompts.get_audio(conn, subject, prompt_id)
        wav = to_wav(PcmAudio(samples=samples, duration_ms=prompt.duration_ms))
        disposition = (
            f'attachment; filename="prompt-{prompt.id}.wav"; '
            f"filename*=UTF-8''{quote(prompt.name, safe='')}.wav"
        )
        return Response(wav, media_type="audio/wav", headers={"Content-Disposition": disposition})

    @patch("/{prompt_id:uuid}", responses=_RESPONSES, summary="Rename a prompt")
    async def update_prompt(
        self,
        request: AnyRequest,
        subject: Subject,
        origin: Origin,
        prompt_id: UUID,
        data: PromptUpdate,
    ) -> Prompt:
        async with transaction(request, subject) as conn:
            return await prompts.update_prompt(conn, subject, origin, prompt_id, data)

    @delete("/{prompt_id:uuid}", responses=_RESPONSES, summary="Delete a prompt")
    async def delete_prompt(
        self, request: AnyRequest, subject: Subject, origin: Origin, prompt_id: UUID
    ) -> None:
        async with transaction(request, subject) as conn:
            await prompts.delete_prompt(conn, subject, origin, prompt_id)
