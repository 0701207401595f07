"""Secrets at rest: passwords hashed with argon2; API keys and refresh tokens stored as SHA-256 digests
(they are long random strings, so a fast digest is safe and lets a lookup be one indexed query).

An argon2 hash or check takes ~0.2 s of CPU here; the async forms run it in a worker thread (argon2-cffi releases
the GIL), so a login never stalls every other call and stream on the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

API_KEY_PREFIX = "tc_"
SHOWN_PREFIX_LENGTH = 8  # "tc_" + 5 characters: enough to recognise a key in a list, useless to guess it
MAX_CREDENTIAL_BYTES = 1024

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    if not password_hash:
        _hasher.hash(password)  # spend the same time as a real check, so timing does not reveal the user
        return False
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


async def hash_password_off_loop(password: str) -> str:
    return await asyncio.to_thread(hash_password, password)


async def verify_password_off_loop(password_hash: str | None, password: str) -> bool:
    return await asyncio.to_thread(verify_password, password_hash, password)


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def new_refresh_token() -> str:
    return secrets.token_urlsafe(48)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def same_digest(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
