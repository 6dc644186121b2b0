"""Pure checks on trunk fields: hosts, source networks, codecs. Each failure is an InvalidInput
naming the field, so the API and the operator CLI say the same thing."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

from tenancy.errors import InvalidInput

PLATFORM_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME = re.compile(rf"^(?:{_LABEL}\.)*{_LABEL}$")
MAX_SOURCES = 50
# An allow-list wider than this would let most of the internet present itself as the carrier.
_MIN_PREFIX = {4: 8, 6: 32}

Ip = ipaddress.IPv4Address | ipaddress.IPv6Address
Net = ipaddress.IPv4Network | ipaddress.IPv6Network


def _internal(value: Ip | Net) -> bool:
    """Addresses no outside carrier has: private, loopback, link-local, unspecified, multicast."""
    return (
        value.is_private
        or value.is_loopback
        or value.is_link_local
        or value.is_unspecified
        or value.is_multicast
        or value.is_reserved
    )


def check_platform_name(name: str) -> str:
    if not PLATFORM_NAME.fullmatch(name):
        raise InvalidInput(
            f"'{name}' is not a valid platform trunk name: use 1-63 lowercase letters, digits "
            "and hyphens, starting with a letter or digit (e.g. carrier-a).",
            field="name",
        )
    return name


def check_trunk_name(name: str) -> str:
    cleaned = name.strip()
    if not cleaned or not cleaned.isprintable():
        raise InvalidInput("name must be printable text, not blank.", field="name")
    return cleaned


def check_host(raw: str, *, allow_private: bool, field: str = "host") -> str:
    """A hostname or an IP literal, normalised. Internal IP literals (and localhost, and
    single-label names) are refused unless `allow_private`: a tenant must not point our media
    nodes at our own network."""
    text = raw.strip().lower()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        ip = None
    if ip is not None:
        if _internal(ip) and not allow_private:
            raise InvalidInput(
                f"{raw} is a private, loopback or link-local address; use the carrier's public "
                "address or hostname.",
                field=field,
            )
        return str(ip)
    name = text.removesuffix(".")
    if (
        not name
        or len(name) > 253
        or not _HOSTNAME.fullmatch(name)
        or name.rsplit(".", 1)[-1].isdigit()
    ):
        raise InvalidInput(f"'{raw}' is not a hostname or an IP address.", field=field)
    if not allow_private and (
        name == "localhost" or name.endswith(".localhost") or "." not in name
    ):
        raise InvalidInput(
            f"'{raw}' is not a public hostname; use the carrier's fully qualified name.",
            field=field,
        )
    return name


def check_sources(raw: Sequence[str], *, allow_private: bool, field: str) -> list[str]:
    """CIDR networks (a bare address means just that host), normalised and de-duplicated in the
    order given."""
    if len(raw) > MAX_SOURCES:
        raise InvalidInput(f"At most {MAX_SOURCES} source networks.", field=field)
    out: list[str] = []
    for value in raw:
        try:
            net = ipaddress.ip_network(value.strip(), strict=True)
        except ValueError as exc:
            hint = ""
            if "host bits set" in str(exc):
                loose = ipaddress.ip_network(value.strip(), strict=False)
                hint = f" (host bits are set: did you mean {loose}?)"
            raise InvalidInput(f"'{value}' is not a CIDR network{hint}.", field=field) from None
        if net.prefixlen < _MIN_PREFIX[net.version]:
            raise InvalidInput(
                f"{net} is too wide: an allow-list entry must be /{_MIN_PREFIX[net.version]} "
                "or narrower.",
                field=field,
            )
        if _internal(net) and not allow_private:
            raise InvalidInput(
                f"{net} is a private, loopback or link-local network; list the carrier's public "
                "addresses.",
                field=field,
            )
        if str(net) not in out:
            out.append(str(net))
    return out


def check_codecs(codecs: Sequence[str], *, field: str = "codecs") -> list[str]:
    if not codecs:
        raise InvalidInput("List at least one codec.", field=field)
    if len(set(codecs)) != len(codecs):
        raise InvalidInput("List each codec once, in order of preference.", field=field)
    unknown = [c for c in codecs if c not in ("PCMU", "PCMA")]
    if unknown:
        raise InvalidInput(
            f"{', '.join(unknown)}: only G.711 (PCMU, PCMA) is supported; calls are not "
            "transcoded.",
            field=field,
        )
    return list(codecs)


def check_pair(
    user: str | None, password: str | bytes | None, *, user_field: str, credential_field: str
) -> None:
    """Digest credentials come as a username and a password together, or not at all."""
    if user is not None and password is None:
        raise InvalidInput("A username needs a password.", field=credential_field)
    if password is not None and user is None:
        raise InvalidInput("A password needs a username.", field=user_field)
