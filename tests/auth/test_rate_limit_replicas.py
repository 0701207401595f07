"""A rate limit of N per minute holds to N across two server processes sharing Redis."""

from __future__ import annotations

import httpx
import redis

from tests.conftest import ADMIN_KEY

REDIS_DB = 11


def test_per_key_limit_holds_across_two_replicas(server_factory, pg_database_url):
    env = {
        "TYPECASE_DATABASE_URL": pg_database_url,
        "TYPECASE_REDIS_URL": f"redis://127.0.0.1:6379/{REDIS_DB}",
        "TYPECASE_RATE_LIMIT_PER_KEY": "7/minute",
        "TYPECASE_RATE_LIMIT_PER_USER": "",
    }
    replicas = [server_factory(env=env, name=f"replica{i}").start() for i in range(2)]
    for replica in replicas:
        replica.wait_ready()
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    try:
        statuses = [httpx.get(replicas[i % 2].http_url + "/v1/auth/me", headers=headers).status_code for i in range(12)]
    finally:
        redis.Redis(db=REDIS_DB).flushdb()
    assert statuses.count(200) == 7, statuses
    assert statuses.count(429) == 5
    assert statuses[:7] == [200] * 7  # alternating replicas, the shared window fills exactly once
