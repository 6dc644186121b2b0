"""The OpenID Connect edge: discovery, the authorization URL, the code exchange (authlib's httpx
client) and ID token validation (authlib's OIDC claims over joserfc). The only module that talks
to identity providers.

Outside test mode every URL must be https and its host must resolve to public addresses only:
a tenant must not point our servers at our own network. The check runs before each fetch; a
resolver that changes its answer between the check and the connection is not defended against.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import socket
import warnings
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx
from joserfc import jwt
from joserfc.errors import BadSignatureError, JoseError
from joserfc.jwk import KeySet

from tenancy.credentials import secret_matches
from tenancy.errors import InvalidCredentials, InvalidInput, TenancyError
from tenancy.sso.models import Identity, ProviderMetadata

with warnings.catch_warnings():
    # authlib 1.9 would rather drive httpx2 and says so once at import; httpx works the same.
    warnings.simplefilter("ignore", DeprecationWarning)
    from authlib.integrations.httpx_client import (  # type: ignore[import-untyped]
        AsyncOAuth2Client,
        OAuthError,
    )
    from authlib.oauth2.rfc6749.parameters import (  # type: ignore[import-untyped]
        prepare_grant_uri,
    )
    from authlib.oauth2.rfc7636 import (  # type: ignore[import-untyped]
        create_s256_code_challenge,
    )
    from authlib.oidc.core import CodeIDToken  # type: ignore[import-untyped]

SCOPE = "openid email profile"
# Asymmetric only: "none" proves nothing, and HMAC would make the client secret the key.
SUPPORTED_ALGS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
_AUTH_METHODS = ("client_secret_basic", "client_secret_post")
_TIMEOUT = httpx.Timeout(10.0)
_MAX_DOCUMENT = 512 * 1024
_LEEWAY = 60


class ProviderUnavailable(TenancyError):
    status, code, title = 502, "sso-provider-unavailable", "Identity provider unavailable"


class _FetchFailed(Exception):
    """A provider URL that is unsafe, unreachable or answered something unusable."""


# --- URLs and fetching ------------------------------------------------------------------------


def _internal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_unspecified
        or ip.is_multicast
        or ip.is_reserved
    )


def _check_url_syntax(url: str, *, allow_insecure: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme != "https" and not (allow_insecure and parts.scheme == "http"):
        raise _FetchFailed(f"{url} is not an https URL")
    if not parts.hostname or parts.username is not None or parts.password is not None:
        raise _FetchFailed(f"{url} has no host, or carries credentials")
    if parts.fragment:
        raise _FetchFailed(f"{url} has a fragment")


async def _check_url(url: str, *, allow_insecure: bool) -> None:
    _check_url_syntax(url, allow_insecure=allow_insecure)
    if allow_insecure:
        return
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, parts.port or 443, type=socket.SOCK_STREAM
            )
        except OSError as exc:
            raise _FetchFailed(f"{host} cannot be resolved") from exc
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    if not addresses or any(_internal(a) for a in addresses):
        raise _FetchFailed(f"{host} resolves to a private or local address")


def _client(**kwargs: Any) -> Any:
    return AsyncOAuth2Client(timeout=_TIMEOUT, follow_redirects=False, **kwargs)


async def _get_json(client: Any, url: str, *, allow_insecure: bool) -> dict[str, Any]:
    await _check_url(url, allow_insecure=allow_insecure)
    body = bytearray()
    try:
        async with client.stream(
            "GET", url, withhold_token=True, headers={"Accept": "application/json"}
        ) as response:
            if response.status_code != 200:
                raise _FetchFailed(f"{url} answered HTTP {response.status_code}")
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > _MAX_DOCUMENT:
                    raise _FetchFailed(f"{url} answered more than {_MAX_DOCUMENT} bytes")
    except httpx.HTTPError as exc:
        raise _FetchFailed(f"{url} is unreachable ({type(exc).__name__})") from exc
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise _FetchFailed(f"{url} did not answer with a JSON object")
    return data


# --- discovery --------------------------------------------------------------------------------


def _strings(value: object) -> list[str] | None:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


async def discover(issuer: str, *, allow_insecure: bool) -> ProviderMetadata:
    """Fetch and check the provider's discovery document and its keys. Raises InvalidInput
    naming `issuer` when the provider is unreachable, unsafe or inconsistent."""

    def bad(reason: str) -> InvalidInput:
        return InvalidInput(f"The issuer cannot be used: {reason}.", field="issuer")

    issuer = issuer.strip()
    try:
        _check_url_syntax(issuer, allow_insecure=allow_insecure)
    except _FetchFailed as exc:
        raise bad(str(exc)) from None
    if urlsplit(issuer).query:
        raise bad(f"{issuer} has a query string")
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    async with _client() as client:
        try:
            doc = await _get_json(client, url, allow_insecure=allow_insecure)
        except _FetchFailed as exc:
            raise bad(str(exc)) from None
        # An ID token's iss must equal the document's issuer exactly; a trailing slash typed
        # or left out is forgiven by adopting the document's spelling.
        named = doc.get("issuer")
        if not isinstance(named, str) or named.rstrip("/") != issuer.rstrip("/"):
            raise bad(f"its discovery document names another issuer ({named!r})")
        endpoints: dict[str, str] = {}
        for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            value = doc.get(key)
            if not isinstance(value, str) or not value:
                raise bad(f"its discovery document has no {key}")
            try:
                await _check_url(value, allow_insecure=allow_insecure)
            except _FetchFailed as exc:
                raise bad(f"{key}: {exc}") from None
            endpoints[key] = value
        response_types = _strings(doc.get("response_types_supported"))
        if response_types is not None and "code" not in response_types:
            raise bad("the provider does not support the authorization code flow")
        challenges = _strings(doc.get("code_challenge_methods_supported"))
        if challenges is not None and "S256" not in challenges:
            raise bad("the provider does not support PKCE with S256")
        offered = _strings(doc.get("id_token_signing_alg_values_supported")) or ["RS256"]
        algs = tuple(a for a in offered if a in SUPPORTED_ALGS)
        if not algs:
            raise bad(
                f"it signs ID tokens with {', '.join(offered)}; Switchboard accepts "
                f"{', '.join(SUPPORTED_ALGS)}"
            )
        methods = _strings(doc.get("token_endpoint_auth_methods_supported"))
        if methods is None:
            method = "client_secret_basic"
        else:
            usable = [m for m in _AUTH_METHODS if m in methods]
            if not usable:
                raise bad("its token endpoint accepts neither client_secret_basic nor _post")
            method = usable[0]
        try:
            keys = await _get_json(client, endpoints["jwks_uri"], allow_insecure=allow_insecure)
            if not _signing_keys(keys):
                raise _FetchFailed("its JWKS holds no signing key")
        except _FetchFailed as exc:
            raise bad(str(exc)) from None
    return ProviderMetadata(
        issuer=named,
        authorization_endpoint=endpoints["authorization_endpoint"],
        token_endpoint=endpoints["token_endpoint"],
        jwks_uri=endpoints["jwks_uri"],
        signing_algs=algs,
        token_auth_method=method,
    )


def _signing_keys(jwks: dict[str, Any]) -> KeySet | None:
    """The JWKS's signature keys, or None when it holds none that can be read."""
    raw = jwks.get("keys")
    if not isinstance(raw, list):
        return None
    usable = [k for k in raw if isinstance(k, dict) and k.get("use", "sig") == "sig"]
    try:
        keys = KeySet.import_key_set({"keys": usable})
    except (JoseError, ValueError, TypeError, KeyError):
        return None
    return keys if keys.keys else None


# --- the flow ---------------------------------------------------------------------------------


def authorization_url(
    provider: ProviderMetadata,
    *,
    client_id: str,
    redirect_uri: str,
    state: str,
    nonce: str,
    code_verifier: str,
) -> str:
    url: str = prepare_grant_uri(
        provider.authorization_endpoint,
        client_id=client_id,
        response_type="code",
        redirect_uri=redirect_uri,
        scope=SCOPE,
        state=state,
        nonce=nonce,
        code_challenge=create_s256_code_challenge(code_verifier),
        code_challenge_method="S256",
    )
    return url


async def sign_in(
    provider: ProviderMetadata,
    *,
    client_id: str,
    client_secret: str,
    redirect_uri: str,
    code: str,
    code_verifier: str,
    nonce_hash: bytes,
    allow_insecure: bool,
) -> Identity:
    """Exchange the code (with the PKCE verifier) and validate the ID token that comes back."""
    async with _client(
        client_id=client_id,
        client_secret=client_secret,
        token_endpoint_auth_method=provider.token_auth_method,
        redirect_uri=redirect_uri,
    ) as client:
        try:
            await _check_url(provider.token_endpoint, allow_insecure=allow_insecure)
            token = await client.fetch_token(
                provider.token_endpoint,
                grant_type="authorization_code",
                code=code,
                code_verifier=code_verifier,
            )
        except OAuthError as exc:
            raise InvalidCredentials(
                f"The identity provider refused the sign-in: {exc.error}.", code="sso-failed"
            ) from None
        except (_FetchFailed, httpx.HTTPError, ValueError) as exc:
            raise ProviderUnavailable(
                f"The identity provider's token endpoint failed ({type(exc).__name__})."
            ) from exc
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise InvalidCredentials(
                "The identity provider returned no ID token.", code="sso-invalid-id-token"
            )
        try:
            jwks = await _get_json(client, provider.jwks_uri, allow_insecure=allow_insecure)
        except _FetchFailed as exc:
            raise ProviderUnavailable(f"The identity provider's keys: {exc}.") from exc
    access_token = token.get("access_token")
    return validate_id_token(
        id_token,
        jwks=jwks,
        issuer=provider.issuer,
        client_id=client_id,
        algorithms=provider.signing_algs,
        nonce_hash=nonce_hash,
        access_token=access_token if isinstance(access_token, str) else None,
    )


def _header(raw: str) -> dict[str, Any]:
    try:
        segment = raw.split(".", 1)[0]
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, UnicodeDecodeError):
        return {}
    return header if isinstance(header, dict) else {}


def _decode(raw: str, keys: KeySet, algorithms: list[str]) -> jwt.Token:
    """Verify the signature. A token without a kid is tried against each key, since some
    providers publish several and name none."""
    if _header(raw).get("kid") is None and len(keys.keys) > 1:
        for key in keys.keys:
            try:
                return jwt.decode(raw, key, algorithms=algorithms)
            except (JoseError, ValueError, TypeError):
                continue
        raise BadSignatureError()
    return jwt.decode(raw, keys, algorithms=algorithms)


def validate_id_token(
    raw: str,
    *,
    jwks: dict[str, Any],
    issuer: str,
    client_id: str,
    algorithms: Sequence[str],
    nonce_hash: bytes,
    access_token: str | None = None,
    now: int | None = None,
) -> Identity:
    """Check an ID token: signature against the provider's JWKS (asymmetric algorithms only),
    `iss`, `aud` (and `azp`), `exp`/`iat`, `at_hash` when given, and `nonce` against the hash
    kept for this sign-in. Raises InvalidCredentials (401)."""

    def refuse(reason: str) -> InvalidCredentials:
        return InvalidCredentials(
            f"The identity provider's ID token was refused: {reason}.", code="sso-invalid-id-token"
        )

    keys = _signing_keys(jwks)
    if keys is None:
        raise refuse("the provider's keys cannot be read")
    allowed = [a for a in algorithms if a in SUPPORTED_ALGS]
    if not allowed:
        # joserfc reads an empty list as "its defaults", which include HMAC.
        raise refuse("no signing algorithm it may use is acceptable")
    try:
        token = _decode(raw, keys, allowed)
    except (JoseError, ValueError, TypeError) as exc:
        raise refuse("its signature does not verify") from exc
    claims = CodeIDToken(
        token.claims,
        token.header,
        {
            "iss": {"essential": True, "value": issuer},
            "aud": {"essential": True, "value": client_id},
            "exp": {"essential": True},
        },
        {"client_id": client_id, "access_token": access_token},
    )
    try:
        claims.validate(now=now, leeway=_LEEWAY)
    except JoseError as exc:
        raise refuse(f"{exc.error} ({exc.description or 'claims'})") from exc
    nonce = claims.get("nonce")
    if not isinstance(nonce, str) or not secret_matches(nonce, nonce_hash):
        raise refuse("its nonce is not this sign-in's")
    email = claims.get("email")
    verified = claims.get("email_verified")
    name = claims.get("name")
    return Identity(
        subject=str(claims["sub"]),
        email=email.strip() if isinstance(email, str) and email.strip() else None,
        # Some providers send the JSON string "true"; anything else is not a verified address.
        email_verified=verified is True or verified == "true",
        name=name.strip()[:200] if isinstance(name, str) else "",
    )
