"""Runs a published IVR flow against one call, on the media node.

The interpreter walks the flow's graph one node at a time over a small `Caller` interface (what
`media.control.CallControl` offers a call's script) and a `FlowDirectory` (the tenant's contacts
and lookup secret, filled by the composition root). Every executed node is reported with
`Caller.step`, so the path a caller took lands on the call's timeline.

A flow that runs off its end hangs up. Nodes that hand the call on (enqueue, a transfer that was
answered) end the script without hanging up: the queue or the bridge owns the call from then on.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import logging
import socket
import ssl
from datetime import UTC, datetime
from typing import Any, Final, Protocol, assert_never
from urllib.parse import urlsplit, urlunsplit
from uuid import UUID

import httpx
import msgspec

from media.audio import AudioError, PcmAudio
from media.control import Voicemail
from media.directory import CallScript, ContactInfo
from routing.flows import (
    BusinessHoursNode,
    ContactLookupNode,
    EnqueueNode,
    FlowDocument,
    GatherNode,
    HangupNode,
    HttpLookupNode,
    MenuNode,
    Node,
    PlayNode,
    SetNode,
    TransferNode,
    VoicemailNode,
)
from runtime.ids import new_id

log = logging.getLogger(__name__)

DEFAULT_VOICE = "en-us"
MAX_STEPS = 1000
"""A flow may loop through menus; a caller who never hangs up still ends somewhere."""
LOOKUP_MAX_BYTES: Final = 16 * 1024
"""The most of an HTTP lookup's answer that is read; a longer answer is a failed lookup."""
TRANSFER_APOLOGY: Final = "Sorry, we could not connect your call. Please try again later."
MAX_PRIORITY: Final = 10
SUSPENDED_NOTICE: Final = (
    "We are sorry: this line cannot take calls at the moment. Please try again later. Goodbye."
)


class Caller(Protocol):
    """What the interpreter needs of a call (media.control.CallControl provides it)."""

    variables: dict[str, object]

    @property
    def call_id(self) -> UUID: ...

    @property
    def tenant_id(self) -> UUID: ...

    @property
    def caller(self) -> str:
        """The caller's number (E.164 when the carrier sent one)."""
        ...

    @property
    def dialed(self) -> str:
        """The tenant's number the caller dialed."""
        ...

    async def answer(self) -> None: ...

    async def play(self, audio: PcmAudio) -> None: ...

    async def prompt(self, prompt_id: UUID) -> PcmAudio: ...

    async def speech(self, text: str, voice: str) -> PcmAudio: ...

    async def collect(
        self,
        *,
        max_digits: int,
        between_digits: float,
        first_digit_within: float | None = None,
        terminator: str | None = "#",
        announcement: PcmAudio | None = None,
    ) -> str: ...

    async def hangup(self, reason: str = "normal") -> None: ...

    def step(
        self,
        node: str,
        node_type: str,
        outcome: str | None = None,
        detail: dict[str, str] | None = None,
    ) -> None:
        """Report one executed flow node (the call.flow_step event)."""
        ...

    async def enqueue(
        self,
        queue_id: UUID,
        *,
        priority: int,
        skills: dict[str, int],
        attributes: dict[str, str],
        context: dict[str, Any] | None = None,
    ) -> None:
        """Hand the call to a queue; it stays up (hold music) when the script returns."""
        ...

    async def record_message(
        self, *, max_seconds: int = 120, beep: bool = True
    ) -> Voicemail | None:
        """Record the caller after a beep; None when nothing audible was said."""
        ...

    async def leave_voicemail(
        self, voicemail: Voicemail, *, mailbox: str | None, queue_id: UUID | None = None
    ) -> None:
        """Store a recorded message for the tenant and report it (the call.voicemail event)."""
        ...

    async def transfer(self, number: str, *, caller_id: str, timeout_seconds: float = 30) -> str:
        """Bridge the caller to `number`: "answered", or why not ("busy", "no_answer", ...)."""
        ...


class FlowDirectory(Protocol):
    """What flows look up about the tenant (media.directory.CallDirectory provides it)."""

    async def contact(self, tenant_id: UUID, e164: str) -> ContactInfo | None: ...

    async def lookup_secret(self, tenant_id: UUID) -> bytes: ...


async def suspended_script(call: Caller) -> None:
    """What callers hear while the tenant is suspended for non-payment: a polite notice, then
    the call ends. No flow runs and no agent is offered the call."""
    call.step("suspended", "notice")
    await call.play(await call.speech(SUSPENDED_NOTICE, DEFAULT_VOICE))
    await call.hangup("tenant_suspended")


def flow_script(
    flow: FlowDocument,
    *,
    directory: FlowDirectory,
    http: httpx.AsyncClient,
    allow_private_lookups: bool = False,
    now: type[datetime] = datetime,
) -> CallScript:
    """The script a media node runs for calls to a number routed to `flow`.

    `http` sends the flow's HTTP lookups; `allow_private_lookups` lets them reach private and
    loopback addresses (tests only: in production that would open the platform's own network
    to any tenant's flow).
    """

    async def run(call: Caller) -> None:
        await FlowRun(
            flow,
            call,
            directory=directory,
            http=http,
            allow_private_lookups=allow_private_lookups,
            now=now,
        ).run()

    return run


class _Done:
    """A node handed the call on or ended it itself: the script stops here, with no further
    hang-up."""


_DONE: Final = _Done()
_Next = str | None | _Done


class LookupRefused(Exception):
    """An HTTP lookup that was not sent, or whose answer cannot be used."""


class FlowRun:
    def __init__(
        self,
        flow: FlowDocument,
        call: Caller,
        *,
        directory: FlowDirectory,
        http: httpx.AsyncClient,
        allow_private_lookups: bool = False,
        now: type[datetime] = datetime,
    ) -> None:
        self._flow = flow
        self._call = call
        self._directory = directory
        self._http = http
        self._allow_private = allow_private_lookups
        self._now = now
        self.visited: list[str] = []

    async def _announcement(self, prompt_id: UUID | None, text: str | None) -> PcmAudio | None:
        if prompt_id is not None:
            return await self._call.prompt(prompt_id)
        if text is not None:
            return await self._call.speech(text, DEFAULT_VOICE)
        return None

    async def run(self) -> None:
        node_id: str | None = self._flow.start
        steps = 0
        while node_id is not None:
            steps += 1
            if steps > MAX_STEPS:
                await self._call.hangup("flow_step_limit")
                return
            self.visited.append(node_id)
            following = await self._step(node_id, self._flow.nodes[node_id])
            if isinstance(following, _Done):
                return
            node_id = following
        await self._call.hangup("flow_finished")

    def _report(
        self, node_id: str, node: Node, outcome: str | None, detail: dict[str, str] | None = None
    ) -> None:
        self._call.step(node_id, str(type(node).__struct_config__.tag), outcome, detail)

    async def _step(self, node_id: str, node: Node) -> _Next:
        call = self._call
        if isinstance(node, PlayNode):
            audio = await self._announcement(node.prompt_id, node.text)
            if audio is not None:
                await call.play(audio)
            self._report(node_id, node, "played")
            return node.next
        if isinstance(node, MenuNode):
            outcome, following = await self._menu(node)
            self._report(node_id, node, outcome)
            return following
        if isinstance(node, GatherNode):
            return await self._gather(node_id, node)
        if isinstance(node, BusinessHoursNode):
            is_open = node.is_open(self._now.now(UTC))
            self._report(node_id, node, "open" if is_open else "closed")
            return node.open if is_open else node.closed
        if isinstance(node, ContactLookupNode):
            return await self._contact_lookup(node_id, node)
        if isinstance(node, HttpLookupNode):
            return await self._http_lookup(node_id, node)
        if isinstance(node, SetNode):
            self._set(node)
            self._report(node_id, node, None, _set_detail(node))
            return node.next
        if isinstance(node, EnqueueNode):
            return await self._enqueue(node_id, node)
        if isinstance(node, VoicemailNode):
            return await self._voicemail(node_id, node)
        if isinstance(node, TransferNode):
            return await self._transfer(node_id, node)
        if isinstance(node, HangupNode):
            reason = node.reason or "flow_hangup"
            self._report(node_id, node, reason)
            await call.hangup(reason)
            return _DONE
        assert_never(node)

    # --- caller input -------------------------------------------------------------------------

    async def _menu(self, node: MenuNode) -> tuple[str, str | None]:
        audio = await self._announcement(node.prompt_id, node.text)
        for attempt in range(node.retries + 1):
            digits = await self._call.collect(
                max_digits=1,
                between_digits=node.timeout_seconds,
                terminator=None,
                announcement=audio,
            )
            if digits in node.options:
                return digits, node.options[digits]
            last_attempt = attempt == node.retries
            if not digits and node.timeout is not None:
                return "timeout", node.timeout
            if digits and node.invalid is not None:
                return "invalid", node.invalid
            if last_attempt:
                break
        return "failed", node.failed

    async def _gather(self, node_id: str, node: GatherNode) -> str | None:
        audio = await self._announcement(node.prompt_id, node.text)
        digits = await self._call.collect(
            max_digits=node.max_digits,
            between_digits=node.timeout_seconds,
            terminator=node.terminator,
            announcement=audio,
        )
        # The digits themselves stay off the timeline: they may be an account number or a PIN.
        detail = {"digits": str(len(digits))}
        if len(digits) < node.min_digits:
            self._report(node_id, node, "timeout", detail)
            return node.timeout if node.timeout is not None else node.next
        self._call.variables[node.variable] = digits
        self._report(node_id, node, "collected", detail)
        return node.next

    def _set(self, node: SetNode) -> None:
        variables = self._call.variables
        if node.priority is not None:
            variables["priority"] = node.priority
        if node.skills:
            variables["skills"] = dict(node.skills)
        if node.attributes:
            variables.update(node.attributes)

    # --- lookups ------------------------------------------------------------------------------

    async def _contact_lookup(self, node_id: str, node: ContactLookupNode) -> str | None:
        call = self._call
        try:
            contact = await self._directory.contact(call.tenant_id, call.caller)
        except Exception:
            # A caller is not turned away because the contact list could not be read.
            log.exception("contact lookup failed for call %s", call.call_id)
            self._report(node_id, node, "error")
            return node.next
        if contact is None:
            self._report(node_id, node, "unknown")
            return node.next
        call.variables["contact"] = {
            "contact_id": str(contact.contact_id),
            "name": contact.name,
            "vip": contact.vip,
            "blocked": contact.blocked,
            "fields": dict(contact.fields),
        }
        detail = {"contact_id": str(contact.contact_id)}
        if contact.blocked:
            self._report(node_id, node, "blocked", detail)
            return node.blocked
        if contact.vip:
            call.variables["priority"] = max(_priority(call.variables), node.vip_priority)
            self._report(node_id, node, "vip", detail)
            return node.vip if node.vip is not None else node.next
        self._report(node_id, node, "known", detail)
        return node.next

    async def _http_lookup(self, node_id: str, node: HttpLookupNode) -> str | None:
        call = self._call
        try:
            secret = await self._directory.lookup_secret(call.tenant_id)
        except Exception:
            log.exception("no lookup secret for tenant %s", call.tenant_id)
            self._report(node_id, node, "fallback", {"reason": "no signing secret"})
            return node.fallback
        body = msgspec.json.encode(
            {
                "call_id": str(call.call_id),
                "from": call.caller,
                "to": call.dialed,
                "variables": call.variables,
            },
            enc_hook=str,
        )
        try:
            async with asyncio.timeout(node.timeout_ms / 1000):
                status, answer = await self._post(node, body, secret)
        except TimeoutError:
            reason = f"no answer within {node.timeout_ms} ms"
        except LookupRefused as exc:
            reason = str(exc)
        except (httpx.HTTPError, OSError, ssl.SSLError) as exc:
            reason = f"request failed: {type(exc).__name__}"
        else:
            call.variables[node.store_as] = answer
            self._report(node_id, node, "ok", {"status": str(status)})
            return node.next
        log.info("http lookup of call %s fell back: %s", call.call_id, reason)
        self._report(node_id, node, "fallback", {"reason": reason})
        return node.fallback

    async def _post(
        self, node: HttpLookupNode, body: bytes, secret: bytes
    ) -> tuple[int, dict[str, str | int | float | bool]]:
        url, host_header, extensions = await lookup_target(
            node.url, allow_private=self._allow_private
        )
        message_id = f"msg_{new_id().hex}"
        timestamp = str(int(self._now.now(UTC).timestamp()))
        headers = {
            "Host": host_header,
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": "Switchboard-Lookup/1",
            "webhook-id": message_id,
            "webhook-timestamp": timestamp,
            "webhook-signature": sign_lookup(secret, message_id, timestamp, body),
        }
        request = self._http.build_request(
            "POST",
            url,
            content=body,
            headers=headers,
            extensions=extensions,
            timeout=node.timeout_ms / 1000,
        )
        response = await self._http.send(request, stream=True, follow_redirects=False)
        try:
            if not 200 <= response.status_code < 300:
                raise LookupRefused(f"answered with status {response.status_code}")
            data = bytearray()
            async for chunk in response.aiter_bytes():
                data += chunk
                if len(data) > LOOKUP_MAX_BYTES:
                    raise LookupRefused(f"answer over {LOOKUP_MAX_BYTES} bytes")
        finally:
            await response.aclose()
        try:
            decoded = msgspec.json.decode(bytes(data))
        except msgspec.DecodeError:
            raise LookupRefused("answer is not JSON") from None
        if not isinstance(decoded, dict):
            raise LookupRefused("answer is not a JSON object")
        kept = {
            str(key): value
            for key, value in decoded.items()
            if isinstance(value, str | int | float | bool)
        }
        return response.status_code, kept

    # --- hand-offs ----------------------------------------------------------------------------

    async def _enqueue(self, node_id: str, node: EnqueueNode) -> _Done:
        call = self._call
        priority = node.priority if node.priority is not None else _priority(call.variables)
        skills = _skills(call.variables)
        attributes = {k: v for k, v in call.variables.items() if isinstance(v, str)}
        context = {k: v for k, v in call.variables.items() if isinstance(v, dict) and k != "skills"}
        await call.enqueue(
            node.queue_id,
            priority=priority,
            skills=skills,
            attributes=attributes,
            context=context,
        )
        self._report(
            node_id, node, "queued", {"queue_id": str(node.queue_id), "priority": str(priority)}
        )
        return _DONE

    async def _voicemail(self, node_id: str, node: VoicemailNode) -> _Done:
        call = self._call
        greeting = await self._announcement(node.prompt_id, node.text)
        if greeting is not None:
            await call.play(greeting)
        message = await call.record_message()
        if message is None:
            self._report(node_id, node, "empty")
            await call.hangup("voicemail_empty")
            return _DONE
        detail = {
            "voicemail_id": str(message.voicemail_id),
            "duration_ms": str(message.duration_ms),
        }
        try:
            await call.leave_voicemail(message, mailbox=node.mailbox, queue_id=node.queue_id)
        except Exception:
            # The sealed file is still on the node; the log says where, for recovery.
            log.exception(
                "voicemail %s of call %s could not be stored (recording at %s)",
                message.voicemail_id,
                call.call_id,
                message.path,
            )
            self._report(node_id, node, "not_stored", detail)
            await call.hangup("voicemail_not_stored")
            return _DONE
        self._report(node_id, node, "recorded", detail)
        await call.hangup("voicemail")
        return _DONE

    async def _transfer(self, node_id: str, node: TransferNode) -> _Done:
        call = self._call
        caller_id = call.caller if node.caller_id == "caller" else call.dialed
        outcome = await call.transfer(node.number, caller_id=caller_id)
        self._report(node_id, node, outcome, {"to": node.number})
        if outcome == "answered":
            return _DONE
        try:
            await call.play(await call.speech(TRANSFER_APOLOGY, DEFAULT_VOICE))
        except AudioError:
            log.warning("could not speak the transfer apology to call %s", call.call_id)
        await call.hangup(f"transfer_failed:{outcome}")
        return _DONE


# --- helpers ----------------------------------------------------------------------------------


def sign_lookup(secret: bytes, message_id: str, timestamp: str, body: bytes) -> str:
    """A Standard Webhooks signature header value: `v1,<base64 HMAC-SHA256>` over
    `<id>.<timestamp>.<body>`."""
    signed = message_id.encode() + b"." + timestamp.encode() + b"." + body
    digest = hmac.new(secret, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def refused_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether a lookup may not go to `address`: anything but a public unicast address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_global or address.is_multicast


async def lookup_target(url: str, *, allow_private: bool) -> tuple[str, str, dict[str, str]]:
    """Where to send a lookup: the URL with its host resolved and checked, the Host header, and
    the TLS server name. The request goes to the address that was checked, so a name that
    resolves differently a moment later (DNS rebinding) cannot reach an address that was not."""
    parts = urlsplit(url)
    host = parts.hostname
    if parts.scheme != "https" or not host:
        raise LookupRefused("not an https:// URL")
    try:
        port = parts.port or 443
    except ValueError:
        raise LookupRefused("bad port in URL") from None
    literal: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        try:
            found = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except OSError:
            raise LookupRefused(f"{host} does not resolve") from None
        addresses = [ipaddress.ip_address(info[4][0]) for info in found]
        if not addresses:
            raise LookupRefused(f"{host} does not resolve")
    if not allow_private:
        for address in addresses:
            if refused_address(address):
                raise LookupRefused(f"{host} resolves to a non-public address ({address})")
    pinned = addresses[0]
    netloc = f"[{pinned}]:{port}" if pinned.version == 6 else f"{pinned}:{port}"
    target = urlunsplit(("https", netloc, parts.path or "/", parts.query, ""))
    host_header = parts.netloc.rpartition("@")[2]
    extensions = {} if literal is not None else {"sni_hostname": host}
    return target, host_header, extensions


def _priority(variables: dict[str, object]) -> int:
    value = variables.get("priority")
    if isinstance(value, bool) or not isinstance(value, int):
        return 0
    return min(max(value, 0), MAX_PRIORITY)


def _skills(variables: dict[str, object]) -> dict[str, int]:
    value = variables.get("skills")
    if not isinstance(value, dict):
        return {}
    return {
        str(name): level
        for name, level in value.items()
        if isinstance(level, int) and not isinstance(level, bool)
    }


def _set_detail(node: SetNode) -> dict[str, str]:
    detail: dict[str, str] = {}
    if node.priority is not None:
        detail["priority"] = str(node.priority)
    if node.skills:
        detail["skills"] = ",".join(
            f"{name}:{level}" for name, level in sorted(node.skills.items())
        )
    if node.attributes:
        detail["attributes"] = ",".join(sorted(node.attributes))
    return detail
