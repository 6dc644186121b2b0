"""RFC 3261 §12 dialogs as values a user agent updates, plus the pure parts every UAC request
needs: answering digest challenges (§22.2) and reading RFC 4028 session-timer headers.

A `Dialog` holds what both ends agreed when the call was set up: the Call-ID and the two tags,
the route set learnt from Record-Route, the remote target from Contact, and the two CSeq
counters. It checks each request the far end sends in the dialog and builds the requests we send
(BYE, re-INVITE, UPDATE, and the ACK for a 2xx). No sockets and no clocks: the caller supplies
the top Via, and `next_hop()` says where the built request must go.
"""

from __future__ import annotations

import enum
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from media.sip.digest import (
    QOP_AUTH,
    QOP_AUTH_INT,
    Challenge,
    ClientAuthState,
    DigestError,
    format_credentials,
    parse_challenge,
)
from media.sip.message import MAX_CSEQ, Address, SipRequest, SipResponse, Uri

MAX_FORWARDS = 70
SERVER_ERROR = 500
# Requests whose Contact replaces the remote target (RFC 3261 §12.2, RFC 3311 §5.2).
TARGET_REFRESH_METHODS = frozenset({"INVITE", "UPDATE"})
# RFC 3261 §8.1.1.5: the first CSeq should stay below 2**31 so that it can grow.
_FIRST_CSEQ_LIMIT = 2**31
_TOKEN_SPECIALS = re.compile(r"[^A-Za-z0-9\-.!%*_+`'~ ]")


class DialogError(ValueError):
    """A message that cannot create or continue a dialog (no tag, no Contact, ...)."""


class Refusal(Exception):
    """A request we must refuse, and the response that says why."""

    def __init__(self, status: int, reason: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.headers = list(headers)


class DialogState(enum.Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


@dataclass(frozen=True, slots=True)
class DialogId:
    """Call-ID plus both tags, each as seen from our side."""

    call_id: str
    local_tag: str
    remote_tag: str

    @classmethod
    def of_request(cls, request: SipRequest) -> DialogId | None:
        """The dialog a received request belongs to; None when it is out of any dialog."""
        local, remote = request.to.tag, request.from_.tag
        if not local or not remote:
            return None
        return cls(request.call_id, local, remote)

    @classmethod
    def of_response(cls, response: SipResponse) -> DialogId | None:
        """The dialog a response to one of our requests belongs to."""
        local, remote = response.from_.tag, response.to.tag
        if not local or not remote:
            return None
        return cls(response.call_id, local, remote)


def new_tag() -> str:
    """A From/To tag with the 32 random bits RFC 3261 §19.3 asks for, and then some."""
    return secrets.token_hex(8)


def new_call_id(host: str | None = None) -> str:
    token = secrets.token_hex(16)
    return token if host is None else f"{token}@{host}"


def first_cseq() -> int:
    return 1 + secrets.randbelow(_FIRST_CSEQ_LIMIT - 1)


def format_address(address: Address) -> str:
    """An Address as a header value in name-addr form, parameters kept in order."""
    name = address.display_name
    if name and _TOKEN_SPECIALS.search(name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    params = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in address.params)
    prefix = f"{name} " if name else ""
    return f"{prefix}<{address.uri}>{params}"


def _with_tag(value: str, tag: str) -> str:
    return value if re.search(r";\s*tag\s*=", value, re.IGNORECASE) else f"{value};tag={tag}"


def _contact_target(message: SipRequest | SipResponse) -> Uri:
    contacts = message.contacts
    if len(contacts) != 1:
        raise DialogError("a dialog-creating message needs exactly one Contact")
    return contacts[0].uri


class Dialog:
    """One dialog's state. Build it with `as_uas` or `as_uac`; it is confirmed or early."""

    def __init__(
        self,
        *,
        call_id: str,
        local_tag: str,
        remote_tag: str,
        local_party: str,
        remote_party: str,
        local_contact: str,
        remote_target: Uri,
        route_set: Sequence[Address],
        local_cseq: int,
        remote_cseq: int | None,
        secure: bool,
        state: DialogState,
    ) -> None:
        self.call_id = call_id
        self.local_tag = local_tag
        self.remote_tag = remote_tag
        self.local_party = _with_tag(local_party, local_tag)
        """The From value of our requests (the To of the far end's), our tag included."""
        self.remote_party = remote_party
        self.local_contact = local_contact
        self.remote_target = remote_target
        self.route_set = tuple(route_set)
        self.local_cseq = local_cseq
        """The CSeq of the last request we sent; the next one gets one more."""
        self.remote_cseq = remote_cseq
        self.secure = secure
        self.state = state

    @classmethod
    def as_uas(
        cls,
        invite: SipRequest,
        *,
        local_tag: str,
        local_contact: str,
        secure: bool = False,
        local_cseq: int | None = None,
    ) -> Dialog:
        """The callee's dialog (§12.1.1): Record-Route kept in order, Contact as the target.

        It starts early; `confirm()` once the 2xx is sent. `secure` is whether the INVITE came
        over TLS; a sips Request-URI makes it secure either way."""
        remote_tag = invite.from_.tag
        if not remote_tag:
            raise DialogError("the INVITE has no From tag")
        to = invite.header("To")
        from_ = invite.header("From")
        assert to is not None
        assert from_ is not None
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=remote_tag,
            local_party=to,
            remote_party=from_,
            local_contact=local_contact,
            remote_target=_contact_target(invite),
            route_set=invite.record_routes,
            # The callee has sent nothing yet; a random start keeps its CSeqs unguessable.
            local_cseq=first_cseq() if local_cseq is None else local_cseq,
            remote_cseq=invite.cseq.sequence,
            secure=secure or invite.uri.scheme == "sips",
            state=DialogState.EARLY,
        )

    @classmethod
    def as_uac(
        cls, invite: SipRequest, response: SipResponse, *, local_contact: str, secure: bool = False
    ) -> Dialog:
        """The caller's dialog from a 1xx (early) or 2xx (confirmed) with a To tag (§12.1.2)."""
        remote_tag = response.to.tag
        local_tag = invite.from_.tag
        if not remote_tag or not local_tag:
            raise DialogError("a dialog needs both tags")
        if response.status >= 300:
            raise DialogError("only a 1xx or 2xx creates a dialog")
        from_ = invite.header("From")
        to = response.header("To")
        assert from_ is not None
        assert to is not None
        try:
            target = _contact_target(response)
        except DialogError:
            # A 1xx without Contact still says the callee is ringing; the 2xx must carry one.
            if response.status >= 200:
                raise
            target = invite.uri
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=remote_tag,
            local_party=from_,
            remote_party=to,
            local_contact=local_contact,
            remote_target=target,
            route_set=tuple(reversed(response.record_routes)),
            local_cseq=invite.cseq.sequence,
            remote_cseq=None,
            secure=secure or invite.uri.scheme == "sips",
            state=DialogState.CONFIRMED if response.status >= 200 else DialogState.EARLY,
        )

    @property
    def id(self) -> DialogId:
        return DialogId(self.call_id, self.local_tag, self.remote_tag)

    def confirm(self) -> None:
        if self.state is DialogState.EARLY:
            self.state = DialogState.CONFIRMED

    def terminate(self) -> None:
        self.state = DialogState.TERMINATED

    def receive(self, request: SipRequest) -> int | None:
        """Take a request the far end sent in this dialog (§12.2.2).

        Returns the status to reject it with, or None when it is in order. An ACK or CANCEL
        reuses its INVITE's CSeq and is not checked. A target refresh moves the remote target
        to its Contact."""
        if request.method in ("ACK", "CANCEL"):
            return None
        sequence = request.cseq.sequence
        if self.remote_cseq is not None and sequence < self.remote_cseq:
            return SERVER_ERROR
        self.remote_cseq = sequence
        if request.method in TARGET_REFRESH_METHODS and request.contacts:
            self.remote_target = request.contacts[0].uri
        return None

    def refresh_target(self, response: SipResponse) -> None:
        """A 2xx to our re-INVITE or UPDATE may move the remote target (§12.2.1.2)."""
        if 200 <= response.status < 300 and response.contacts:
            self.remote_target = response.contacts[0].uri

    def next_hop(self) -> Uri:
        """Where a request in this dialog is sent: the first route, else the remote target."""
        return self.route_set[0].uri if self.route_set else self.remote_target

    def request(
        self,
        method: str,
        *,
        via: str,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> SipRequest:
        """A new request in the dialog with the next local CSeq (not for ACK or CANCEL)."""
        if method in ("ACK", "CANCEL"):
            raise ValueError(f"{method} reuses its INVITE's CSeq; use ack() or a CANCEL builder")
        if self.local_cseq >= MAX_CSEQ:
            raise DialogError("the local CSeq is exhausted")
        self.local_cseq += 1
        extra = list(headers)
        if method in TARGET_REFRESH_METHODS:
            extra.insert(0, ("Contact", self.local_contact))
        return self._build(method, self.local_cseq, via, extra, body, content_type)

    def ack(
        self,
        invite_cseq: int,
        *,
        via: str,
        body: bytes = b"",
        content_type: str | None = None,
    ) -> SipRequest:
        """The ACK for a 2xx to the INVITE that used `invite_cseq` (§13.2.2.4)."""
        return self._build("ACK", invite_cseq, via, [], body, content_type)

    def _build(
        self,
        method: str,
        cseq: int,
        via: str,
        extra: list[tuple[str, str]],
        body: bytes,
        content_type: str | None,
    ) -> SipRequest:
        uri, routes = self._request_uri_and_routes()
        headers = [
            ("Via", via),
            ("Max-Forwards", str(MAX_FORWARDS)),
            ("From", self.local_party),
            ("To", self.remote_party),
            ("Call-ID", self.call_id),
            ("CSeq", f"{cseq} {method}"),
            *(("Route", route) for route in routes),
            *extra,
        ]
        if body:
            headers.append(("Content-Type", content_type or "application/sdp"))
        return SipRequest.create(method, uri, headers, body)

    def _request_uri_and_routes(self) -> tuple[str, list[str]]:
        """§12.2.1.1: loose routing keeps the target in the Request-URI; a strict router
        (no `lr` on the first route) takes the Request-URI and the target goes last."""
        target = str(self.remote_target)
        if not self.route_set:
            return target, []
        routes = [format_address(a) for a in self.route_set]
        first = self.route_set[0]
        if any(k.lower() == "lr" for k, _ in first.uri.params):
            return target, routes
        return str(first.uri), [*routes[1:], f"<{target}>"]


# --- digest authentication as a UAC (RFC 3261 §22.2) ------------------------------------------


@dataclass(frozen=True, slots=True)
class Login:
    """A username and password a trunk or registrar gave us."""

    username: str
    password: str = field(repr=False)


_CHALLENGE_HEADERS = {
    401: ("WWW-Authenticate", "Authorization"),
    407: ("Proxy-Authenticate", "Proxy-Authorization"),
}


class Authenticator:
    """Answers the 401/407 challenges for one `Login`, and remembers them for the next request.

    `begin()` starts a new request; `challenged(response)` decides whether to retry it (once per
    challenge: a second challenge for a realm already answered, unless stale=true, means the
    credentials are wrong); `headers(...)` gives the authorization headers to send with it."""

    def __init__(self, login: Login) -> None:
        self.login = login
        self._state = ClientAuthState()
        self._header_for_realm: dict[str, str] = {}
        self._answered: set[str] = set()

    def begin(self) -> None:
        self._answered.clear()

    def challenged(self, response: SipResponse) -> bool:
        """Take a 401/407; True when the request should be sent again with `headers()`."""
        names = _CHALLENGE_HEADERS.get(response.status)
        if names is None:
            return False
        challenge_header, answer_header = names
        challenges: list[Challenge] = []
        for value in response.header_values(challenge_header):
            try:
                challenge = parse_challenge(value)
            except DigestError:
                continue  # Basic, or an algorithm we lack; another value may still do
            if not challenge.qop or {QOP_AUTH, QOP_AUTH_INT} & set(challenge.qop):
                challenges.append(challenge)
        if not challenges:
            return False
        for realm in {c.realm for c in challenges}:
            stale = any(c.stale for c in challenges if c.realm == realm)
            if realm in self._answered and not stale:
                return False
        self._state.remember(challenges)
        for challenge in challenges:
            self._header_for_realm[challenge.realm] = answer_header
            self._answered.add(challenge.realm)
        return True

    def headers(self, method: str, uri: str, body: bytes = b"") -> list[tuple[str, str]]:
        """Authorization headers for every realm that has challenged us so far."""
        out: list[tuple[str, str]] = []
        for realm in list(self._state.realms()):
            try:
                credentials = self._state.authorize(
                    realm,
                    method=method,
                    uri=uri,
                    username=self.login.username,
                    password=self.login.password,
                    body=body,
                )
            except DigestError:
                # Only qop values we cannot compute: sending nothing for it gets a clean 401.
                self._state.forget(realm)
                continue
            if credentials is not None:
                out.append((self._header_for_realm[realm], format_credentials(credentials)))
        return out


# --- session timers (RFC 4028) ----------------------------------------------------------------

MIN_SE_FLOOR = 90
"""RFC 4028 §4: no one may ask for less than this, and it is what Min-SE means when absent."""


@dataclass(frozen=True, slots=True)
class SessionExpires:
    interval: int
    refresher: str | None = None
    """"uac" or "uas": which side of the transaction that carried it refreshes."""

    @classmethod
    def parse(cls, value: str) -> SessionExpires:
        head, *params = (part.strip() for part in value.split(";"))
        if not head.isascii() or not head.isdigit():
            raise ValueError(f"invalid Session-Expires {value!r}")
        refresher = None
        for param in params:
            name, _, param_value = param.partition("=")
            if name.strip().lower() == "refresher":
                refresher = param_value.strip().lower()
                if refresher not in ("uac", "uas"):
                    raise ValueError(f"invalid refresher {param_value!r}")
        return cls(int(head), refresher)

    def __str__(self) -> str:
        return str(self.interval) + (f";refresher={self.refresher}" if self.refresher else "")


def session_expires_of(message: SipRequest | SipResponse) -> SessionExpires | None:
    """The message's Session-Expires; raises ValueError when it is malformed."""
    value = message.header("Session-Expires")
    return None if value is None else SessionExpires.parse(value)


def min_se_of(message: SipRequest | SipResponse) -> int | None:
    value = message.header("Min-SE")
    if value is None:
        return None
    head = value.split(";")[0].strip()
    if not head.isascii() or not head.isdigit():
        raise ValueError(f"invalid Min-SE {value!r}")
    return int(head)


def expiry_margin(interval: float) -> float:
    """How long before the session expires the side that does not refresh gives up: RFC 4028
    §10 leaves the refresher min(32 s, interval/3) for its request to get through."""
    return min(32.0, interval / 3)


def session_timer_for_uas(request: SipRequest, min_se: int) -> SessionExpires | None:
    """RFC 4028 §9: the interval and refresher we answer a request that may ask for a session
    timer with, or None when it asks for none. Raises Refusal (422 below `min_se`)."""
    try:
        timer = session_expires_of(request)
        min_se_of(request)
    except ValueError as exc:
        raise Refusal(400, "Bad Session-Expires") from exc
    if timer is None:
        return None
    if timer.interval < min_se:
        raise Refusal(422, "Session Interval Too Small", [("Min-SE", str(min_se))])
    refresher = timer.refresher
    if refresher is None:
        # A UAC that does not support timers cannot refresh; then we must.
        refresher = "uac" if has_option(request, "Supported", "timer") else "uas"
    return SessionExpires(timer.interval, refresher)


def session_timer_headers(
    request: SipRequest, timer: SessionExpires | None
) -> list[tuple[str, str]]:
    """What our 2xx to `request` says about the session timer we agreed."""
    if timer is None:
        return []
    headers = [("Session-Expires", str(timer))]
    if has_option(request, "Supported", "timer"):
        headers.append(("Require", "timer"))
    return headers


def allowed_methods(message: SipRequest | SipResponse) -> set[str]:
    return {
        item.strip().upper()
        for value in message.header_values("Allow")
        for item in value.split(",")
        if item.strip()
    }


def has_option(message: SipRequest | SipResponse, header: str, option: str) -> bool:
    """Whether a Supported/Require-style header lists `option` (comma lists, any case)."""
    return any(
        item.strip().lower() == option
        for value in message.header_values(header)
        for item in value.split(",")
    )
