"""An evaluation run, top to bottom:

1. collect the videos of each folder or list (a *group*, e.g. a model) and their prompts;
2. key each video by content hash + prompt + scoring fingerprint; skip those already stored;
3. score the rest (in-process, or through a service with many in flight), storing each result
   as it arrives (an interrupted run resumes at step 2);
4. write the per-video table (CSV, Parquet), the summary with bootstrap intervals and the
   paired comparisons (Markdown, JSON), and, when asked, the HTML report pages.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from service.evaluation.pages import ReportPages
from service.evaluation.scorers import Scored, Task
from service.evaluation.store import ResultStore, fingerprint_of, result_key
from service.evaluation.tables import Summary, result_row, summarize, write_rows, write_summary
from service.evaluation.videos import (
    EvaluationInputError,
    Group,
    collect_group,
    content_sha256,
    read_prompts,
)


class Scorer(Protocol):
    source: str
    full_reports: bool  # True: Scored.output carries frames and renders for full report pages
    uses_known_geometry: bool

    def fingerprint(self) -> dict[str, Any]: ...
    def prepare(self) -> None: ...
    def score_all(self, tasks: list[Task]): ...  # -> Iterator[tuple[Task, Scored]]
    def fetch_report(self, record: dict) -> str | None: ...  # a stored result's page, if kept


class Reporter(Protocol):
    """Progress hooks (the CLI shows a progress bar with them)."""

    def planned(self, to_score: int, reused: int) -> None: ...
    def finished(self, task: Task, scored: Scored) -> None: ...


@dataclass
class RunCounts:
    videos: int = 0  # entries over all groups
    unique: int = 0  # distinct keys (same content + prompt + options counted once)
    reused: int = 0  # found in the store
    computed: int = 0  # scored by this run and stored
    retry_later: int = 0  # failed for a reason a rerun may not repeat (not stored)
    rescored_for_report: int = 0  # stored, but scored again to draw its report page


@dataclass
class EvaluationOutcome:
    groups: list[Group]
    rows: list[dict]
    summary: Summary
    counts: RunCounts
    written: list[Path] = field(default_factory=list)
    run_id: str = ""


def evaluate(
    sources: list[str | Path],
    *,
    scorer: Scorer,
    out_dir: str | Path,
    compare: list[str | Path] | str | Path | None = None,
    prompts_file: str | Path | None = None,
    report_dir: str | Path | None = None,
    resamples: int = 10_000,
    seed: int = 0,
    reporter: Reporter | None = None,
) -> EvaluationOutcome:
    """Evaluate folders of videos; each source is compared with each ``compare`` folder."""
    out_dir, run_id = Path(out_dir), uuid.uuid4().hex[:12]
    if compare is None:
        compare = []
    elif isinstance(compare, (str, Path)):
        compare = [compare]

    # 1. Videos and prompts.
    groups = _unique_labels([collect_group(source) for source in [*sources, *compare]])
    prompts = _prompts(groups, prompts_file)

    # 2. Keys; what is already stored.
    fingerprint = fingerprint_of(scorer.fingerprint())
    tasks = plan_tasks(groups, prompts, fingerprint, with_geometry=scorer.uses_known_geometry)
    store = ResultStore(out_dir)
    pages = ReportPages(report_dir, tasks) if report_dir is not None else None
    by_key: dict[str, list[Task]] = {}
    for task in tasks:
        by_key.setdefault(task.key, []).append(task)
    counts = RunCounts(videos=len(tasks), unique=len(by_key))
    missing = [ts[0] for key, ts in by_key.items() if key not in store]
    stale_pages = [ts[0] for key, ts in by_key.items()
                   if key in store and any(not pages.is_current(t) for t in ts)
                   ] if pages else []  # fmt: skip
    counts.reused = counts.unique - len(missing)

    # 3. Score what is missing (and, for full report pages, what has no page yet).
    to_score = missing + (stale_pages if scorer.full_reports else [])
    if to_score:
        scorer.prepare()  # a scorer that cannot run stops here, before any video
    if reporter is not None:
        reporter.planned(len(to_score), counts.reused)
    transient: dict[str, dict] = {}  # failures not stored: shown in this run's table only
    if to_score:
        for task, scored in scorer.score_all(to_score):
            record = _record(task, scored, fingerprint, scorer.source, run_id)
            if task.key not in store:
                if scored.cacheable:
                    store.append(record)
                    counts.computed += 1
                else:
                    transient[task.key] = record
                    counts.retry_later += 1
            else:
                counts.rescored_for_report += 1
            if pages is not None:
                for same in by_key[task.key]:
                    _draw(pages, same, store.get(task.key) or record, scored)
            scored.output = None  # free the frames and renders before the next video
            if reporter is not None:
                reporter.finished(task, scored)
    if pages is not None and not scorer.full_reports:  # pages of stored results, not rescored
        for task in stale_pages:
            fetched = scorer.fetch_report(store.get(task.key))
            for same in by_key[task.key]:
                _draw(pages, same, store.get(task.key), Scored("ok", report_html=fetched))

    # 4. Tables, summary, index page.
    rows = []
    for task in tasks:
        record = store.get(task.key) or transient.get(task.key)
        if record is None:  # only when scoring stopped early; never silently dropped
            record = {"key": task.key, "video_sha256": task.video_sha256, "status": "failed",
                      "error": {"code": "not_scored", "detail": "the run stopped before it"}}  # fmt: skip
        rows.append(result_row(task.entry.group, task.entry.name, str(task.entry.path),
                               task.prompt, record))  # fmt: skip
    models, baselines = groups[: len(sources)], groups[len(sources) :]
    pairs = [(a.label, b.label) for a in models for b in baselines]
    summary = summarize(rows, compare=pairs, resamples=resamples, seed=seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = write_rows(rows, out_dir) + write_summary(summary, out_dir)
    if pages is not None:
        written.append(pages.write_index(summary, tasks, rows))
    return EvaluationOutcome(groups, rows, summary, counts, written, run_id)


def _unique_labels(groups: list[Group]) -> list[Group]:
    """Groups are labelled by folder name; two folders with the same name by their paths."""
    labels = [g.label for g in groups]
    clashing = {label for label in labels if labels.count(label) > 1}
    relabelled = []
    for group in groups:
        if group.label in clashing:
            label = str(group.source)
            group = Group(label, group.source, [replace(v, group=label) for v in group.videos])
        relabelled.append(group)
    if len({g.label for g in relabelled}) != len(relabelled):
        raise EvaluationInputError(f"the same folder is given twice: {labels}")
    return relabelled


def _prompts(groups: list[Group], prompts_file) -> dict[str, str]:
    if prompts_file is None:
        return {}
    # Names shared by all groups; a .txt file aligns with the first group's sorted names.
    names = sorted({v.name for g in groups for v in g.videos})
    if Path(prompts_file).suffix.lower() == ".txt":
        first = [v.name for v in groups[0].videos]
        return read_prompts(prompts_file, first)
    return read_prompts(prompts_file, names)


def plan_tasks(groups: list[Group], prompts: dict[str, str], fingerprint: str, *,
               with_geometry: bool) -> list[Task]:  # fmt: skip
    """One task per video, keyed by content, prompt and fingerprint (hashes read the files)."""
    tasks, hashes = [], {}
    for group in groups:
        for entry in group.videos:
            if entry.path not in hashes:
                hashes[entry.path] = content_sha256(entry.path)
            video_sha = hashes[entry.path]
            geometry_sha = None
            if with_geometry and entry.geometry_path is not None:
                geometry_sha = content_sha256(entry.geometry_path)
            trajectory_sha = None
            if entry.trajectory_path is not None:
                trajectory_sha = content_sha256(entry.trajectory_path)
            prompt = prompts.get(entry.name)
            key = result_key(video_sha, geometry_sha, prompt, fingerprint, trajectory_sha)
            tasks.append(Task(entry, prompt, key, video_sha, geometry_sha, trajectory_sha))
    return tasks


def _record(task: Task, scored: Scored, fingerprint: str, source: str, run_id: str) -> dict:
    result = json.loads(scored.result.model_dump_json()) if scored.result is not None else None
    return {
        "key": task.key, "video_sha256": task.video_sha256, "geometry_sha256": task.geometry_sha256,
        "fingerprint": fingerprint, "prompt": task.prompt, "name": task.entry.name,
        "group": task.entry.group, "status": scored.status, "result": result,
        "error": scored.error, "source": source, "job_id": scored.job_id, "run_id": run_id,
        "finished_at": round(time.time(), 3),
    }  # fmt: skip


def _draw(pages: ReportPages, task: Task, record: dict, scored: Scored) -> None:
    """A page drawn by the scorer (a service's report), else from the record and, in-process,
    the frames and renders still in memory."""
    if scored.report_html is not None:
        pages.write(task, scored.report_html)
    else:
        pages.draw(task, record, scored.output)
