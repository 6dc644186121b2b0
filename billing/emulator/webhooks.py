"""Signed webhook delivery: one background task sends events in the order they happened,
retrying a failed delivery with a short backoff before giving up on it."""

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import httpx

log = logging.getLogger(__name__)

RETRY_DELAYS: tuple[float, ...] = (0.2, 0.5, 1.0, 2.0, 4.0)


def sign_payload(payload: bytes, secret: str, timestamp: int) -> str:
    """The `Stripe-Signature` header value for a payload, as Stripe computes it."""
    signed = f"{timestamp}.".encode() + payload
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def encode_event(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


class WebhookSender:
    def __init__(self, secret: str, retry_delays: Sequence[float] = RETRY_DELAYS) -> None:
        self.secret = secret
        self.retry_delays = tuple(retry_delays)
        self.delivered = 0
        self.dropped = 0
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None

    def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=10.0)
        self._task = asyncio.create_task(self._run(), name="stripe-emulator-webhooks")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def send(self, url: str, event: dict[str, Any]) -> None:
        """Queue an event; never waits, so the request that caused it is not held up."""
        self._queue.put_nowait((url, encode_event(event)))

    async def _run(self) -> None:
        while True:
            url, payload = await self._queue.get()
            try:
                await self._deliver(url, payload)
            except Exception:  # one bad event must not stop later deliveries
                log.exception("webhook delivery failed unexpectedly")
            finally:
                self._queue.task_done()

    async def _deliver(self, url: str, payload: bytes) -> None:
        assert self._client is not None
        problem = ""
        for attempt in range(len(self.retry_delays) + 1):
            if attempt:
                await asyncio.sleep(self.retry_delays[attempt - 1])
            headers = {
                "Content-Type": "application/json",
                "Stripe-Signature": sign_payload(payload, self.secret, int(time.time())),
            }
            try:
                response = await self._client.post(url, content=payload, headers=headers)
            except httpx.HTTPError as exc:
                problem = repr(exc)
                continue
            if 200 <= response.status_code < 300:
                self.delivered += 1
                return
            problem = f"HTTP {response.status_code}"
        self.dropped += 1
        log.warning("webhook to %s dropped after %d tries: %s", url, attempt + 1, problem)
