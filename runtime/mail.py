"""Outgoing mail: rows queued in mail_outbox inside business transactions, delivered here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import smtplib
from datetime import timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Protocol, TextIO

import asyncpg

log = logging.getLogger(__name__)


class MailTransport(Protocol):
    async def send(self, message: EmailMessage) -> None: ...


class SmtpTransport:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        timeout: float = 20.0,
    ) -> None:
        self.host, self.port = host, port
        self.username, self.password = username, password
        self.starttls, self.timeout = starttls, timeout

    def _send(self, message: EmailMessage) -> None:
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
            if self.starttls:
                smtp.starttls()
            if self.username:
                smtp.login(self.username, self.password or "")
            smtp.send_message(message)

    async def send(self, message: EmailMessage) -> None:
        await asyncio.to_thread(self._send, message)


class ConsoleTransport:
    """For `switchboard dev` without SMTP: the mail, links included, goes to the terminal."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    async def send(self, message: EmailMessage) -> None:
        body = message.get_content()
        self.stream.write(
            f"\n--- mail to {message['To']}: {message['Subject']}\n{body}--- end of mail\n"
        )
        self.stream.flush()


def _retry_after(attempts: int) -> timedelta:
    return timedelta(seconds=min(3600, 15 * 2 ** min(attempts, 12)))


class MailRelay:
    """Delivers queued mail; a failure is retried with backoff, never dropped."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        transport: MailTransport,
        *,
        sender: str,
        batch: int = 20,
        poll_interval: float = 1.0,
    ) -> None:
        self.pool, self.transport, self.sender = pool, transport, sender
        self.batch, self.poll_interval = batch, poll_interval

    async def deliver_once(self) -> int:
        sent = 0
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch("select * from sb_mail_claim($1)", self.batch)
            for row in rows:
                message = EmailMessage()
                message["From"] = self.sender
                message["To"] = row["to_address"]
                message["Subject"] = row["subject"]
                message["Message-ID"] = make_msgid(domain="switchboard")
                message.set_content(row["body_text"])
                error: str | None = None
                try:
                    await self.transport.send(message)
                    sent += 1
                except (OSError, smtplib.SMTPException) as exc:
                    error = f"{type(exc).__name__}: {exc}"[:500]
                    log.warning(
                        "mail delivery failed", extra={"mail_id": str(row["id"]), "error": error}
                    )
                await conn.execute(
                    "select sb_mail_mark($1, $2, $3, $4)",
                    row["tenant_id"],
                    row["id"],
                    error,
                    _retry_after(row["attempts"]) if error else None,
                )
        return sent

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.deliver_once()
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("mail relay round failed", extra={"error": str(exc)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.poll_interval)
