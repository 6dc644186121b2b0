"""Parsing and normalising phone numbers to E.164 with the phonenumbers library."""

from __future__ import annotations

from dataclasses import dataclass

import phonenumbers

from tenancy.errors import InvalidInput


@dataclass(frozen=True, slots=True)
class ParsedNumber:
    e164: str
    country: str
    area_code: str


def parse_e164(raw: str, *, region: str | None = None, field: str = "e164") -> ParsedNumber:
    """A valid, normalised E.164 number, or InvalidInput naming `field` and saying why."""
    text = raw.strip()
    try:
        number = phonenumbers.parse(text, None if text.startswith("+") else region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidInput(f"'{raw}' is not a phone number: {exc._msg}", field=field) from None
    if not phonenumbers.is_possible_number(number):
        raise InvalidInput(f"'{raw}' has the wrong length for its country.", field=field)
    if not phonenumbers.is_valid_number(number):
        raise InvalidInput(f"'{raw}' is not a valid number in its numbering plan.", field=field)
    country = phonenumbers.region_code_for_number(number) or ""
    national = str(number.national_number)
    ndc = phonenumbers.length_of_national_destination_code(number)
    return ParsedNumber(
        e164=phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),
        country=country,
        area_code=national[:ndc] if ndc > 0 else "",
    )
