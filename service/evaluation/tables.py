"""From stored results to tables: one row per video (CSV, Parquet), means with bootstrap
intervals per group, and paired comparisons between groups (Markdown, JSON, HTML).

Columns of a row: ``group``, ``name``, ``status`` (ok | failed), ``error``, ``total``, one
column per term score (``reconstruction``, ...), ``<term>.status`` and ``<term>.<metric>`` for
every scalar metric (``reconstruction.psnr``, ``trajectory.rotation_error_mean_deg``, ...),
then provenance (geometry backend, frames, seconds, content hash, cache key, run id).

Videos whose total is null (no term could be computed) and failed videos are left out of the
means, never counted as 0; the summary says how many there were.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.evaluation.stats import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    Interval,
    PairedComparison,
    mean_interval,
    paired_comparison,
)
from service.schemas import TERM_NAMES


@dataclass(frozen=True)
class Column:
    key: str  # the row field
    label: str  # for tables
    higher_is_better: bool


# The columns summarised per group, in the order of World-R1's consistency table.
SUMMARY_COLUMNS = (
    Column("total", "total", True),
    Column("reconstruction", "reconstruction", True),
    Column("trajectory", "trajectory", True),
    Column("plausibility", "plausibility", True),
    Column("quality", "quality", True),
    Column("reconstruction.psnr", "PSNR (dB)", True),
    Column("reconstruction.ssim", "SSIM", True),
    Column("reconstruction.lpips", "LPIPS", False),
    Column("reconstruction.coverage", "coverage", True),
    Column("trajectory.translation_error_rel_path", "transl. error", False),
    Column("trajectory.rotation_error_mean_deg", "rot. error (deg)", False),
    Column("trajectory.ate_sim3_rel_path", "ATE (rel. path)", False),
)
SCORE_KEYS = ("total", *TERM_NAMES)
LEADING = ("group", "name", "status", "error", "prompt", "total", *TERM_NAMES)
TRAILING = ("geometry_backend", "frames", "seconds", "video_sha256", "key", "source", "job_id",
            "run_id", "path")  # fmt: skip


def result_row(group: str, name: str, path: str, prompt: str | None, record: dict) -> dict:
    """One flat row for a stored record (see store.py)."""
    row: dict[str, Any] = {"group": group, "name": name, "path": path, "prompt": prompt,
                           "status": record["status"], "key": record["key"],
                           "video_sha256": record["video_sha256"], "source": record.get("source"),
                           "job_id": record.get("job_id"), "run_id": record.get("run_id")}  # fmt: skip
    error = record.get("error")
    row["error"] = f"{error['code']}: {error['detail']}" if error else None
    result = record.get("result")
    if not result:
        return row
    row["total"] = result.get("total")
    for term_name, term in result.get("terms", {}).items():
        row[term_name] = term.get("score")
        row[f"{term_name}.status"] = term.get("status")
        for metric, value in term.get("metrics", {}).items():
            if isinstance(value, bool) or value is None or isinstance(value, (int, float, str)):
                row[f"{term_name}.{metric}"] = value
    geometry = result.get("geometry") or {}
    row["geometry_backend"] = geometry.get("backend")
    row["frames"] = geometry.get("num_frames")
    total_ms = (result.get("timings_ms") or {}).get("total")
    row["seconds"] = None if total_ms is None else round(total_ms / 1000, 3)
    return row


def column_order(rows: list[dict]) -> list[str]:
    present = {key for row in rows for key in row}
    middle = sorted(present - set(LEADING) - set(TRAILING),
                    key=lambda k: (_term_rank(k), k))  # fmt: skip
    return [*LEADING, *middle, *[k for k in TRAILING if k in present]]


def _term_rank(key: str) -> int:
    term = key.split(".", 1)[0]
    return TERM_NAMES.index(term) if term in TERM_NAMES else len(TERM_NAMES)


def write_rows(rows: list[dict], directory: Path) -> list[Path]:
    """results.csv, and results.parquet when pyarrow is installed."""
    columns = column_order(rows)
    written = [directory / "results.csv"]
    with written[0].open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_value(row.get(k)) for k in columns})
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return written
    schema = _arrow_schema(rows, columns, pa)
    strings = {f.name for f in schema if f.type == pa.string()}
    table = pa.Table.from_pylist(
        [{k: (str(row[k]) if k in strings and row.get(k) is not None else row.get(k))
          for k in columns} for row in rows],
        schema=schema,
    )  # fmt: skip
    pq.write_table(table, directory / "results.parquet")
    written.append(directory / "results.parquet")
    return written


def _csv_value(value):
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return "" if value is None else value


def _arrow_schema(rows, columns, pa):
    """One type per column: float64 for numbers (ints included), bool, else string."""
    fields = []
    for column in columns:
        values = [row.get(column) for row in rows if row.get(column) is not None]
        if values and all(isinstance(v, bool) for v in values):
            kind = pa.bool_()
        elif values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            kind = pa.float64()
        else:
            kind = pa.string()
        fields.append(pa.field(column, kind))
    return pa.schema(fields)


# -- summaries ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class GroupSummary:
    group: str
    videos: int
    scored: int  # status ok with a total
    failed: int  # status failed
    no_total: int  # ok but no term could be computed (total null)
    means: dict[str, Interval]  # column key -> mean with interval


@dataclass(frozen=True)
class Comparison:
    group_a: str
    group_b: str
    pairs: int  # names present in both
    only_a: int
    only_b: int
    columns: dict[str, PairedComparison]


@dataclass(frozen=True)
class Summary:
    groups: list[GroupSummary]
    comparisons: list[Comparison]
    columns: list[Column]  # summary columns with at least one value
    resamples: int
    seed: int
    confidence: float


def summarize(
    rows: list[dict],
    *,
    compare: list[tuple[str, str]] = (),
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    confidence: float = DEFAULT_CONFIDENCE,
) -> Summary:
    options = dict(resamples=resamples, seed=seed, confidence=confidence)
    columns = [c for c in SUMMARY_COLUMNS if any(_number(r.get(c.key)) is not None for r in rows)]
    by_group: dict[str, list[dict]] = {}
    for row in rows:
        by_group.setdefault(row["group"], []).append(row)
    groups = []
    for group, members in by_group.items():
        ok = [r for r in members if r["status"] == "ok"]
        groups.append(GroupSummary(
            group=group,
            videos=len(members),
            scored=sum(1 for r in ok if r.get("total") is not None),
            failed=len(members) - len(ok),
            no_total=sum(1 for r in ok if r.get("total") is None),
            means={c.key: mean_interval([_number(r.get(c.key)) for r in ok], **options)
                   for c in columns},
        ))  # fmt: skip
    comparisons = []
    for group_a, group_b in compare:
        a = {r["name"]: r for r in by_group.get(group_a, []) if r["status"] == "ok"}
        b = {r["name"]: r for r in by_group.get(group_b, []) if r["status"] == "ok"}
        names = sorted(set(a) & set(b))
        comparisons.append(Comparison(
            group_a=group_a, group_b=group_b, pairs=len(names),
            only_a=len(set(a) - set(b)), only_b=len(set(b) - set(a)),
            columns={c.key: paired_comparison([_number(a[n].get(c.key)) for n in names],
                                              [_number(b[n].get(c.key)) for n in names],
                                              higher_is_better=c.higher_is_better, **options)
                     for c in columns},
        ))  # fmt: skip
    return Summary(groups, comparisons, columns, resamples, seed, confidence)


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return None if math.isnan(value) else float(value)


def markdown(summary: Summary) -> str:
    """The summary tables as Markdown (means with intervals; comparisons)."""
    percent = f"{summary.confidence:.0%}"
    lines = [
        "# Evaluation summary",
        "",
        f"Means over the scored videos with {percent} percentile-bootstrap intervals "
        f"({summary.resamples} resamples, seed {summary.seed}). Failed videos and videos "
        "without a total are left out of the means (never counted as 0).",
        "",
        "| group | videos | scored | failed | " + " | ".join(c.label for c in summary.columns) + " |",
        "|---|---:|---:|---:|" + "---:|" * len(summary.columns),
    ]
    for group in summary.groups:
        cells = [group.means[c.key].format() for c in summary.columns]
        lines.append(f"| {_md(group.group)} | {group.videos} | {group.scored} | {group.failed} | "
                     + " | ".join(cells) + " |")  # fmt: skip
    for comparison in summary.comparisons:
        a, b = _md(comparison.group_a), _md(comparison.group_b)
        lines += [
            "",
            f"## {a} vs. {b}",
            "",
            f"Paired by video name: {comparison.pairs} pairs ({comparison.only_a} only in {a}, "
            f"{comparison.only_b} only in {b}). Difference = {a} - {b}; {a} wins when its value "
            f"is better (higher, or lower for errors and LPIPS); ties count one half. "
            f"{percent} bootstrap intervals over pairs.",
            "",
            f"| metric | {a} | {b} | {a} - {b} | {a} wins | {a} better? |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for column in summary.columns:
            result = comparison.columns[column.key]
            lines.append(
                f"| {column.label}{'' if column.higher_is_better else ' (lower is better)'} | "
                f"{_fmt(result.mean_a)} | {_fmt(result.mean_b)} | {result.difference.format()} | "
                f"{result.win_rate.format(2)} | {verdict(result)} |"
            )
    return "\n".join(lines) + "\n"


def verdict(result: PairedComparison) -> str:
    """'yes' / 'no' when the difference interval excludes zero, else 'not significant'."""
    difference = result.difference
    if difference.n < 2 or math.isnan(difference.low):
        return "too few pairs"
    if not difference.excludes(0.0):
        return "not significant"
    better = difference.low > 0 if result.higher_is_better else difference.high < 0
    return "yes" if better else "no"


def _fmt(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.3f}"


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def summary_json(summary: Summary) -> dict:
    def interval(i: Interval) -> dict:
        return {"estimate": _nan_none(i.estimate), "low": _nan_none(i.low),
                "high": _nan_none(i.high), "n": i.n}  # fmt: skip

    return {
        "resamples": summary.resamples, "seed": summary.seed, "confidence": summary.confidence,
        "groups": [{"group": g.group, "videos": g.videos, "scored": g.scored, "failed": g.failed,
                    "no_total": g.no_total,
                    "means": {k: interval(v) for k, v in g.means.items()}}
                   for g in summary.groups],
        "comparisons": [{"a": c.group_a, "b": c.group_b, "pairs": c.pairs, "only_a": c.only_a,
                         "only_b": c.only_b,
                         "columns": {k: {"difference": interval(v.difference),
                                         "win_rate": interval(v.win_rate),
                                         "mean_a": _nan_none(v.mean_a),
                                         "mean_b": _nan_none(v.mean_b),
                                         "higher_is_better": v.higher_is_better,
                                         "a_better": verdict(v)}
                                     for k, v in c.columns.items()}}
                        for c in summary.comparisons],
    }  # fmt: skip


def _nan_none(value: float) -> float | None:
    return None if value is None or math.isnan(value) else value


def write_summary(summary: Summary, directory: Path) -> list[Path]:
    md, js = directory / "summary.md", directory / "summary.json"
    md.write_text(markdown(summary), encoding="utf-8")
    js.write_text(json.dumps(summary_json(summary), indent=2) + "\n", encoding="utf-8")
    return [md, js]
