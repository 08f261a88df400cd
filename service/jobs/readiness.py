"""The worker's readiness file: present while this process is warm and taking jobs.

For probes that cannot ask Redis: a Kubernetes ``readinessProbe`` (``exec: test -f FILE``) or a
docker ``HEALTHCHECK``. The file is written (atomically: temp file + rename) only after the
models are loaded and warmed, and removed when the worker stops. A stale file left by a killed
process is removed first thing at start: an emptyDir or a container's writable layer outlives
a crash, and a worker restarting after one must not look ready while it loads its models.
The content is the worker's published info (JSON), for people reading it; probes only test
that it exists.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def clear_ready(path: Path | None) -> None:
    """Not ready (no-op without a configured path)."""
    if path is not None:
        Path(path).unlink(missing_ok=True)


def mark_ready(path: Path | None, info: dict) -> None:
    """Ready: write ``info`` as JSON to ``path`` all at once (a probe never sees half a file)."""
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(json.dumps(info, default=str) + "\n")
    os.replace(temp, path)

