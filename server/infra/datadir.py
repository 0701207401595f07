"""The data directory is private to the server's user: 0700, and everything in it 0600 (files) or 0700 (dirs).

It holds the SQLite database (password hashes, the token signing key), the admin API key, the secret key file,
log history (request paths, errors), uploaded documents and the vectors made from them. The process umask is set to
0o077 first, so files made by code we do not control (SQLite's -wal/-shm, milvus-lite, alembic's lock) are private
too. A data directory made by an earlier version (0755/0644) is tightened once, at the first start that finds it
open to others; later starts cost one stat.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

PRIVATE_UMASK = 0o077
OTHERS = stat.S_IRWXG | stat.S_IRWXO


def prepare_data_dir(path: Path) -> None:
    """Create the data dir private, or make an existing one private (with everything in it it owns)."""
    os.umask(PRIVATE_UMASK)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) & OTHERS:
        tightened = tighten(path)
        log.warning(
            "data dir %s was readable by other users: made it and %d entries in it private (0700/0600)", path, tightened
        )


def tighten(root: Path) -> int:
    """Remove group and other permissions from `root` and everything under it that this user owns (symlinks are
    left alone, not followed). Returns how many entries changed."""
    uid = os.getuid()

    def private(name: str) -> int:
        try:
            st = os.lstat(name)
            if stat.S_ISLNK(st.st_mode) or st.st_uid != uid or not stat.S_IMODE(st.st_mode) & OTHERS:
                return 0
            os.chmod(name, stat.S_IMODE(st.st_mode) & ~OTHERS)
            return 1
        except FileNotFoundError:  # removed meanwhile
            return 0

    changed = private(str(root))
    for directory, dirnames, filenames in os.walk(root):
        changed += sum(private(os.path.join(directory, name)) for name in (*dirnames, *filenames))
    return changed
