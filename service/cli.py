"""The ``reward3d`` command line.

    reward3d score VIDEO [--prompt TEXT] [--json] ...   score one video in-process
    reward3d info                                       what can run on this machine
    reward3d train CONFIG [--set k=v] [--resume latest]  Flow-GRPO fine-tuning (trainer_client)

Errors in the user's input print one clear line and exit with status 2; nothing prints a
traceback for bad input.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from service.settings import GeometryBackend, RendererBackend, Settings

app = typer.Typer(
    name="reward3d",
    help="3D-consistency rewards for generated video.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
stdout = Console()
stderr = Console(stderr=True)

EXIT_BAD_INPUT = 2


def fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """Print one line to stderr and return the exit to raise."""
    stderr.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def load_settings(**overrides) -> Settings:
    """Settings from the environment, with command-line overrides (None = keep)."""
    from pydantic import ValidationError

    values = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**values)
    except ValidationError as exc:
        raise fail(f"invalid setting: {exc.errors()[0]['msg']}") from None


def configure_torch(settings: Settings) -> None:
    """Thread count before any work: many threads on a few shared cores is 10-40x slower."""
    os.environ.setdefault("OMP_NUM_THREADS", str(settings.num_threads))
    import torch

    torch.set_num_threads(settings.num_threads)


@app.command()
def score(
    video: Annotated[Path, typer.Argument(help="Video file, folder of images, .npy or .safetensors.")],
    prompt: Annotated[Optional[str], typer.Option(help="The prompt (camera words set the target path).")] = None,
    trajectory: Annotated[Optional[Path], typer.Option(help="Requested camera path (.json or .npz).")] = None,
    geometry: Annotated[Optional[GeometryBackend], typer.Option(help="Geometry backend.")] = None,
    geometry_file: Annotated[Optional[Path], typer.Option(help="Known geometry (.npz); implies --geometry oracle.")] = None,
    renderer: Annotated[Optional[RendererBackend], typer.Option(help="Renderer backend.")] = None,
    terms: Annotated[Optional[str], typer.Option(help="Comma-separated terms, e.g. reconstruction,trajectory.")] = None,
    max_frames: Annotated[Optional[int], typer.Option(help="Frames sampled evenly over the clip.")] = None,
    long_side: Annotated[Optional[int], typer.Option(help="Working resolution (longer side, px).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
    save_renders: Annotated[Optional[Path], typer.Option(help="Write frames, renders, error maps and the path plot here.")] = None,
    report: Annotated[Optional[Path], typer.Option(help="Write an HTML report (DIR/report.html): why it scored as it did.")] = None,
) -> None:  # fmt: skip
    """Score one video: reconstruct, re-render, and report each term."""
    from pydantic import ValidationError

    from service.inputs import InputFileError, load_trajectory_file
    from service.schemas import ScoreOptions

    if geometry_file is not None:
        if geometry not in (None, GeometryBackend.ORACLE):
            raise fail("--geometry-file supplies the geometry: use it with --geometry oracle")
        geometry = GeometryBackend.ORACLE
    elif geometry == GeometryBackend.ORACLE:
        raise fail("--geometry oracle needs --geometry-file FILE.npz")
    settings = load_settings(geometry_backend=geometry, renderer=renderer)
    try:
        options = ScoreOptions(
            terms=[t.strip() for t in terms.split(",") if t.strip()] if terms else None,
            max_frames=max_frames,
            long_side=long_side,
        )
        target = load_trajectory_file(trajectory) if trajectory is not None else None
    except ValidationError as exc:
        error = exc.errors()[0]
        raise fail(f"invalid option {'.'.join(map(str, error['loc']))}: {error['msg']}") from None
    except InputFileError as exc:
        raise fail(str(exc)) from None

    configure_torch(settings)
    from service.pipeline import RewardPipeline
    from service.pipeline.geometry.oracle import load_geometry_file
    from service.pipeline.types import PipelineInputError

    try:
        arrays = load_geometry_file(geometry_file) if geometry_file is not None else None
        pipeline = RewardPipeline(settings)
        with stderr.status("starting", spinner="dots") as status:

            def on_stage(stage: str) -> None:
                status.update(f"[cyan]{stage}[/] {video.name}")

            output = pipeline.run(video, prompt=prompt, trajectory=target, options=options,
                                  geometry_arrays=arrays, on_stage=on_stage)  # fmt: skip
    except PipelineInputError as exc:
        raise fail(str(exc)) from None
    except RuntimeError as exc:  # e.g. CUDA requested on a machine without it
        raise fail(str(exc), code=1) from None

    if save_renders is not None:
        from service.pipeline.artifacts import save_renders as write_renders

        written = write_renders(output, save_renders)
        stderr.print(f"wrote {len(written)} files to {save_renders}")
    if report is not None:
        from service.report import write_video_report

        stderr.print(f"wrote {write_video_report(output, report, name=video.name, prompt=prompt)}")
    result = output.result
    if as_json:
        sys.stdout.write(result.model_dump_json() + "\n")
    else:
        print_result(result, title=str(video))


def print_result(result, title: str) -> None:
    table = Table(title=title, title_justify="left")
    table.add_column("term")
    table.add_column("status")
    table.add_column("score", justify="right")
    table.add_column("key metrics / reason")
    for name, term in result.terms.items():
        shown = {k: v for k, v in term.metrics.items() if isinstance(v, (int, float)) and v is not None}
        metrics = ", ".join(f"{k}={v:.3g}" for k, v in list(shown.items())[:5])
        detail = "; ".join(x for x in (metrics, term.reason or "") if x)
        score = "-" if term.score is None else f"{term.score:.3f}"
        table.add_row(name, term.status.value, score, detail)
    total = "n/a" if result.total is None else f"{result.total:.3f}"
    table.add_row("[bold]total[/]", "", f"[bold]{total}[/]", f"from {', '.join(result.total_terms) or 'no term'}")
    stdout.print(table)
    timings = ", ".join(f"{k} {v:.0f} ms" for k, v in result.timings_ms.items())
    stdout.print(f"[dim]{timings}[/]")


@app.command()
def info(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Which backends can run on this machine, and why the others cannot."""
    import service

    settings = load_settings()
    report: dict = {
        "reward3d": service.__version__,
        "reward_spec": service.REWARD_SPEC_VERSION,
        "settings": {
            "device": settings.device,
            "geometry_backend": settings.geometry_backend.value,
            "renderer": settings.renderer.value,
            "max_frames": settings.max_frames,
            "long_side": settings.long_side,
            "vlm_model": settings.vlm_model,
        },
    }
    try:
        import torch

        from service.pipeline.device import resolve_device
        from service.pipeline.geometry import geometry_availability, resolve_geometry_backend
        from service.pipeline.render import renderer_availability, resolve_renderer_backend

        device = resolve_device(settings.device)
        report["torch"] = torch.__version__
        report["device"] = str(device)
        report["geometry"] = {k: {"usable": ok, "why": why} for k, (ok, why) in geometry_availability(settings).items()}
        report["renderers"] = {k: {"usable": ok, "why": why} for k, (ok, why) in renderer_availability().items()}
        report["active"] = {
            "geometry": resolve_geometry_backend(settings).value,
            "renderer": resolve_renderer_backend(settings.renderer, device.type).value,
        }
        from service.pipeline.geometry.acceleration import plan_acceleration

        plan = plan_acceleration(settings.da3_compile, device.type)
        report["active"]["da3_acceleration"] = f"{plan.path} ({plan.reason})"
    except ImportError as exc:
        report["pipeline"] = f"not installed ({exc}); install the 'pipeline' extra"
    except RuntimeError as exc:
        report["device"] = f"unusable: {exc}"
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return
    stdout.print(f"reward3d {report['reward3d']} (reward spec {report['reward_spec']})")
    for key in ("torch", "device", "pipeline"):
        if key in report:
            stdout.print(f"{key}: {report[key]}")
    for section in ("geometry", "renderers"):
        table = Table(title=section, title_justify="left")
        table.add_column("backend")
        table.add_column("usable")
        table.add_column("why")
        for name, entry in report.get(section, {}).items():
            table.add_row(name, "yes" if entry["usable"] else "no", entry["why"])
        stdout.print(table)
    if "active" in report:
        stdout.print(f"active: geometry={report['active']['geometry']}, renderer={report['active']['renderer']}")
        stdout.print(f"da3 backbone: {report['active']['da3_acceleration']}")


from service.cli_models import models_app  # noqa: E402  (reward3d models ...)

app.add_typer(models_app, name="models")

from service.cli_eval import eval_command  # noqa: E402  (reward3d eval ...)

app.command(name="eval")(eval_command)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []})
def train(ctx: typer.Context) -> None:
    """Fine-tune Wan 2.1 with Flow-GRPO (`reward3d train --help`; trainer_client/cli.py)."""
    from trainer_client.cli import main as train_main  # lazy: the trainer loads torch/diffusers

    train_main(ctx.args)


# The service commands (serve, worker) live in their own module.
from service.cli_service import register as _register_service_commands  # noqa: E402

_register_service_commands(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
