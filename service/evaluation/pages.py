"""The report pages of a run (``--report DIR``): where each video's page goes, which pages are
current, writing them and the index.

Layout: ``DIR/index.html`` and ``DIR/videos/<group>/<name>.html``. ``DIR/pages.jsonl`` records
which result each page was drawn from (``{"page": ..., "key": ...}`` per line, the last line of
a page wins), so a rerun redraws only missing or outdated pages.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path

from service.evaluation.scorers import Task

MANIFEST = "pages.jsonl"
INDEX = "index.html"


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "video"


class ReportPages:
    def __init__(self, root: str | Path, tasks: list[Task]) -> None:
        self.root = Path(root)
        self.paths: dict[Task, Path] = {}
        used: set[Path] = set()
        for task in tasks:
            folder = self.root / "videos" / slug(task.entry.group)
            path = folder / f"{slug(task.entry.name)}.html"
            if path in used:  # two names with the same slug
                path = folder / f"{slug(task.entry.name)}-{task.key[:8]}.html"
            used.add(path)
            self.paths[task] = path
        self.drawn_from: dict[str, str] = {}  # page (relative) -> result key
        manifest = self.root / MANIFEST
        if manifest.is_file():
            for line in manifest.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                    self.drawn_from[entry["page"]] = entry["key"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a line cut short: that page is redrawn

    def relative(self, task: Task) -> str:
        return self.paths[task].relative_to(self.root).as_posix()

    def is_current(self, task: Task) -> bool:
        return self.paths[task].is_file() and self.drawn_from.get(self.relative(task)) == task.key

    def write(self, task: Task, html: str) -> Path:
        path = self.paths[task]
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.parent / f".{uuid.uuid4().hex}.part"
        temporary.write_text(html, encoding="utf-8")
        os.replace(temporary, path)  # never a half-written page
        with (self.root / MANIFEST).open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"page": self.relative(task), "key": task.key}) + "\n")
        self.drawn_from[self.relative(task)] = task.key
        return path

    def draw(self, task: Task, record: dict, output=None) -> Path:
        """A video's page from its stored record (and its PipelineOutput when in memory)."""
        from service.report import video_page
        from service.schemas import RewardResult

        result = RewardResult.model_validate(record["result"]) if record.get("result") else None
        html = video_page(result, output=output, name=task.entry.name, prompt=task.prompt,
                          group=task.entry.group, error=record.get("error"), key=task.key,
                          index_href="../../" + INDEX)  # fmt: skip
        return self.write(task, html)

    def write_index(self, summary, tasks: list[Task], rows: list[dict]) -> Path:
        from service.report import IndexEntry, index_page
        from service.schemas import TERM_NAMES

        entries = []
        for task, row in zip(tasks, rows):
            href = self.relative(task) if self.paths[task].is_file() else None
            entries.append(IndexEntry(group=row["group"], name=row["name"], href=href,
                                      status=row["status"], total=row.get("total"),
                                      scores={t: row.get(t) for t in TERM_NAMES},
                                      error=row.get("error")))  # fmt: skip
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / INDEX
        path.write_text(index_page(summary, entries), encoding="utf-8")
        return path
