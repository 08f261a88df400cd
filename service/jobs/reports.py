"""HTML report pages kept for items that asked for one (``"report": true``), served at
``GET /v1/jobs/{id}/report?item=<index>``.

A page (service.report.video_page: frames, held-out renders, error maps, camera path, novel
views; about 1 MB, self-contained) is drawn by the worker right after scoring, while the
renders are still in memory, and written to ``<blob_dir>/reports/<job id>/<index>.html``
(atomically: temp file + rename). The blob directory is already shared by API and workers; the
blob janitor leaves this folder alone, and ``collect_garbage`` here removes the pages of jobs
that are no longer unfinished and whose pages are older than the result TTL, so a page lives
as long as its job's results.
"""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from pathlib import Path

REPORTS_FOLDER = "reports"
_JOB_ID = re.compile(r"^[0-9A-Za-z_-]{1,64}$")


class ReportStore:
    def __init__(self, blob_dir: str | Path) -> None:
        self.root = Path(blob_dir) / REPORTS_FOLDER

    def path(self, job_id: str, index: int) -> Path:
        if not _JOB_ID.match(job_id) or index < 0:
            raise ValueError("invalid job id or item index")
        return self.root / job_id / f"{int(index)}.html"

    def write(self, job_id: str, index: int, html: str) -> Path:
        path = self.path(job_id, index)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.parent / f".{uuid.uuid4().hex}.part"
        temporary.write_text(html, encoding="utf-8")
        os.replace(temporary, path)  # readers never see half a page
        return path

    def read(self, job_id: str, index: int) -> bytes | None:
        try:
            return self.path(job_id, index).read_bytes()
        except (FileNotFoundError, ValueError):
            return None

    def collect_garbage(self, *, older_than_s: float, keep: set[str]) -> int:
        """Remove the pages of jobs not in ``keep`` (unfinished jobs) untouched for
        ``older_than_s``. Returns the number of jobs whose pages were removed."""
        if not self.root.is_dir():
            return 0
        cutoff = time.time() - older_than_s
        removed = 0
        for folder in self.root.iterdir():
            if folder.name in keep or not folder.is_dir():
                continue
            try:
                newest = max((p.stat().st_mtime for p in folder.iterdir()), default=0.0)
            except FileNotFoundError:
                continue
            if newest < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        return removed
