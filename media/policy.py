"""Where a tenant may call, and what may be said about where a call comes from. Pure rules."""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers
from phonenumbers import PhoneNumberType

E164_RE = re.compile(r"^\+[1-9][0-9]{6,14}$")
_VISUAL = re.compile(r"[\s().\-]")


class PolicyRefused(Exception):
    """An outbound call the policy does not allow; `code` is machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class OutboundPolicy:
    """Calls go to the caller ID's own country unless more countries are allowed; calls abroad
    need `international`; premium-rate and shared-cost numbers need `premium`."""

    allowed_countries: frozenset[str] = frozenset()
    international: bool = False
    premium: bool = False


_PREMIUM_TYPES = frozenset({PhoneNumberType.PREMIUM_RATE, PhoneNumberType.SHARED_COST})


def dialed_e164(user: str | None) -> str | None:
    """The E.164 form of a Request-URI user part as carriers send it ('+1555…', '1555…',
    '001555…'), or None when it is not a telephone number."""
    if not user:
        return None
    text = _VISUAL.sub("", user.split(";", 1)[0])
    if text.startswith("00"):
        text = "+" + text[2:]
    elif not text.startswith("+"):
        text = "+" + text
    return text if E164_RE.match(text) else None


def _parse(e164: str) -> phonenumbers.PhoneNumber:
    try:
        return phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException as exc:
        raise PolicyRefused("invalid_destination", f"{e164} is not a telephone number") from exc


def check_destination(destination: str, caller_id: str, policy: OutboundPolicy) -> str:
    """The destination's region code if the policy allows calling it from `caller_id`."""
    if not E164_RE.match(destination):
        raise PolicyRefused("invalid_destination", "the destination must be an E.164 number")
    number = _parse(destination)
    if not phonenumbers.is_valid_number(number):
        raise PolicyRefused("invalid_destination", f"{destination} is not a valid number")
    region = phonenumbers.region_code_for_number(number) or ""
    home_number = _parse(caller_id)
    home = phonenumbers.region_code_for_number(home_number) or ""
    # By country calling code, so a call inside a shared numbering plan (+1) is not "abroad".
    abroad = number.country_code != home_number.country_code
    if abroad and region not in policy.allowed_countries and not policy.international:
        raise PolicyRefused(
            "international_not_allowed",
            f"calls from {home or 'this caller ID'} to {region or 'that country'} are not allowed",
        )
    if phonenumbers.number_type(number) in _PREMIUM_TYPES and not policy.premium:
        raise PolicyRefused("premium_not_allowed", f"{destination} is a premium-rate number")
    return region
