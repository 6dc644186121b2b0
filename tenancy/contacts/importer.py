"""Reading a contacts CSV upload. Pure: bytes in, rows to apply and row errors out.

The header names the columns: `phone` (required), `name`, `vip`, `blocked`, `country` (the
region a national-format phone is dialled in) and `attr_<key>` (attribute `<key>`), in any
order. A column missing from the header leaves that field of an existing contact as it is; an
empty `attr_<key>` cell removes the attribute. A file that cannot be read as such a CSV is
refused whole (InvalidInput); a row that is wrong is reported with its line and column, and the
other rows still apply.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field

from tenancy.contacts.models import (
    ATTRIBUTE_KEY,
    MAX_ATTRIBUTES,
    MAX_NAME,
    MAX_VALUE,
    ImportRowError,
)
from tenancy.errors import InvalidInput
from tenancy.numbers.e164 import parse_e164

MAX_ROWS = 20_000
_FIELDS = ("phone", "name", "vip", "blocked", "country")
_ATTR = "attr_"
_KEY = re.compile(ATTRIBUTE_KEY)
_REGION = re.compile(r"^[A-Za-z]{2}$")
_TRUE = {"true", "yes", "1"}
_FALSE = {"false", "no", "0", ""}


@dataclass(frozen=True)
class ImportRow:
    """One valid row. None (and attributes not named) means: the file does not say."""

    line: int
    phone: str
    name: str | None
    vip: bool | None
    blocked: bool | None
    set_attributes: dict[str, str]
    drop_attributes: frozenset[str]


@dataclass
class ParsedFile:
    rows: list[ImportRow] = field(default_factory=list)
    errors: list[ImportRowError] = field(default_factory=list)


def _unusable(detail: str, column: str = "body") -> InvalidInput:
    return InvalidInput(detail, field=column)


def _header(cells: list[str]) -> list[str]:
    names = [c.strip().lower() for c in cells]
    seen: set[str] = set()
    attributes = 0
    for name in names:
        if name in seen:
            raise _unusable(f"The column '{name}' appears twice in the header.", name or "header")
        seen.add(name)
        if name.startswith(_ATTR):
            attributes += 1
            if not _KEY.fullmatch(name[len(_ATTR) :]):
                raise _unusable(
                    f"'{name}': attribute keys are a lower-case letter, then up to 63 letters, "
                    "digits or underscores.",
                    name,
                )
        elif name not in _FIELDS:
            raise _unusable(
                f"Unknown column '{name}'. Columns are phone, name, vip, blocked, country and "
                f"attr_<key>; rename it attr_{name} to keep it as an attribute, or remove it."
                if name
                else "The header has an empty column name.",
                name or "header",
            )
    if "phone" not in seen:
        raise _unusable("The CSV needs a header with a 'phone' column.", "phone")
    if attributes > MAX_ATTRIBUTES:
        raise _unusable(
            f"The header has {attributes} attr_ columns; a contact has at most {MAX_ATTRIBUTES} "
            "attributes.",
            "header",
        )
    return names


def _flag(value: str) -> bool | None:
    text = value.lower()
    return True if text in _TRUE else False if text in _FALSE else None


def _row(line: int, names: list[str], cells: list[str], out: ParsedFile) -> ImportRow | None:
    if len(cells) != len(names):
        out.errors.append(
            ImportRowError(
                line=line,
                field="row",
                message=f"The row has {len(cells)} fields; the header has {len(names)}.",
            )
        )
        return None
    values = {n: c.strip() for n, c in zip(names, cells, strict=True)}
    errors: list[ImportRowError] = []

    def wrong(column: str, message: str) -> None:
        errors.append(ImportRowError(line=line, field=column, message=message))

    phone = ""
    region = values.get("country", "")
    if region and not _REGION.fullmatch(region):
        wrong("country", f"'{region}' is not an ISO 3166-1 alpha-2 country code.")
    elif not values["phone"]:
        wrong("phone", "The phone is empty.")
    else:
        try:
            phone = parse_e164(values["phone"], region=region.upper() or None, field="phone").e164
        except InvalidInput as exc:
            wrong("phone", exc.detail)
    name = values.get("name")
    if name is not None and len(name) > MAX_NAME:
        wrong("name", f"The name is longer than {MAX_NAME} characters.")
    flags: dict[str, bool | None] = {}
    for column in ("vip", "blocked"):
        if column in values:
            flags[column] = _flag(values[column])
            if flags[column] is None:
                wrong(column, f"'{values[column]}' is not one of true/false/yes/no/1/0/empty.")
    set_attributes: dict[str, str] = {}
    drop: set[str] = set()
    for column, value in values.items():
        if not column.startswith(_ATTR):
            continue
        key = column[len(_ATTR) :]
        if len(value) > MAX_VALUE:
            wrong(column, f"The value is longer than {MAX_VALUE} characters.")
        elif value:
            set_attributes[key] = value
        else:
            drop.add(key)
    if errors:
        out.errors.extend(errors)
        return None
    return ImportRow(
        line=line,
        phone=phone,
        name=name,
        vip=flags.get("vip"),
        blocked=flags.get("blocked"),
        set_attributes=set_attributes,
        drop_attributes=frozenset(drop),
    )


def read_csv(data: bytes) -> ParsedFile:
    """Rows to apply and rows refused; InvalidInput if the file is not a usable contacts CSV."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _unusable("The file is not UTF-8 text.") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    out = ParsedFile()
    first_phone: dict[str, int] = {}
    names: list[str] | None = None
    consumed = 0
    data_rows = 0
    try:
        for cells in reader:
            line, consumed = consumed + 1, reader.line_num
            if not any(c.strip() for c in cells):
                continue
            if names is None:
                names = _header(cells)
                continue
            data_rows += 1
            if data_rows > MAX_ROWS:
                raise _unusable(f"The file has more than {MAX_ROWS} rows; split it.")
            row = _row(line, names, cells, out)
            if row is None:
                continue
            if row.phone in first_phone:
                out.errors.append(
                    ImportRowError(
                        line=line,
                        field="phone",
                        message=f"{row.phone} is already on line {first_phone[row.phone]}; "
                        "each phone once per file.",
                    )
                )
                continue
            first_phone[row.phone] = line
            out.rows.append(row)
    except csv.Error as exc:
        raise _unusable(f"Not a readable CSV file (line {reader.line_num}): {exc}.") from None
    if names is None:
        raise _unusable("The file is empty.")
    if data_rows == 0:
        raise _unusable("The file has a header but no rows.")
    return out
