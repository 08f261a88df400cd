"""The results of an evaluation, kept on disk so an interrupted run resumes where it stopped.

One JSON object per line in ``<out>/results.jsonl``, appended (and flushed to disk) as each
video finishes. A record is keyed by

    key = sha256(video content sha256, geometry file sha256, prompt, scoring fingerprint
                 [, requested-path file sha256])

so a video is skipped when the same bytes were already scored with the same prompt and the
same options, whatever its name or folder; renaming a file costs nothing, changing an option
rescores. A line cut short by a crash is ignored when the file is read back.

Record fields: ``key``, ``video_sha256``, ``fingerprint``, ``status`` (``ok`` or ``failed``),
``result`` (a RewardResult as JSON, or null), ``error`` (``{code, detail}`` or null), ``source``
(``in-process`` or the service URL), ``job_id`` (service), ``run_id`` and ``finished_at`` (when
and by which run it was computed).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

RESULTS_FILE = "results.jsonl"


def result_key(video_sha256: str, geometry_sha256: str | None, prompt: str | None,
               fingerprint: str, trajectory_sha256: str | None = None) -> str:  # fmt: skip
    payload = [video_sha256, geometry_sha256, prompt, fingerprint]
    if trajectory_sha256 is not None:  # (keys of results without a requested path unchanged)
        payload.append(trajectory_sha256)
    payload = json.dumps(payload)
    return hashlib.sha256(payload.encode()).hexdigest()


def fingerprint_of(config: dict[str, Any]) -> str:
    """A short stable hash of the scoring configuration (what changes the numbers)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


class ResultStore:
    """Append-only JSON-lines file of records, indexed by key (the last record of a key wins)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / RESULTS_FILE
        self.records: dict[str, dict[str, Any]] = {}
        self.skipped_lines = 0
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        with self.path.open("r", encoding="utf-8") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                    self.records[record["key"]] = record
                except (json.JSONDecodeError, KeyError, TypeError):
                    self.skipped_lines += 1  # a line cut short by a crash: scored again

    def get(self, key: str) -> dict[str, Any] | None:
        return self.records.get(key)

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def append(self, record: dict[str, Any]) -> None:
        """Write one record durably before the run moves on (a crash loses at most this one)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record, separators=(",", ":"), allow_nan=False)
        # A previous crash may have left a partial line without its newline: start afresh.
        needs_newline = self._ends_without_newline()
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(("\n" if needs_newline else "") + line + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.records[record["key"]] = record

    def _ends_without_newline(self) -> bool:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return False
        with self.path.open("rb") as handle:
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) != b"\n"
