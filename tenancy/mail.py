"""The emails tenancy sends. Plain text: they must survive every mail client."""

from __future__ import annotations

from urllib.parse import quote


def verification(base_url: str, company: str, token: str) -> tuple[str, str]:
    link = f"{base_url}/verify-email?token={quote(token)}"
    return (
        "Verify your email for Switchboard",
        f"Welcome to Switchboard!\n\nConfirm this address to activate {company}:\n\n{link}\n\n"
        "The link works once and expires in 48 hours. If you did not sign up, ignore this mail.\n",
    )


def invitation(base_url: str, company: str, role: str, token: str) -> tuple[str, str]:
    link = f"{base_url}/accept-invitation?token={quote(token)}"
    return (
        f"You are invited to {company} on Switchboard",
        f"You have been invited to join {company} as {role}.\n\nSet your password here:\n\n"
        f"{link}\n\nThe link works once and expires in 7 days.\n",
    )


def password_reset(base_url: str, token: str) -> tuple[str, str]:
    link = f"{base_url}/reset-password?token={quote(token)}"
    return (
        "Reset your Switchboard password",
        f"Someone asked to reset the password for this address.\n\n{link}\n\n"
        "The link works once and expires in one hour. If it was not you, ignore this mail.\n",
    )
