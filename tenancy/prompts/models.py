from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

import msgspec

from tenancy.models import _In

Source = Literal["upload", "tts"]
MAX_NAME = 200
MAX_TEXT = 5000
VOICE_PATTERN = r"^[a-z]{2,3}(-[a-z0-9]{1,8}){0,3}(\+[a-z0-9]{1,16})?$"
PromptName = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME)]
Voice = Annotated[
    str,
    msgspec.Meta(
        pattern=VOICE_PATTERN,
        max_length=64,
        description="An espeak-ng voice, e.g. en-us, en-gb, de, fr, es-419, en-us+f3",
        examples=["en-us"],
    ),
]


class Prompt(msgspec.Struct, kw_only=True):
    """A prompt's metadata. The audio itself is at `GET /v1/prompts/{id}/audio`."""

    id: UUID
    name: str
    source: Source
    tts_text: str | None
    tts_voice: str | None
    duration_ms: int
    size_bytes: int
    """Of the stored audio: 8 kHz mono 16-bit PCM, 16 bytes a millisecond."""
    created_at: datetime
    updated_at: datetime


class PromptCreate(_In):
    """A prompt spoken from text. (An upload sends the audio file itself as the body.)"""

    name: PromptName
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TEXT)]
    voice: Voice = "en-us"


class PromptUpdate(_In):
    name: PromptName | msgspec.UnsetType = msgspec.UNSET
