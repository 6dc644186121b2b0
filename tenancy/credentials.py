"""Passwords, opaque tokens (refresh, API key, email, client secret) and JWT access tokens."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import msgspec
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet

from runtime.crypto import seal, unseal
from runtime.ids import new_id
from tenancy.errors import InvalidToken, Unauthenticated, WeakPassword
from tenancy.models import TenantId

# --- passwords --------------------------------------------------------------------------------

_hasher = PasswordHasher()
# A hash to verify against when the user does not exist, so both paths take the same time.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))
_COMMON = frozenset(
    [
        "password",
        "passw0rd",
        "password1",
        "password12",
        "password123",
        "123456789",
        "1234567890",
        "12345678910",
        "qwertyuiop",
        "qwerty123",
        "iloveyou1",
        "letmein123",
        "welcome123",
        "administrator",
        "changeme123",
        "abc123456",
        "11111111111",
        "sunshine12",
        "football12",
        "monkey1234",
        "trustno1234",
        "dragon1234",
        "baseball12",
    ]
)


def check_password_strength(password: str, *, email: str) -> None:
    problems: list[str] = []
    if len(password) < 10:
        problems.append("must be at least 10 characters")
    if len(password) > 256:
        problems.append("must be at most 256 characters")
    classes = sum(
        any(f(c) for c in password)
        for f in (str.islower, str.isupper, str.isdigit, lambda c: not c.isalnum())
    )
    if len(password) < 16 and classes < 3:
        problems.append("needs three of: lower case, upper case, digits, symbols (or 16+ chars)")
    if password.lower() in _COMMON or len(set(password)) < 5:
        problems.append("is too common")
    local = email.split("@", 1)[0].lower()
    if len(local) >= 4 and local in password.lower():
        problems.append("must not contain your email address")
    if problems:
        raise WeakPassword("Password " + "; ".join(problems) + ".", field="password")


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(stored_hash: str | None, password: str) -> bool:
    def check() -> bool:
        try:
            return _hasher.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(check)


# --- opaque tokens ----------------------------------------------------------------------------
# <prefix>_<tenant hex>_<id hex>_<secret>. The tenant and id locate the row; only a SHA-256 of
# the 256-bit secret is stored, compared in constant time.

REFRESH = "sbr"
API_KEY = "sbk"
EMAIL = "sbe"
CLIENT = "sbc"


@dataclass(frozen=True, slots=True)
class OpaqueToken:
    tenant_id: TenantId
    id: UUID
    secret: str

    def __str__(self) -> str:
        raise TypeError("format with format_token(prefix, token)")


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def secret_matches(secret: str, stored: bytes) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored)


def format_token(prefix: str, tenant_id: UUID, token_id: UUID, secret: str) -> str:
    return f"{prefix}_{tenant_id.hex}_{token_id.hex}_{secret}"


def parse_token(prefix: str, raw: str) -> OpaqueToken:
    """Split a token we issued. Raises InvalidToken for anything else."""
    parts = raw.split("_", 3)
    if len(parts) != 4 or parts[0] != prefix or len(parts[1]) != 32 or len(parts[2]) != 32:
        raise InvalidToken("The token is malformed.")
    try:
        tenant, token_id = UUID(hex=parts[1]), UUID(hex=parts[2])
    except ValueError:
        raise InvalidToken("The token is malformed.") from None
    if not 20 <= len(parts[3]) <= 100:
        raise InvalidToken("The token is malformed.")
    return OpaqueToken(TenantId(tenant), token_id, parts[3])


def format_client_id(tenant_id: UUID, client_id: UUID) -> str:
    return f"{CLIENT}_{tenant_id.hex}_{client_id.hex}"


def parse_client_id(raw: str) -> tuple[TenantId, UUID]:
    parts = raw.split("_")
    if len(parts) != 3 or parts[0] != CLIENT:
        raise Unauthenticated("Unknown client.")
    try:
        return TenantId(UUID(hex=parts[1])), UUID(hex=parts[2])
    except ValueError:
        raise Unauthenticated("Unknown client.") from None


# --- access tokens (JWT, ES256, RFC 9068 at+jwt) ---------------------------------------------


class AccessClaims(msgspec.Struct, frozen=True, kw_only=True):
    iss: str
    aud: str
    sub: str
    tid: str
    exp: int
    iat: int
    jti: str
    scope: str
    role: str | None = None
    client_id: str | None = None
    act: str = "user"


@dataclass
class SigningKey:
    kid: str
    key: ECKey
    created_at: float
    retired_at: float | None


class KeyRing:
    """The signing keys: the newest unretired key signs; every key not long retired verifies."""

    def __init__(
        self, *, issuer: str, audience: str, ttl_seconds: int, master_key: bytes | None
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.ttl = ttl_seconds
        self.master_key = master_key
        self._keys: list[SigningKey] = []
        self._verify_set = KeySet([])
        self._cache: OrderedDict[str, AccessClaims] = OrderedDict()
        self._cache_size = 10_000

    # keys are loaded from rows (kid, private_jwk, sealed, created_at, retired_at)
    def load(self, rows: list[Any]) -> None:
        keys: list[SigningKey] = []
        for row in rows:
            raw: bytes = row["private_jwk"]
            if row["sealed"]:
                if self.master_key is None:
                    raise RuntimeError("signing keys are sealed but no master key is configured")
                raw = unseal(self.master_key, raw, aad=row["kid"].encode())
            key = ECKey.import_key(msgspec.json.decode(raw))
            retired = row["retired_at"]
            keys.append(
                SigningKey(
                    row["kid"],
                    key,
                    row["created_at"].timestamp(),
                    retired.timestamp() if retired else None,
                )
            )
        keys.sort(key=lambda k: k.created_at)
        self._keys = keys
        self._verify_set = KeySet([k.key for k in self._verifiable()])
        self._cache.clear()

    def _verifiable(self) -> list[SigningKey]:
        horizon = time.time() - self.ttl - 300
        return [k for k in self._keys if k.retired_at is None or k.retired_at > horizon]

    def new_key_row(self) -> tuple[str, bytes, bool]:
        """A fresh P-256 key as (kid, stored bytes, sealed) for the signing_keys table."""
        kid = new_id().hex
        key = ECKey.generate_key("P-256", parameters={"kid": kid, "use": "sig", "alg": "ES256"})
        data = msgspec.json.encode(key.as_dict(private=True))
        if self.master_key is not None:
            return kid, seal(self.master_key, data, aad=kid.encode()), True
        return kid, data, False

    @property
    def has_signing_key(self) -> bool:
        return any(k.retired_at is None for k in self._keys)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [k.key.as_dict(private=False) for k in self._verifiable()]}

    def issue(
        self,
        *,
        tenant_id: UUID,
        subject: UUID,
        scope: list[str],
        role: str | None = None,
        client_id: str | None = None,
        actor: str = "user",
    ) -> str:
        signers = [k for k in self._keys if k.retired_at is None]
        if not signers:
            raise RuntimeError("no active signing key")
        key = signers[-1]
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": str(subject),
            "tid": str(tenant_id),
            "iat": now,
            "exp": now + self.ttl,
            "jti": new_id().hex,
            "scope": " ".join(sorted(scope)),
            "act": actor,
        }
        if role is not None:
            claims["role"] = role
        if client_id is not None:
            claims["client_id"] = client_id
        header = {"alg": "ES256", "typ": "at+jwt", "kid": key.kid}
        return jwt.encode(header, claims, key.key, algorithms=["ES256"])

    def verify(self, token: str) -> AccessClaims:
        """Check signature, alg, typ, issuer, audience and expiry. Raises Unauthenticated."""
        cached = self._cache.get(token)
        now = time.time()
        if cached is not None:
            if cached.exp > now:
                self._cache.move_to_end(token)
                return cached
            del self._cache[token]
        try:
            decoded = jwt.decode(token, self._verify_set, algorithms=["ES256"])
        except (JoseError, ValueError, TypeError) as exc:
            raise Unauthenticated("The access token is invalid.") from exc
        if decoded.header.get("typ") != "at+jwt":
            raise Unauthenticated("The access token has the wrong type.")
        try:
            claims = msgspec.convert(decoded.claims, AccessClaims)
        except msgspec.ValidationError as exc:
            raise Unauthenticated("The access token is missing claims.") from exc
        if claims.iss != self.issuer or claims.aud != self.audience:
            raise Unauthenticated("The access token is not for this service.")
        if claims.exp <= now or claims.iat > now + 60:
            raise Unauthenticated("The access token has expired.")
        self._cache[token] = claims
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return claims
