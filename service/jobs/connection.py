"""Redis connections as rq needs them (bytes replies), with timeouts and keepalive."""

from __future__ import annotations

import redis


def redis_connection(url: str) -> redis.Redis:
    options = {"socket_connect_timeout": 5, "health_check_interval": 30}
    if not url.startswith("unix://"):
        options["socket_keepalive"] = True  # TCP only
    return redis.Redis.from_url(url, **options)
