"""Collecting the digits a caller keys in (menus, account numbers, PINs)."""

from __future__ import annotations

import asyncio

from media.stream import RtpStream

__all__ = ["collect_digits", "flush_digits"]


async def collect_digits(
    stream: RtpStream,
    *,
    max_digits: int,
    timeout: float,  # noqa: ASYNC109 - the inter-digit pause, not a deadline for the call
    first_timeout: float | None = None,
    terminator: str | None = "#",
) -> str:
    """Digits keyed on `stream`, up to `max_digits`, stopping early at `terminator` (which is
    not returned) or when the caller pauses: `first_timeout` (default `timeout`) for the first
    key, `timeout` between keys. May return "" when nothing was pressed."""
    collected: list[str] = []
    wait = timeout if first_timeout is None else first_timeout
    while len(collected) < max_digits:
        try:
            async with asyncio.timeout(wait):
                digit = await stream.digits.get()
        except TimeoutError:
            break
        if terminator is not None and digit == terminator:
            break
        collected.append(digit)
        wait = timeout
    return "".join(collected)


def flush_digits(stream: RtpStream) -> None:
    """Forget digits keyed before now, so type-ahead from an earlier menu is not read as an
    answer to the next."""
    while not stream.digits.empty():
        stream.digits.get_nowait()
