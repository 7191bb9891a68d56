"""Runs test_redis_async (common/redis_async.c's command timeout: a busy
Redis keeps the connection, a stuck one is dropped) against a real
redis-server started here and stopped afterwards."""
import os
import subprocess

from harness import Redis, binary, run, test


@test
def redis_async_against_a_real_server():
    redis = Redis()
    try:
        p = subprocess.run([binary("tests/unit/test_redis_async")], capture_output=True,
                           text=True, timeout=60, env={**os.environ, "REDIS_URL": redis.url})
        print(p.stdout, end="")
        assert p.returncode == 0, p.stdout + p.stderr
    finally:
        redis.kill()


run()
