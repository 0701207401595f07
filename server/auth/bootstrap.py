"""First start: make sure an admin exists and can get in.

With TYPECASE_ADMIN_API_KEY set, that key authenticates the admin. Without it, the first start creates an admin key,
prints it once and keeps it in the data dir (mode 0600), so an embedded `make run` is usable at once. Idempotent,
and safe when several replicas start together (unique constraints decide; the losers re-read).
"""

from __future__ import annotations

import logging
import os

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from typecase.server.auth import credentials
from typecase.server.auth.models import ApiKeyRow, UserRow
from typecase.server.infra.sql import Database

log = logging.getLogger("typecase.auth")
ADMIN_KEY_FILE = "admin_api_key"


async def ensure_admin(db: Database, settings) -> str:
    """Returns the admin's user id."""
    admin = await _admin_user(db, settings)
    if settings.admin_api_key is not None:
        await _ensure_key(db, admin.id, settings.secret("admin_api_key"), "bootstrap (TYPECASE_ADMIN_API_KEY)")
        return admin.id
    key_file = settings.data_dir / ADMIN_KEY_FILE
    if key_file.exists():
        return admin.id
    async with db.session() as session:
        has_key = (
            await session.scalars(
                select(ApiKeyRow.id).where(ApiKeyRow.owner_id == admin.id, ApiKeyRow.revoke_time.is_(None)).limit(1)
            )
        ).first()
    if has_key:
        return admin.id
    secret = credentials.new_api_key()
    await _ensure_key(db, admin.id, secret, "bootstrap (generated at first start)")
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
    print(f"Typecase admin API key (shown once; also saved to {key_file}):\n  {secret}", flush=True)
    return admin.id


async def _admin_user(db: Database, settings) -> UserRow:
    async with db.session() as session:
        by_name = UserRow.username_lower == settings.admin_username.lower()
        admin = (await session.scalars(select(UserRow).where(by_name))).first()
        if admin is None:
            admin = UserRow(username=settings.admin_username, display_name="Administrator", role="admin")
            session.add(admin)
            try:
                await session.commit()
                log.info("created the admin user %r", settings.admin_username)
            except IntegrityError:
                await session.rollback()
                admin = (await session.scalars(select(UserRow).where(by_name))).one()
        password = settings.secret("admin_password")
        if password and not credentials.verify_password(admin.password_hash, password):
            admin.password_hash = credentials.hash_password(password)
            await session.commit()
        return admin


async def _ensure_key(db: Database, owner_id: str, secret: str, name: str) -> None:
    key_digest = credentials.digest(secret)
    async with db.session() as session:
        if (await session.scalars(select(ApiKeyRow.id).where(ApiKeyRow.secret_sha256 == key_digest))).first():
            return
        session.add(
            ApiKeyRow(
                owner_id=owner_id, name=name, prefix=secret[: credentials.SHOWN_PREFIX_LENGTH], secret_sha256=key_digest
            )
        )
        try:
            await session.commit()
        except IntegrityError:  # another replica stored it first
            await session.rollback()
