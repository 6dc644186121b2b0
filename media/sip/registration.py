"""Keeping in touch with trunks: REGISTER to a carrier's registrar (RFC 3261 §10.2) and OPTIONS
pings that say whether a trunk is reachable.

The decisions are pure functions and a small health counter; `Registration` and
`TrunkKeepalive` are the asyncio loops around them, sending through a `SipEndpoint`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

from media.sip.dialog import Authenticator, Login, new_call_id, new_tag
from media.sip.endpoint import SipEndpoint, SipTimeout
from media.sip.message import SipRequest, SipResponse, Uri
from media.sip.transport import Peer, TransportError

log = logging.getLogger(__name__)

DEFAULT_EXPIRES = 3600
# Statuses that say the peer is there but will not take calls now.
_UNAVAILABLE = frozenset({408, 503})


def _bare_uri(value: str) -> Uri:
    text = value.strip()
    if text.startswith("<") and ">" in text:
        text = text[1 : text.index(">")]
    return Uri.parse(text)


def _same_binding(a: Uri, b: Uri) -> bool:
    """Registrars may rewrite a Contact's case or parameters; user, host and port identify it."""
    return (
        a.scheme == b.scheme
        and a.user == b.user
        and (a.host or "").lower() == (b.host or "").lower()
        and (a.port or 5060) == (b.port or 5060)
    )


def granted_expiry(response: SipResponse, contact: str, requested: int) -> int:
    """How long the registrar keeps our binding: our Contact's expires parameter, else the
    Expires header, else what we asked for (RFC 3261 §10.2.4)."""
    ours = _bare_uri(contact)
    for binding in response.contacts:
        if _same_binding(binding.uri, ours):
            value = binding.param("expires")
            if value is not None and value.isascii() and value.isdigit():
                return int(value)
    header = response.header("Expires")
    if header is not None and header.strip().isascii() and header.strip().isdigit():
        return int(header.strip())
    return requested


def refresh_delay(granted: int) -> float:
    """Refresh at half the granted time, so one lost attempt still leaves time for another."""
    return granted / 2


def retry_delay(failures: int, *, base: float, cap: float, retry_after: int | None = None) -> float:
    """Back-off after `failures` consecutive failures (1 or more): doubling from `base` up to
    `cap`, jittered so a fleet of nodes does not retry in step; a Retry-After wins."""
    if retry_after is not None:
        return float(retry_after)
    delay: float = min(cap, base * 2.0 ** (failures - 1))
    return delay * random.uniform(0.8, 1.0)  # noqa: S311 - jitter, not a secret


def _retry_after(response: SipResponse) -> int | None:
    value = response.header("Retry-After")
    if value is None:
        return None
    head = value.split(";")[0].split("(")[0].strip()
    return int(head) if head.isascii() and head.isdigit() else None


class Registration:
    """Keeps one Contact registered with a trunk's registrar until `stop()`.

    `registered` says whether the last attempt succeeded; `on_change(True/False)` is told
    when that changes. Failures back off from `retry_base` to `retry_cap` seconds."""

    def __init__(
        self,
        endpoint: SipEndpoint,
        *,
        registrar: Peer,
        aor: str,
        login: Login | None = None,
        registrar_uri: str | None = None,
        contact: str | None = None,
        expires: int = DEFAULT_EXPIRES,
        retry_base: float = 30.0,
        retry_cap: float = 600.0,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.registrar = registrar
        self.aor = aor
        aor_uri = Uri.parse(aor)
        self.registrar_uri = registrar_uri or f"sip:{aor_uri.host}"
        self.contact = contact or endpoint.contact(registrar.transport, aor_uri.user)
        self.expires = expires
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self.on_change = on_change
        self.registered = False
        self.granted: int | None = None
        self.last_status: int | None = None
        self._auth = Authenticator(login) if login is not None else None
        self._call_id = new_call_id()
        self._tag = new_tag()
        self._cseq = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop refreshing and remove the binding (Expires: 0)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.registered or self.last_status is not None:
            try:
                await self._register(0)
            except (SipTimeout, TransportError) as exc:
                log.info("unregister from %s got no answer: %s", self.registrar, exc)
        self._set(False)

    async def _run(self) -> None:
        failures = 0
        while True:
            delay: float
            try:
                response = await self._register(self.expires)
            except (SipTimeout, TransportError) as exc:
                log.info("REGISTER to %s failed: %s", self.registrar, exc)
                response = None
            granted = (
                granted_expiry(response, self.contact, self.expires)
                if response is not None and 200 <= response.status < 300
                else 0
            )
            if granted > 0:
                failures = 0
                self.granted = granted
                self._set(True)
                delay = refresh_delay(granted)
            else:
                # Refused, unanswered, or a 2xx that kept no binding for us.
                failures += 1
                self._set(False)
                hint = _retry_after(response) if response is not None else None
                delay = retry_delay(
                    failures, base=self.retry_base, cap=self.retry_cap, retry_after=hint
                )
                if response is not None:
                    log.warning(
                        "REGISTER to %s refused: %s %s",
                        self.registrar,
                        response.status,
                        response.reason,
                    )
            await asyncio.sleep(delay)

    async def _register(self, expires: int) -> SipResponse:
        """One REGISTER, with a digest retry and a 423 retry when they are called for."""
        auth = self._auth
        extra: list[tuple[str, str]] = []
        if auth is not None:
            auth.begin()
            extra = auth.headers("REGISTER", self.registrar_uri)
        interval_raised = False
        while True:
            request = self._build(expires, extra)
            response = await self.endpoint.request(request, self.registrar)
            self.last_status = response.status
            if auth is not None and response.status in (401, 407) and auth.challenged(response):
                extra = auth.headers("REGISTER", self.registrar_uri)
                continue
            minimum = response.header("Min-Expires")
            if response.status == 423 and minimum is not None and not interval_raised:
                value = minimum.strip()
                if value.isascii() and value.isdigit() and int(value) > expires:
                    expires, interval_raised = int(value), True
                    self.expires = expires
                    continue
            return response

    def _build(self, expires: int, extra: list[tuple[str, str]]) -> SipRequest:
        # §10.2: one Call-ID for every REGISTER this client sends, the CSeq growing.
        self._cseq += 1
        headers = [
            ("Via", self.endpoint.via(self.registrar.transport)),
            ("Max-Forwards", "70"),
            ("From", f"<{self.aor}>;tag={self._tag}"),
            ("To", f"<{self.aor}>"),
            ("Call-ID", self._call_id),
            ("CSeq", f"{self._cseq} REGISTER"),
            ("Contact", f"{self.contact};expires={expires}"),
            ("Expires", str(expires)),
            *extra,
        ]
        return SipRequest.create("REGISTER", self.registrar_uri, headers)

    def _set(self, registered: bool) -> None:
        if registered != self.registered:
            self.registered = registered
            if self.on_change is not None:
                self.on_change(registered)


@dataclass
class PeerHealth:
    """Up/down from consecutive ping results: `down_after` failures in a row mark a peer down,
    one success marks it up. `up` is None until the first result, which decides at once."""

    down_after: int = 2
    up: bool | None = None
    failures: int = 0

    def record(self, ok: bool) -> bool | None:
        """Take one ping result; returns the new state when it changed, else None."""
        if ok:
            self.failures = 0
            if self.up is not True:
                self.up = True
                return True
            return None
        self.failures += 1
        if self.up is not False and (self.failures >= self.down_after or self.up is None):
            self.up = False
            return False
        return None


class TrunkKeepalive:
    """Sends OPTIONS to a trunk every `interval` seconds and tracks whether it answers.

    Any final response means the trunk is there, except 408 and 503, which say it cannot take
    calls now. No answer before Timer F counts as a failure."""

    def __init__(
        self,
        endpoint: SipEndpoint,
        *,
        peer: Peer,
        target: str | None = None,
        from_uri: str | None = None,
        interval: float = 30.0,
        down_after: int = 2,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.peer = peer
        self.target = target or f"sip:{peer.host}:{peer.port}"
        self.from_uri = from_uri or f"sip:keepalive@{endpoint.public_host}"
        self.interval = interval
        self.health = PeerHealth(down_after=down_after)
        self.on_change = on_change
        self.last_status: int | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def up(self) -> bool | None:
        return self.health.up

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def ping(self) -> bool:
        """One OPTIONS; True when the trunk answered with a usable status."""
        request = SipRequest.create(
            "OPTIONS",
            self.target,
            [
                ("Via", self.endpoint.via(self.peer.transport)),
                ("Max-Forwards", "70"),
                ("From", f"<{self.from_uri}>;tag={new_tag()}"),
                ("To", f"<{self.target}>"),
                ("Call-ID", new_call_id()),
                ("CSeq", "1 OPTIONS"),
                ("Accept", "application/sdp"),
            ],
        )
        try:
            response = await self.endpoint.request(request, self.peer)
        except (SipTimeout, TransportError) as exc:
            log.debug("OPTIONS to %s: %s", self.peer, exc)
            self.last_status = None
            return False
        self.last_status = response.status
        return response.status not in _UNAVAILABLE

    async def _run(self) -> None:
        while True:
            changed = self.health.record(await self.ping())
            if changed is not None:
                log.info("trunk %s is %s", self.peer, "up" if changed else "down")
                if self.on_change is not None:
                    self.on_change(changed)
            await asyncio.sleep(self.interval)
