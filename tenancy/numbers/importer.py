"""`switchboard numbers import FILE.csv`: load E.164 blocks into the platform inventory."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import asyncpg

from tenancy.errors import InvalidInput
from tenancy.numbers import repository as repo
from tenancy.numbers.e164 import parse_e164

_CAPABILITIES = {"voice", "sms"}
BATCH = 1000


@dataclass
class ImportSummary:
    read: int = 0
    imported: int = 0
    already_present: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def skip(self, line: int, reason: str) -> None:
        self.skipped[reason] += 1
        self.examples.setdefault(reason, f"line {line}")


def parse_rows(
    lines: Iterable[str], *, trunk: str, summary: ImportSummary
) -> Iterable[tuple[str, str, str, list[str], str]]:
    """CSV with a header: `number` (required; E.164 or national with `country`), optional
    `country` (ISO alpha-2) and `capabilities` (e.g. "voice;sms"). Yields inventory rows;
    records every skipped line's reason in `summary`."""
    reader = csv.DictReader(lines)
    if reader.fieldnames is None or "number" not in [f.strip() for f in reader.fieldnames]:
        raise InvalidInput("The CSV needs a header with a 'number' column.", field="number")
    seen: set[str] = set()
    for index, raw in enumerate(reader, start=2):
        summary.read += 1
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
        number, country = row.get("number", ""), row.get("country", "").upper() or None
        if not number:
            summary.skip(index, "empty number")
            continue
        try:
            parsed = parse_e164(number, region=country)
        except InvalidInput:
            summary.skip(index, "not a valid phone number")
            continue
        caps = [
            c.strip().lower()
            for c in row.get("capabilities", "voice").replace(",", ";").split(";")
            if c.strip()
        ] or ["voice"]
        if not set(caps) <= _CAPABILITIES:
            summary.skip(index, "unknown capability")
            continue
        if parsed.e164 in seen:
            summary.skip(index, "duplicate within the file")
            continue
        seen.add(parsed.e164)
        yield parsed.e164, parsed.country, parsed.area_code, sorted(set(caps)), trunk


async def import_numbers(
    conn: asyncpg.Connection,
    lines: Iterable[str],
    *,
    trunk: str,
    progress: Callable[[ImportSummary], None] | None = None,
) -> ImportSummary:
    if not trunk.strip():
        raise InvalidInput("Name the platform trunk the numbers arrive on.", field="trunk")
    summary = ImportSummary()
    batch: list[tuple[str, str, str, list[str], str]] = []

    async def flush() -> None:
        new = await repo.insert_inventory(conn, list(batch))
        summary.imported += new
        summary.already_present += len(batch) - new
        batch.clear()
        if progress:
            progress(summary)

    for row in parse_rows(lines, trunk=trunk.strip(), summary=summary):
        batch.append(row)
        if len(batch) >= BATCH:
            await flush()
    if batch:
        await flush()
    return summary
