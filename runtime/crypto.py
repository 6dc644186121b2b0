"""AES-256-GCM sealing for secrets at rest."""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_VERSION = b"\x01"


def seal(key: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
    nonce = os.urandom(12)
    return _VERSION + nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def unseal(key: bytes, sealed: bytes, aad: bytes = b"") -> bytes:
    if sealed[:1] != _VERSION:
        raise ValueError("unknown sealed-data version")
    return AESGCM(key).decrypt(sealed[1:13], sealed[13:], aad)
