"""Child process for the concurrent-migration tests: waits for "go" on stdin, migrates, prints the applied list."""

import asyncio
import json
import sys

from typecase.server.infra.schema import migrate
from typecase.server.infra.sql import Database


async def main(url: str) -> None:
    db = Database(url)
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # start both children at the same moment
    try:
        applied = await migrate(db)
    finally:
        await db.stop()
    print(json.dumps(applied), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
