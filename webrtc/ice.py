"""ICE servers for softphones: STUN, and TURN with short-lived credentials.

TURN credentials follow the shared-secret scheme coturn implements (`use-auth-secret`, the
"TURN REST API" draft): the username is `<expiry unix time>:<agent id>` and the password is
base64(HMAC-SHA1(secret, username)). The TURN server checks both without asking us, and a
leaked credential stops working at its expiry.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Sequence
from uuid import UUID

from webrtc.leg import IceServer

__all__ = ["ice_servers_for", "turn_credentials"]


def turn_credentials(
    secret: str, agent_id: UUID, ttl_seconds: int, now: float | None = None
) -> tuple[str, str]:
    expiry = int(time.time() if now is None else now) + ttl_seconds
    username = f"{expiry}:{agent_id}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def ice_servers_for(
    agent_id: UUID,
    *,
    stun_urls: Sequence[str],
    turn_urls: Sequence[str],
    turn_secret: str | None,
    ttl_seconds: int,
    now: float | None = None,
) -> list[IceServer]:
    servers: list[IceServer] = []
    if stun_urls:
        servers.append(IceServer(tuple(stun_urls)))
    if turn_urls and turn_secret:
        username, password = turn_credentials(turn_secret, agent_id, ttl_seconds, now)
        servers.append(IceServer(tuple(turn_urls), username, password))
    return servers
