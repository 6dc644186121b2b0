"""Where an agent takes calls until the browser softphone holds their line: a desk phone or
softphone reached by SIP URI, or a phone number dialed through the tenant's trunk."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_SIP = re.compile(
    r"sip:(?P<user>[A-Za-z0-9_.!~*'()&=+$,;?/-]{1,64})@(?P<host>[^:;>\s]+)(?::(?P<port>[0-9]{1,5}))?"
)


class DeviceRejected(ValueError):
    pass


def check_device(device: str, allowed_networks: Iterable[str]) -> str:
    """`device` as it will be dialed, or DeviceRejected saying why not.

    SIP URIs must point at an IP address inside one of `allowed_networks` (the operator's own
    networks for desk phones); nothing else is dialed by URI, so an agent cannot make the
    platform send SIP to arbitrary hosts.
    """
    if _E164.fullmatch(device):
        return device
    match = _SIP.fullmatch(device)
    if match is None:
        raise DeviceRejected("a device is an E.164 number (+4930...) or sip:user@host[:port]")
    try:
        address = ipaddress.ip_address(match["host"])
    except ValueError:
        raise DeviceRejected("a SIP device must name its host by IP address") from None
    port = match["port"]
    if port is not None and not 0 < int(port) < 65536:
        raise DeviceRejected("the SIP port must be 1-65535")
    for network in allowed_networks:
        if address in ipaddress.ip_network(network, strict=False):
            return device
    raise DeviceRejected(f"SIP devices at {address} are not allowed on this platform")
