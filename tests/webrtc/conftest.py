from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import MailCatcher, Services
from tests.webrtc.floor import Floor, open_floor


@pytest.fixture
async def floor(
    services: Services,
    database: str,
    smtp: tuple[MailCatcher, int],
    admin_conn: asyncpg.Connection,
    tmp_path: Path,
) -> AsyncIterator[Floor]:
    """One agent in one queue (60 s of wrap-up, which the softphone page shows a form for)."""
    async with open_floor(
        services, database, smtp, admin_conn, tmp_path, wrap_up_seconds=60
    ) as opened:
        yield opened
