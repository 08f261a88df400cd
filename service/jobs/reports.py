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

from service.jobs.blobs import private_dir, private_file

REPORTS_FOLDER = "reports"
_JOB_ID = re.compile(r"^[0-9A-Za-z_-]{1,64}$")


class ReportStore:
    """Pages under ``<blob_dir>/reports``; with the s3 blob store, also in the bucket (under
    ``<prefix>/reports/``), which is then the copy the API reads."""

    def __init__(self, blob_dir: str | Path, objects=None) -> None:  # objects: S3Objects | None
        self.root = Path(blob_dir) / REPORTS_FOLDER
        self.objects = objects

    def path(self, job_id: str, index: int) -> Path:
        if not _JOB_ID.match(job_id) or index < 0:
            raise ValueError("invalid job id or item index")
        return self.root / job_id / f"{int(index)}.html"

    def write(self, job_id: str, index: int, html: str) -> Path:
        path = self.path(job_id, index)
        private_dir(path.parent)  # the pages show the callers' videos: owner only (0700 / 0600)
        temporary = path.parent / f".{uuid.uuid4().hex}.part"
        with private_file(temporary) as file:
            file.write(html.encode("utf-8"))
        os.replace(temporary, path)  # readers never see half a page
        if self.objects is not None:
            self.objects.put_bytes(self._name(job_id, index), html.encode("utf-8"), "text/html")
        return path

    def read(self, job_id: str, index: int) -> bytes | None:
        try:
            return self.path(job_id, index).read_bytes()
        except (FileNotFoundError, ValueError):
            pass
        if self.objects is None or not _JOB_ID.match(job_id) or index < 0:
            return None
        from service.jobs.object_storage import ObjectMissingError

        try:
            return self.objects.get_bytes(self._name(job_id, index))
        except ObjectMissingError:
            return None

    @staticmethod
    def _name(job_id: str, index: int) -> str:
        return f"{job_id}/{int(index)}.html"

    def collect_garbage(self, *, older_than_s: float, keep: set[str]) -> int:
        """Remove the pages of jobs not in ``keep`` (unfinished jobs) untouched for
        ``older_than_s``. Returns the number of jobs whose pages were removed."""
        cutoff = time.time() - older_than_s
        removed = self._collect_objects(cutoff, keep) if self.objects is not None else 0
        if not self.root.is_dir():
            return removed
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

    def _collect_objects(self, cutoff: float, keep: set[str]) -> int:
        newest: dict[str, float] = {}
        names: dict[str, list[str]] = {}
        for entry in self.objects.list():
            name = self.objects.name_of(entry.key)
            job_id = name.split("/", 1)[0]
            newest[job_id] = max(newest.get(job_id, 0.0), entry.last_modified.timestamp())
            names.setdefault(job_id, []).append(name)
        expired = [job_id for job_id, stamp in newest.items() if job_id not in keep and stamp < cutoff]
        self.objects.delete([name for job_id in expired for name in names[job_id]])
        return len(expired)


def open_report_store(settings) -> ReportStore:
    """Report pages where the settings keep blobs (the shared directory, or the S3 bucket)."""
    objects = None
    if settings.blob_store == "s3":
        from service.jobs.object_storage import open_s3_objects

        objects = open_s3_objects(settings, under=REPORTS_FOLDER)
    return ReportStore(settings.resolved_blob_dir(), objects)
