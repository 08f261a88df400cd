"""``reward3d eval``: score a folder (or list) of videos, summarise, compare, report.

    reward3d eval DIR_OR_LIST... [--compare OTHER]... [--prompts FILE] [--out DIR] [--report DIR]
                  [--service URL] [options of `reward3d score`]

Writes into ``--out`` (default ``reward3d-eval``): ``results.jsonl`` (every result, the resume
cache), ``results.csv`` / ``results.parquet`` (one row per video), ``summary.md`` /
``summary.json`` (means with bootstrap intervals per folder, paired comparisons). With
``--report DIR``: ``DIR/index.html`` and one page per video. Rerunning the same command scores
only what is missing. Formats and the prompts file: docs/evaluation.md.

Exit status: 0 when every video has an outcome (scored, or refused as bad input: see the
table); 1 when some could not be scored for a reason a rerun may fix (rerun to retry them),
or the scorer cannot run; 2 for bad arguments; 130 when interrupted (rerun to continue).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from service.settings import GeometryBackend, RendererBackend

EXIT_RETRY = 1
EXIT_INTERRUPTED = 130


def eval_command(
    sources: Annotated[list[Path], typer.Argument(help="Folders of videos, or list files (one path per line); one group (model) each.")],
    compare: Annotated[Optional[list[Path]], typer.Option(help="Another folder (model B; repeatable): each source is compared to it, paired by file name.")] = None,
    prompts: Annotated[Optional[Path], typer.Option(help="Prompts: .jsonl/.csv/.json (name -> prompt) or .txt (sorted names).")] = None,
    out: Annotated[Path, typer.Option(help="Results, table and summary go here (also the resume cache).")] = Path("reward3d-eval"),
    report: Annotated[Optional[Path], typer.Option(help="Write HTML report pages here (index.html + one page per video).")] = None,
    service: Annotated[Optional[str], typer.Option(help="Score through a running reward3d service at this URL.")] = None,
    api_key: Annotated[Optional[str], typer.Option(help="The service's API key (default: $REWARD3D_API_KEY).")] = None,
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="Videos in flight at once (service mode).")] = 8,
    geometry: Annotated[Optional[GeometryBackend], typer.Option(help="Geometry backend; 'oracle' reads NAME.geometry.npz next to each video.")] = None,
    renderer: Annotated[Optional[RendererBackend], typer.Option(help="Renderer backend.")] = None,
    terms: Annotated[Optional[str], typer.Option(help="Comma-separated terms, e.g. reconstruction,trajectory.")] = None,
    max_frames: Annotated[Optional[int], typer.Option(help="Frames sampled evenly over each clip.")] = None,
    long_side: Annotated[Optional[int], typer.Option(help="Working resolution (longer side, px).")] = None,
    resamples: Annotated[int, typer.Option(min=100, help="Bootstrap resamples.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
) -> None:  # fmt: skip
    """Evaluate folders of videos: per-video table, means with 95 % intervals, comparisons."""
    from pydantic import ValidationError

    from service.cli import configure_torch, fail, load_settings, stderr
    from service.evaluation.runner import evaluate
    from service.evaluation.scorers import EvaluationSetupError, InProcessScorer
    from service.evaluation.videos import EvaluationInputError
    from service.schemas import ScoreOptions

    try:
        options = ScoreOptions(
            terms=[t.strip() for t in terms.split(",") if t.strip()] if terms else None,
            max_frames=max_frames,
            long_side=long_side,
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        raise fail(f"invalid option {'.'.join(map(str, error['loc']))}: {error['msg']}") from None
    if service is not None:
        from service.evaluation.remote import ServiceScorer

        if geometry not in (None, GeometryBackend.ORACLE) or renderer is not None:
            raise fail("with --service the service chooses its backends; only --geometry oracle "
                       "(send each video's NAME.geometry.npz) applies")  # fmt: skip
        key = api_key or os.environ.get("REWARD3D_API_KEY")
        scorer = ServiceScorer(service, api_key=key, options=options, concurrency=concurrency,
                               known_geometry=geometry == GeometryBackend.ORACLE,
                               want_reports=report is not None)  # fmt: skip
    else:
        settings = load_settings(geometry_backend=geometry, renderer=renderer)
        configure_torch(settings)
        scorer = InProcessScorer(settings, options)

    reporter = ProgressReporter(stderr)
    try:
        outcome = evaluate(sources, scorer=scorer, out_dir=out, compare=compare,
                           prompts_file=prompts, report_dir=report, resamples=resamples,
                           seed=seed, reporter=reporter)  # fmt: skip
    except EvaluationInputError as exc:
        raise fail(str(exc)) from None
    except EvaluationSetupError as exc:
        raise fail(str(exc), code=EXIT_RETRY) from None
    except KeyboardInterrupt:
        reporter.close()
        stderr.print(f"[yellow]interrupted[/]: results so far are kept in {out}; "
                     "rerun the same command to score only what is missing")  # fmt: skip
        raise typer.Exit(EXIT_INTERRUPTED) from None
    finally:
        reporter.close()

    print_summary(outcome)
    counts = outcome.counts
    stderr.print(
        f"{counts.videos} videos: {counts.computed} scored now, {counts.reused} reused from "
        f"{out / 'results.jsonl'}"
        + (f", {counts.rescored_for_report} rescored for their report page" if counts.rescored_for_report else "")
    )  # fmt: skip
    for path in outcome.written:
        stderr.print(f"wrote {path}", highlight=False)
    if counts.retry_later:
        stderr.print(f"[yellow]{counts.retry_later} videos could not be scored this time[/] "
                     "(see the error column); rerun to retry them")  # fmt: skip
        raise typer.Exit(EXIT_RETRY)


class ProgressReporter:
    """A progress bar with an ETA over the videos that need scoring (reused ones are instant
    and would make the ETA lie, so they are counted apart)."""

    def __init__(self, console) -> None:
        self.console = console
        self.progress = None

    def planned(self, to_score: int, reused: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console.print(f"{reused} already scored (reused), {to_score} to score")
        if to_score == 0:
            return
        self.progress = Progress(
            TextColumn("[cyan]{task.description}", justify="left"), BarColumn(),
            MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
            TextColumn("{task.fields[last]}", style="dim"), console=self.console,
        )  # fmt: skip
        self.bar = self.progress.add_task("scoring", total=to_score, last="")
        self.progress.start()

    def finished(self, task, scored) -> None:
        if self.progress is None:
            return
        mark = "" if scored.status == "ok" else " (failed)"
        self.progress.update(self.bar, advance=1, last=f"{task.entry.name}{mark}")

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def print_summary(outcome) -> None:
    from rich.table import Table

    from service.cli import stdout
    from service.evaluation.tables import verdict

    summary = outcome.summary
    table = Table(title=f"means, {summary.confidence:.0%} bootstrap intervals", title_justify="left")
    for heading in ("group", "videos", "scored", "failed"):
        table.add_column(heading, justify="left" if heading == "group" else "right")
    for column in summary.columns:
        table.add_column(column.label, justify="right")
    for group in summary.groups:
        table.add_row(group.group, str(group.videos), str(group.scored), str(group.failed),
                      *[group.means[c.key].format() for c in summary.columns])  # fmt: skip
    stdout.print(table)
    for comparison in summary.comparisons:
        a, b = comparison.group_a, comparison.group_b
        table = Table(title=f"{a} vs. {b}: {comparison.pairs} pairs", title_justify="left")
        for heading in ("metric", a, b, f"{a} - {b}", f"{a} wins", f"{a} better?"):
            table.add_column(heading, justify="left" if heading == "metric" else "right")
        for column in summary.columns:
            result = comparison.columns[column.key]
            table.add_row(column.label, f"{result.mean_a:.3f}", f"{result.mean_b:.3f}",
                          result.difference.format(), result.win_rate.format(2), verdict(result))  # fmt: skip
        stdout.print(table)
