"""Redis connections as rq needs them (bytes replies), with timeouts and keepalive."""

from __future__ import annotations

import redis
from redis.exceptions import AuthenticationError, AuthorizationError
from redis.backoff import NoBackoff
from redis.retry import Retry

# A command answers in milliseconds; no answer in this long means Redis (or the path to it) is
# gone. Not for blocking commands: rq's dequeue waits far longer (see service/jobs/worker.py).
COMMAND_TIMEOUT_S = 5.0

# Redis being unreachable is not a reason to give up: callers reconnect (the worker with its
# own backoff, the API answering 503 meanwhile). Only these are final.
UNRECOVERABLE = (AuthenticationError, AuthorizationError)


def redis_connection(url: str, *, socket_timeout: float | None = COMMAND_TIMEOUT_S,
                     retries: int | None = None) -> redis.Redis:  # fmt: skip
    """``retries``: redis-py's own retries of a failed command (None: its default). 0 for a
    caller that runs its own reconnect loop and wants to hear about an outage at once."""
    options = {"socket_connect_timeout": 5, "socket_timeout": socket_timeout, "health_check_interval": 30}
    if retries is not None:
        options["retry"] = Retry(NoBackoff(), retries)
    if not url.startswith("unix://"):
        options["socket_keepalive"] = True  # TCP only
    return redis.Redis.from_url(url, **options)


def is_transient(exc: BaseException) -> bool:
    """Redis down, restarting or unreachable: worth waiting for."""
    return isinstance(exc, (redis.ConnectionError, redis.TimeoutError)) and not isinstance(exc, UNRECOVERABLE)
