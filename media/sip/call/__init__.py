"""Call control over a `SipEndpoint`: the user agent that owns every dialog on it, calls that come
in (`InboundCall`) and calls we place (`OutboundCall`).

The dialog arithmetic is in `media.sip.dialog`; transactions, sockets and retransmission of
requests are the endpoint's. What lives here is the part of RFC 3261 that spans transactions:
retransmitting our 2xx until its ACK arrives (§13.3.1.4), ACKing every 2xx we receive,
CANCEL (§9), re-INVITE and UPDATE with their glare rules (§14, RFC 3311), BYE (§15), digest
retries (§22.2), and session timers (RFC 4028).

`base` holds what both kinds of call share, `inbound` and `outbound` one kind each, and
`user_agent` the request handler that owns them; every public name is importable from here.
"""

from media.sip.call.base import (
    ACCEPT,
    ALLOW,
    DEFAULT_SESSION_EXPIRES,
    SUPPORTED,
    CallEnd,
    CallEnded,
    ReofferFailed,
    ReofferHandler,
    resolve_peer,
)
from media.sip.call.inbound import InboundCall
from media.sip.call.outbound import OutboundCall
from media.sip.call.user_agent import UserAgent

__all__ = [
    "ACCEPT",
    "ALLOW",
    "DEFAULT_SESSION_EXPIRES",
    "SUPPORTED",
    "CallEnd",
    "CallEnded",
    "InboundCall",
    "OutboundCall",
    "ReofferFailed",
    "ReofferHandler",
    "UserAgent",
    "resolve_peer",
]
