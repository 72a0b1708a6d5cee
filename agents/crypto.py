"""Webhook secrets: generated, encrypted at rest, and the signature they make.

A secret is 256 random bits (``whsec_`` + URL-safe base64). It is shown to the member once, when
the endpoint is created, and stored only encrypted: Fernet (AES-128-CBC with HMAC-SHA256, from
``cryptography``) under the keys of ``WEBHOOK_SECRET_KEYS`` — the first encrypts, every one
decrypts (``MultiFernet``), so keys rotate by putting a new one first. Without that setting the
key is derived from ``SECRET_KEY`` (HKDF-SHA256), so a development venue needs nothing more.

A delivery is signed with HMAC-SHA256 under the endpoint's secret over ``f"{timestamp}.{body}"``
— the Unix time of the attempt in seconds, a dot, and the exact body sent — as lowercase hex, in
the header ``Clearing-Webhook-Signature: v1=<hex>`` (``docs/agents.md``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"


def webhook_secret_generate() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def _derived_key(secret_key: str) -> bytes:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"clearing webhook secrets").derive(
        secret_key.encode()
    )
    return base64.urlsafe_b64encode(derived)


@cache
def _fernet(keys: tuple[str, ...], secret_key: str) -> MultiFernet:
    try:
        fernets = [Fernet(key.encode()) for key in keys] or [Fernet(_derived_key(secret_key))]
    except ValueError as error:
        raise ImproperlyConfigured(
            f"WEBHOOK_SECRET_KEYS holds a key that is not a Fernet key: {error}"
        ) from None
    return MultiFernet(fernets)


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.WEBHOOK_SECRET_KEYS), settings.SECRET_KEY)


def secret_encrypt(secret: str) -> str:
    return fernet().encrypt(secret.encode()).decode()


def secret_decrypt(token: str) -> str:
    """The secret of an encrypted ``token``; ``InvalidToken`` when no configured key opens it."""
    return fernet().decrypt(token.encode()).decode()


def signature(*, secret: str, timestamp: int, body: bytes) -> str:
    """``v1=`` and the hex HMAC-SHA256 of ``f"{timestamp}.{body}"`` under ``secret``."""
    message = str(timestamp).encode() + b"." + body
    return f"{SIGNATURE_VERSION}=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_valid(*, secret: str, timestamp: int, body: bytes, header: str) -> bool:
    """Whether ``header`` is the signature of ``body`` at ``timestamp`` (constant-time compare):
    what a receiver runs, also used by the tests' receiver."""
    return hmac.compare_digest(signature(secret=secret, timestamp=timestamp, body=body), header)


__all__ = [
    "InvalidToken",
    "secret_decrypt",
    "secret_encrypt",
    "signature",
    "signature_valid",
    "webhook_secret_generate",
]
