"""Prompts: upload WAV or MP3 or have text spoken, stored as 8 kHz mono PCM; download as WAV;
rename; delete; bad audio refused with a reason and nothing stored; other tenants see nothing."""

from __future__ import annotations

import io
import itertools
import struct
import wave
from typing import Any

import asyncpg
import msgspec
import pytest

from tests.conftest import Api
from tests.media import encoded, sine_wav, ulaw_wav


def _upload(
    api: Api,
    who: dict[str, Any],
    name: str | None,
    body: bytes,
    content_type: str = "audio/wav",
    **headers: str,
) -> Any:
    return api.client.post(
        "/v1/prompts",
        params={} if name is None else {"name": name},
        content=body,
        headers={**who["auth"], "Content-Type": content_type, **headers},
    )


def _speak(api: Api, who: dict[str, Any], body: dict[str, Any]) -> Any:
    return api.client.post("/v1/prompts", json=body, headers=who["auth"])


def _wav_params_and_samples(wav: bytes) -> tuple[tuple[int, int, int], list[int]]:
    with wave.open(io.BytesIO(wav)) as w:
        params = (w.getframerate(), w.getnchannels(), w.getsampwidth())
        frames = w.readframes(w.getnframes())
    return params, list(struct.unpack(f"<{len(frames) // 2}h", frames))


def _crossings_per_second(samples: list[int]) -> float:
    middle = samples[400:-400]
    crossings = sum(1 for a, b in itertools.pairwise(middle) if (a < 0) != (b < 0))
    return crossings * 8000 / len(middle)


async def _rows(admin_conn: asyncpg.Connection) -> list[dict[str, Any]]:
    return [dict(r) for r in await admin_conn.fetch("select * from prompts order by id")]


async def _prompt_events(admin_conn: asyncpg.Connection) -> int:
    count: int = await admin_conn.fetchval(
        "select count(*) from outbox where subject like '%.prompt.%'"
    )
    return count


def _assert_problem(r: Any, status: int, field: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem: dict[str, Any] = r.json()
    if field is not None:
        assert [e["field"] for e in problem["errors"]] == [field], problem
    return problem


async def test_uploaded_wav_and_mp3_are_stored_as_8k_mono_pcm_of_their_length(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    # 16 kHz stereo, 1.5 s: 96 kB, over the API's usual body limit in tests (64 kB).
    r = await _upload(api, owner, "Welcome", sine_wav(16000, 2, 1.5))
    assert r.status_code == 201, r.text
    wav_prompt = r.json()
    assert wav_prompt["name"] == "Welcome"
    assert wav_prompt["source"] == "upload"
    assert (wav_prompt["tts_text"], wav_prompt["tts_voice"]) == (None, None)
    assert wav_prompt["duration_ms"] == pytest.approx(1500, abs=20)
    assert wav_prompt["size_bytes"] == pytest.approx(1500 * 16, abs=20 * 16)

    r = await _upload(
        api, owner, "Closed", encoded("mp3", "mp3", 44100, 2.0, layout="stereo"), "audio/mpeg"
    )
    assert r.status_code == 201, r.text
    mp3_prompt = r.json()
    assert mp3_prompt["duration_ms"] == pytest.approx(2000, abs=20)

    rows = {r["name"]: r for r in await _rows(admin_conn)}
    for prompt in (wav_prompt, mp3_prompt):
        row = rows[prompt["name"]]
        assert len(row["audio"]) == row["size_bytes"] == prompt["size_bytes"]
        assert row["duration_ms"] == prompt["duration_ms"]
        # The stored PCM is still the 1 kHz tone that was sent.
        samples = list(struct.unpack(f"<{len(row['audio']) // 2}h", row["audio"]))
        assert _crossings_per_second(samples) == pytest.approx(2000, rel=0.02)

    r = await api.client.get("/v1/prompts", headers=owner["auth"])
    assert r.status_code == 200
    listed = r.json()
    assert {p["name"] for p in listed["data"]} == {"Welcome", "Closed"}
    assert listed["has_more"] is False
    assert all("audio" not in p for p in listed["data"])
    r = await api.client.get(f"/v1/prompts/{wav_prompt['id']}", headers=owner["auth"])
    assert r.json() == wav_prompt


async def test_a_prompt_downloads_as_a_wav_of_the_stored_audio(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    prompt = (await _upload(api, owner, "Après-midi", ulaw_wav(8000, 1.0))).json()
    r = await api.client.get(f"/v1/prompts/{prompt['id']}/audio", headers=owner["auth"])
    assert r.status_code == 200
    assert r.headers["content-type"] == "audio/wav"
    disposition = r.headers["content-disposition"]
    assert disposition.startswith("attachment;")
    assert "filename*=UTF-8''Apr%C3%A8s-midi.wav" in disposition
    params, samples = _wav_params_and_samples(r.content)
    assert params == (8000, 1, 2)
    assert len(samples) == 8000
    stored = await admin_conn.fetchval("select audio from prompts")
    assert struct.pack(f"<{len(samples)}h", *samples) == stored
    assert _crossings_per_second(samples) == pytest.approx(2000, rel=0.02)


async def test_a_prompt_spoken_from_text_keeps_its_text_and_voice(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    r = await _speak(api, owner, {"name": "Greeting", "text": "  Thanks for calling Acme.  "})
    assert r.status_code == 201, r.text
    prompt = r.json()
    assert prompt["source"] == "tts"
    assert prompt["tts_text"] == "Thanks for calling Acme."
    assert prompt["tts_voice"] == "en-us"
    assert 500 < prompt["duration_ms"] < 10_000
    r = await _speak(
        api, owner, {"name": "Bonjour", "text": "Merci de votre appel.", "voice": "fr"}
    )
    assert r.status_code == 201, r.text
    assert r.json()["tts_voice"] == "fr"
    r = await api.client.get(f"/v1/prompts/{prompt['id']}/audio", headers=owner["auth"])
    params, samples = _wav_params_and_samples(r.content)
    assert params == (8000, 1, 2)
    assert len(samples) == pytest.approx(prompt["duration_ms"] * 8, abs=8)
    assert max(abs(s) for s in samples) > 1000  # speech, not silence
    assert await admin_conn.fetchval("select count(*) from prompts where source = 'tts'") == 2


async def test_a_corrupt_or_foreign_upload_is_a_422_about_the_audio_and_stores_nothing(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    assert (await _upload(api, owner, "Keep", sine_wav(8000, 1, 0.3))).status_code == 201
    rows, events = await _rows(admin_conn), await _prompt_events(admin_conn)
    good = sine_wav(16000, 1, 0.5)
    for body, content_type, reason in [
        (b"this is not audio" * 50, "audio/wav", "not a WAV or MP3"),
        (good[:30], "audio/wav", "not a WAV or MP3"),
        (good[:44], "audio/x-wav", "length is zero"),
        (b"", "audio/wav", "empty"),
        (bytes(range(256)) * 20, "audio/mpeg", "not a WAV or MP3"),
        (encoded("flac", "flac", 16000, 0.5), "audio/wav", "FLAC files are not supported"),
        (encoded("ogg", "libopus", 48000, 0.5), "audio/mpeg", "Ogg files are not supported"),
        (encoded("wav", "mp3", 16000, 0.5), "audio/wav", "WAV files must hold PCM"),
    ]:
        r = await _upload(api, owner, "Broken", body, content_type)
        problem = _assert_problem(r, 422, "audio")
        assert reason in problem["detail"], (reason, problem)
    assert await _rows(admin_conn) == rows
    assert await _prompt_events(admin_conn) == events


async def test_an_unsupported_content_type_is_a_415_and_stores_nothing(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    wav = sine_wav(8000, 1, 0.3)
    for content_type in ("audio/ogg", "text/plain", "application/octet-stream", "audio/flac"):
        r = await _upload(api, owner, "Welcome", wav, content_type)
        problem = _assert_problem(r, 415)
        assert problem["code"] == "unsupported-media-type"
    r = await api.client.post(
        "/v1/prompts",
        files={"file": ("welcome.wav", wav, "audio/wav")},
        params={"name": "Welcome"},
        headers=owner["auth"],
    )
    _assert_problem(r, 415)
    assert await _rows(admin_conn) == []
    assert await _prompt_events(admin_conn) == 0
    # The content type's parameters and case do not matter.
    r = await _upload(api, owner, "Welcome", wav, "Audio/WAV; codecs=1")
    assert r.status_code == 201, r.text


async def test_ten_minutes_is_the_longest_prompt_and_10_mb_the_largest_upload(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    # μ-law at 8 kHz: one byte a sample, so ten minutes is 4.8 MB.
    r = await _upload(api, owner, "Just long enough", ulaw_wav(8000, 600))
    assert r.status_code == 201, r.text
    assert r.json()["duration_ms"] == 600_000
    rows = await _rows(admin_conn)
    r = await _upload(api, owner, "Too long", ulaw_wav(8000, 601))
    problem = _assert_problem(r, 422, "audio")
    assert "longer than 600 seconds" in problem["detail"]
    r = await _upload(api, owner, "Too big", sine_wav(8000, 1, 0.1) + bytes(10 * 1024 * 1024))
    assert _assert_problem(r, 413)["code"] == "payload-too-large"
    assert await _rows(admin_conn) == rows


async def test_bad_names_and_bad_text_requests_are_422_naming_the_field(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    wav = sine_wav(8000, 1, 0.3)
    _assert_problem(await _upload(api, owner, None, wav), 422, "name")
    _assert_problem(await _upload(api, owner, "   ", wav), 422, "name")
    _assert_problem(await _upload(api, owner, "x" * 201, wav), 422, "name")
    _assert_problem(await _upload(api, owner, "bell\x07", wav), 422, "name")
    for body, field in [
        ({"text": "Hello"}, "name"),
        ({"name": "Hi"}, "text"),
        ({"name": "Hi", "text": "   "}, "text"),
        ({"name": "", "text": "Hello"}, "name"),
        ({"name": "Hi", "text": "x" * 5001}, "text"),
        ({"name": "Hi", "text": "Hello", "voice": "--stdin"}, "voice"),
        ({"name": "Hi", "text": "Hello", "voice": "xx-nowhere"}, "voice"),
        ({"name": "Hi", "text": "Hello", "speed": 2}, "speed"),
        ({"name": "Hi", "text": 5}, "text"),
    ]:
        _assert_problem(await _speak(api, owner, body), 422, field)
    r = await api.client.post(
        "/v1/prompts",
        params={"name": "Hi"},
        json={"name": "Hi", "text": "Hello"},
        headers=owner["auth"],
    )
    _assert_problem(r, 422, "name")
    r = await api.client.post(
        "/v1/prompts",
        content=b'{"name": "Hi", "text": ',
        headers={**owner["auth"], "Content-Type": "application/json"},
    )
    assert _assert_problem(r, 400)["code"] == "malformed-json"
    assert await _rows(admin_conn) == []
    assert await _prompt_events(admin_conn) == 0


async def test_names_are_unique_per_tenant_whatever_their_case(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    a = await api.signup_verified("a@a.test", "A")
    b = await api.signup_verified("b@b.test", "B")
    wav = sine_wav(8000, 1, 0.3)
    first = (await _upload(api, a, "Welcome", wav)).json()
    second = (await _upload(api, a, "Closed", wav)).json()
    rows = await _rows(admin_conn)
    _assert_problem(await _upload(api, a, "welcome ", wav), 409, "name")
    _assert_problem(await _speak(api, a, {"name": "WELCOME", "text": "Hello"}), 409, "name")
    r = await api.client.patch(
        f"/v1/prompts/{second['id']}", json={"name": "Welcome"}, headers=a["auth"]
    )
    _assert_problem(r, 409, "name")
    assert await _rows(admin_conn) == rows
    # Another tenant may use the same name.
    assert (await _upload(api, b, "Welcome", wav)).status_code == 201
    # A rename to a free name, or to another case of its own name, is fine.
    r = await api.client.patch(
        f"/v1/prompts/{first['id']}", json={"name": "WELCOME"}, headers=a["auth"]
    )
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "WELCOME"
    assert r.json()["updated_at"] > first["updated_at"]
    r = await api.client.patch(
        f"/v1/prompts/{second['id']}", json={"name": "Closed for the night"}, headers=a["auth"]
    )
    assert r.json()["name"] == "Closed for the night"
    _assert_problem(
        await api.client.patch(f"/v1/prompts/{second['id']}", json={"name": ""}, headers=a["auth"]),
        422,
        "name",
    )
    # Renaming keeps the audio.
    before_audio = {str(r["id"]): r["audio"] for r in rows}
    after_audio = {str(r["id"]): r["audio"] for r in await _rows(admin_conn)}
    assert after_audio[second["id"]] == before_audio[second["id"]]


async def test_a_deleted_prompt_is_gone(api: Api, admin_conn: asyncpg.Connection) -> None:
    owner = await api.signup_verified("owner@acme.test")
    prompt = (await _upload(api, owner, "Welcome", sine_wav(8000, 1, 0.3))).json()
    r = await api.client.delete(f"/v1/prompts/{prompt['id']}", headers=owner["auth"])
    assert r.status_code == 204
    for path in (f"/v1/prompts/{prompt['id']}", f"/v1/prompts/{prompt['id']}/audio"):
        _assert_problem(await api.client.get(path, headers=owner["auth"]), 404)
    _assert_problem(
        await api.client.delete(f"/v1/prompts/{prompt['id']}", headers=owner["auth"]), 404
    )
    assert await _rows(admin_conn) == []
    # Its name is free again.
    assert (await _upload(api, owner, "Welcome", sine_wav(8000, 1, 0.3))).status_code == 201


async def test_prompt_events_name_the_prompt_and_never_carry_audio(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    from tenancy.prompts.events import PromptCreated, codec

    owner = await api.signup_verified("owner@acme.test")
    prompt = (await _upload(api, owner, "Welcome", sine_wav(8000, 1, 0.5))).json()
    await api.client.patch(
        f"/v1/prompts/{prompt['id']}", json={"name": "Hello"}, headers=owner["auth"]
    )
    await api.client.patch(
        f"/v1/prompts/{prompt['id']}", json={"name": "Hello"}, headers=owner["auth"]
    )  # no change, no event
    await api.client.delete(f"/v1/prompts/{prompt['id']}", headers=owner["auth"])
    rows = await admin_conn.fetch(
        "select subject, payload from outbox where subject like '%.prompt.%' order by id"
    )
    prefix = f"tenant.{owner['tenant_id']}.prompt.{prompt['id']}"
    assert [r["subject"] for r in rows] == [
        f"{prefix}.created",
        f"{prefix}.updated",
        f"{prefix}.deleted",
    ]
    payloads = [msgspec.json.decode(r["payload"]) for r in rows]
    assert [p["type"] for p in payloads] == ["prompt.created", "prompt.updated", "prompt.deleted"]
    assert [p["name"] for p in payloads] == ["Welcome", "Hello", "Hello"]
    assert all(
        len(r["payload"]) < 1000 and "audio" not in p for r, p in zip(rows, payloads, strict=True)
    )
    created = codec.decode(rows[0]["payload"])
    assert isinstance(created, PromptCreated)
    assert (created.source, created.duration_ms) == ("upload", 500)
    actions = [
        r["action"]
        for r in await admin_conn.fetch(
            "select action from audit_log where target_type = 'prompt' order by at"
        )
    ]
    assert actions == ["prompt.created", "prompt.updated", "prompt.deleted"]


async def test_a_retried_upload_with_the_same_idempotency_key_stores_one_prompt(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    wav = sine_wav(8000, 1, 0.3)
    first = await _upload(api, owner, "Welcome", wav, **{"Idempotency-Key": "up-1"})
    again = await _upload(api, owner, "Welcome", wav, **{"Idempotency-Key": "up-1"})
    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert first.json() == again.json()
    assert len(await _rows(admin_conn)) == 1


async def test_prompts_page_with_a_cursor(api: Api) -> None:
    owner = await api.signup_verified("owner@acme.test")
    wav = sine_wav(8000, 1, 0.1)
    for name in ("one", "two", "three"):
        assert (await _upload(api, owner, name, wav)).status_code == 201
    r = await api.client.get("/v1/prompts", params={"limit": 2}, headers=owner["auth"])
    page = r.json()
    assert len(page["data"]) == 2
    assert page["has_more"] is True
    r = await api.client.get(
        "/v1/prompts",
        params={"limit": 2, "starting_after": page["data"][-1]["id"]},
        headers=owner["auth"],
    )
    rest = r.json()
    assert (len(rest["data"]), rest["has_more"]) == (1, False)
    names = {p["name"] for p in page["data"] + rest["data"]}
    assert names == {"one", "two", "three"}
    _assert_problem(
        await api.client.get("/v1/prompts", params={"limit": 0}, headers=owner["auth"]), 422
    )


async def test_a_read_only_key_can_list_and_download_but_not_upload(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    prompt = (await _upload(api, owner, "Welcome", sine_wav(8000, 1, 0.3))).json()
    r = await api.client.post(
        "/v1/api-keys", json={"name": "player", "scopes": ["prompts:read"]}, headers=owner["auth"]
    )
    reader = {"auth": {"Authorization": f"Bearer {r.json()['secret']}"}}
    r = await api.client.get(f"/v1/prompts/{prompt['id']}/audio", headers=reader["auth"])
    assert r.status_code == 200
    assert (await api.client.get("/v1/prompts", headers=reader["auth"])).status_code == 200
    rows = await _rows(admin_conn)
    _assert_problem(await _upload(api, reader, "Mine", sine_wav(8000, 1, 0.3)), 403)
    _assert_problem(await _speak(api, reader, {"name": "Mine", "text": "Hi"}), 403)
    r = await api.client.patch(
        f"/v1/prompts/{prompt['id']}", json={"name": "Mine"}, headers=reader["auth"]
    )
    _assert_problem(r, 403)
    _assert_problem(
        await api.client.delete(f"/v1/prompts/{prompt['id']}", headers=reader["auth"]), 403
    )
    assert await _rows(admin_conn) == rows


async def test_another_tenants_prompts_are_404_and_unchanged(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    a = await api.signup_verified("a@a.test", "A")
    b = await api.signup_verified("b@b.test", "B")
    prompt = (await _upload(api, a, "Welcome", sine_wav(8000, 1, 0.3))).json()
    before = await _rows(admin_conn)
    events = await _prompt_events(admin_conn)
    for method, path, body in [
        ("GET", f"/v1/prompts/{prompt['id']}", None),
        ("GET", f"/v1/prompts/{prompt['id']}/audio", None),
        ("PATCH", f"/v1/prompts/{prompt['id']}", {"name": "Mine now"}),
        ("DELETE", f"/v1/prompts/{prompt['id']}", None),
    ]:
        r = await api.client.request(method, path, json=body, headers=b["auth"])
        _assert_problem(r, 404)
    assert (await api.client.get("/v1/prompts", headers=b["auth"])).json()["data"] == []
    assert await _rows(admin_conn) == before
    assert await _prompt_events(admin_conn) == events
    # A's prompt still plays for A.
    r = await api.client.get(f"/v1/prompts/{prompt['id']}/audio", headers=a["auth"])
    assert r.status_code == 200


async def test_the_api_schema_shows_both_ways_to_create_a_prompt(api: Api) -> None:
    spec = (await api.client.get("/schema/openapi.json")).json()
    create = spec["paths"]["/v1/prompts"]["post"]
    content = create["requestBody"]["content"]
    assert set(content) == {"application/json", "audio/wav", "audio/x-wav", "audio/mpeg"}
    assert content["application/json"]["schema"]["required"] == ["name", "text"]
    assert "name" in {p["name"] for p in create["parameters"]}
    assert "415" in create["responses"]
    download = spec["paths"]["/v1/prompts/{prompt_id}/audio"]["get"]
    assert "audio/wav" in download["responses"]["200"]["content"]
