"""What routes depend on, as Annotated aliases so signatures read like sentences:

    async def get_job(job_id: str, services: ServicesDep, key_id: ApiKeyDep): ...
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.api.errors import Problem

bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer <key>`.")


def key_id_of(key: str) -> str:
    """A short, non-reversible id of an API key (limits and logs never see the key)."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


@dataclass
class Services:
    """Everything a request needs, built once per app (see app.create_app)."""

    settings: Any
    connection: Any  # redis.Redis (sync; called from the thread pool)
    records: Any  # JobRecords
    queue: Any  # rq Queue
    store: Any  # DirectoryBlobStore
    events: Any  # JobEvents
    metrics: Any  # ApiMetrics
    key_digests: dict[str, str]  # sha256(key) -> key id
    insecure: bool


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


def require_api_key(
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
) -> str:
    """The caller's key id; 401 unless a configured key is presented as a bearer token."""
    if services.insecure:
        return "anonymous"
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Problem("unauthorized", "send an API key: Authorization: Bearer <key>")
    digest = hashlib.sha256(credentials.credentials.encode()).hexdigest()
    found = None
    for known, key_id in services.key_digests.items():  # compare all: no timing hint
        if hmac.compare_digest(known, digest):
            found = key_id
    if found is None:
        raise Problem("unauthorized", "the API key is not valid")
    return found


ApiKeyDep = Annotated[str, Depends(require_api_key)]
