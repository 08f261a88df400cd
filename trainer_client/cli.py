"""``reward3d train CONFIG``: Flow-GRPO fine-tuning of Wan 2.1 from one YAML file.

    reward3d train configs/tiny_cpu.yaml                        # tiny random model, CPU, seconds
    reward3d train configs/wan2_1_1_3b.yaml --set reward.url=http://rewards:8000
    reward3d train CONFIG --resume latest --max-steps 200

Registered in ``service/cli.py`` lazily, so ``reward3d`` starts without importing torch or the
trainer. Bad configs print one line and exit 2; a run that fails exits 1; Ctrl-C saves a
checkpoint first and exits 130.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
stderr = Console(stderr=True)

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


def _fail(message: str, code: int) -> typer.Exit:
    stderr.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code)


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="Training config (YAML); see configs/ and docs/trainer.md.")],
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override: section.key=value (repeatable).")] = None,
    resume: Annotated[Optional[str], typer.Option(help="Checkpoint folder, or 'latest' in the output dir.")] = None,
    max_steps: Annotated[Optional[int], typer.Option(help="Train until this many steps are done.")] = None,
    output_dir: Annotated[Optional[Path], typer.Option(help="Where checkpoints and logs go.")] = None,
    export: Annotated[bool, typer.Option(help="Write the (EMA) LoRA in diffusers format at the end.")] = True,
) -> None:  # fmt: skip
    """Fine-tune Wan 2.1 with Flow-GRPO against reward3d (or any configured reward source)."""
    from trainer_client.trainer.config import ConfigError, load_config

    overrides = list(set_ or [])
    if resume is not None:
        overrides.append(f"run.resume={resume}")
    if max_steps is not None:
        overrides.append(f"run.max_steps={max_steps}")
    if output_dir is not None:
        overrides.append(f"run.output_dir={output_dir}")
    try:
        settings = load_config(config, overrides)
    except ConfigError as exc:
        raise _fail(str(exc), EXIT_BAD_INPUT) from None

    import os

    rank = f"[rank {os.environ['RANK']}] " if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""
    logging.basicConfig(level=logging.INFO, format=f"%(levelname)s {rank}%(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not one line per reward request
    from trainer_client.trainer.loop import Trainer

    try:
        trainer = Trainer(settings)
    except (FileNotFoundError, ValueError) as exc:  # prompt files, model folders, reward function
        raise _fail(str(exc), EXIT_BAD_INPUT) from None
    except (RuntimeError, OSError) as exc:  # no CUDA, no SDK, hub unreachable...
        raise _fail(str(exc), EXIT_FAILED) from None

    # Under torchrun every rank runs this; only rank 0 prints. A distributed run saves no extra
    # checkpoint on Ctrl-C or an error: ranks may be at different points, and a save is a
    # collective. It resumes from its last periodic checkpoint.
    distributed = trainer.dist is not None
    main = trainer.is_main_process
    with trainer:
        try:
            reports = trainer.train()
        except KeyboardInterrupt:
            path = None if distributed else trainer.save_checkpoint()
            if main:
                stderr.print(f"interrupted at step {trainer.step_count}; checkpoint: {path or 'the last periodic one'}")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except RuntimeError as exc:  # e.g. every reward failing for max_failed_steps steps
            if not distributed:
                trainer.save_checkpoint()
            raise _fail(f"rank {trainer.rank}: {exc}" if distributed else str(exc), EXIT_FAILED) from None
        if export:
            exported = trainer.export_lora(trainer.output_dir / "final_lora", use_ema=True)
            if main:
                stderr.print(f"LoRA ({'EMA' if trainer.ema else 'last'} weights) written to {exported}")
    if not main:
        return
    if reports:
        first, last = reports[0].metrics["reward/mean"], reports[-1].metrics["reward/mean"]
        stderr.print(
            f"done: {trainer.step_count} steps; reward {first:.4f} (step {reports[0].step}) -> "
            f"{last:.4f} (step {reports[-1].step}); logs in {trainer.output_dir}"
        )
    else:
        stderr.print(f"nothing to do: {trainer.step_count} steps already done (max_steps {settings.run.max_steps})")


def main(argv: list[str] | None = None) -> None:
    """Entry point used by ``reward3d train`` (argv = the arguments after ``train``)."""
    command = typer.main.get_command(app)
    command.main(args=list(sys.argv[1:] if argv is None else argv), prog_name="reward3d train")


if __name__ == "__main__":
    main()
