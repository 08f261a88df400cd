"""``reward3d models ...``: which learned models are configured, where their weights are, under
which licence, and (with ``--load``) whether they load. Layout and hub ids: docs/models.md.

    reward3d models check [--load] [--json]
    reward3d models list [--json]     # every DA3 checkpoint choice, its licence and Gaussians

Exit status: 0 when every configured model was found (and loaded, with ``--load``); 1 when a
configured one is missing or broken. Models that are not configured are listed as such and
do not fail the check (the pipeline runs without them).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

models_app = typer.Typer(help="Learned models: where the weights are, licences, loading.",
                         no_args_is_help=True)  # fmt: skip

QWEN3_VL_LICENCE = "Apache-2.0 (Qwen3-VL Instruct checkpoints; check the model card of yours)"


def _entry(configured: bool, found: bool, where: str, **extra: Any) -> dict[str, Any]:
    return {"configured": configured, "found": found, "where": where, **extra}


def check_da3(settings, load: bool) -> dict[str, Any]:
    from service.pipeline.geometry.da3_checkpoint import (
        LICENCES,
        checkpoint_model_name,
        package_available,
        resolve_checkpoint,
    )

    ok, why = package_available()
    if not ok:
        return _entry(True, False, why)
    directory, where = resolve_checkpoint(settings.da3_model)
    if directory is None:
        return _entry(True, False, where)
    name = checkpoint_model_name(directory)
    entry = _entry(True, True, where, model=name, licence=LICENCES.get(name, "unknown"),
                   gaussians=_gaussians_of(name))  # fmt: skip
    if load:
        entry.update(_try_load(lambda: _load_da3(settings)))
    return entry


def _gaussians_of(preset: str) -> str:
    from service.pipeline.geometry.da3_checkpoint import PUBLISHED

    entry = PUBLISHED.get(preset)
    if entry is None:
        return "unknown preset"
    return "DA3's Gaussian head" if entry.gaussian_head else "pixel-aligned, lifted by reward3d from depth"


def _load_da3(settings) -> str:
    from service.pipeline.device import resolve_device
    from service.pipeline.geometry.da3_checkpoint import load_da3

    loaded = load_da3(settings.da3_model, device=resolve_device(settings.device))
    parameters = sum(p.numel() for p in loaded.network.parameters())
    head = "with" if loaded.has_gaussian_head else "without"
    return f"{parameters / 1e6:.1f} M parameters, {head} Gaussian head"


def check_vlm(settings, load: bool) -> dict[str, Any]:
    if not settings.vlm_model:
        return _entry(False, False, "not configured (REWARD3D_VLM_MODEL): plausibility and the "
                      "default quality term are skipped")  # fmt: skip
    directory, where = _hf_directory(settings.vlm_model, ("config.json", "tokenizer_config.json",
                                                          "preprocessor_config.json"))  # fmt: skip
    entry = _entry(True, directory is not None, where, licence=QWEN3_VL_LICENCE)
    if load and directory is not None:
        entry.update(_try_load(lambda: _load_vlm(settings)))
    return entry


def _load_vlm(settings) -> str:
    from service.pipeline.device import resolve_device
    from service.pipeline.terms.vlm_judge import VLMJudge, load_rubrics

    judge = VLMJudge.load(settings.vlm_model, device=resolve_device(settings.device))
    ids = judge.label_ids(load_rubrics()["plausibility"])
    return f"loaded; digit token ids {ids}"


def check_lpips(settings, load: bool) -> dict[str, Any]:
    if settings.lpips_weights is None:
        return _entry(False, False, "not configured (REWARD3D_LPIPS_WEIGHTS): reconstruction "
                      "uses PSNR and SSIM only")  # fmt: skip
    path = Path(settings.lpips_weights).expanduser()
    entry = _entry(True, path.exists(), str(path),
                   licence="BSD-2-Clause (LPIPS linear layers); BSD-3-Clause (torchvision AlexNet)")  # fmt: skip
    if path.exists():
        # Always checked: reading the weights is cheap and catches a wrong layout early.
        entry.update(_try_load(lambda: _load_lpips(path)))
    return entry


def _load_lpips(path: Path) -> str:
    from service.pipeline.terms.lpips import build_lpips, read_state_dicts

    build_lpips(read_state_dicts(path))
    return "backbone and linear layers present"


def check_quality(settings, load: bool) -> dict[str, Any]:
    if settings.quality_backend == "vlm":
        return _entry(False, False, "quality_backend 'vlm': reuses the VLM above")
    if not settings.quality_model:
        return _entry(True, False, "quality_backend 'preference' needs REWARD3D_QUALITY_MODEL")
    directory, where = _hf_directory(settings.quality_model, ("config.json", "preprocessor_config.json"))
    entry = _entry(True, directory is not None, where, licence="see the model card (HPS v2: Apache-2.0)")
    if load and directory is not None:
        entry.update(_try_load(lambda: _load_quality(settings)))
    return entry


def _load_quality(settings) -> str:
    from service.pipeline.device import resolve_device
    from service.pipeline.terms.quality import PreferenceQuality

    PreferenceQuality.load(settings.quality_model, device=resolve_device(settings.device))
    return "loaded"


def _hf_directory(source: str, files: tuple[str, ...]) -> tuple[Path | None, str]:
    """A transformers-style model as a local directory or in the Hugging Face cache."""
    path = Path(source).expanduser()
    if path.is_dir():
        missing = [name for name in files if not (path / name).is_file()]
        if missing:
            return None, f"local directory {path} lacks {', '.join(missing)}"
        return path, f"local directory {path}"
    from huggingface_hub import try_to_load_from_cache

    from service.pipeline.geometry.da3_checkpoint import looks_like_a_path

    if looks_like_a_path(source):
        return None, f"local directory {path} does not exist"
    try:
        cached = try_to_load_from_cache(source, files[0])
    except Exception as exc:
        return None, f"{source!r} is neither a local directory nor a hub id ({exc})"
    if isinstance(cached, str):
        return Path(cached).parent, f"hub id {source} (in the Hugging Face cache)"
    return None, f"hub id {source} is not in the Hugging Face cache (docs/models.md)"


def _try_load(load) -> dict[str, Any]:
    try:
        return {"loaded": True, "detail": load()}
    except Exception as exc:  # any loading failure is reported, never a traceback
        return {"loaded": False, "found": False, "detail": f"{type(exc).__name__}: {exc}"}


@models_app.command("list")
def list_choices(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Every DA3 checkpoint reward3d can use: hub id, licence of the weights, Gaussians."""
    from service.cli import load_settings, stdout
    from service.pipeline.geometry.da3_checkpoint import DEFAULT_PRESET, PUBLISHED

    configured = load_settings().da3_model
    choices = {
        name: {"hub_id": entry.hub_id, "licence": entry.licence, "gaussians": _gaussians_of(name),
               "default": name == DEFAULT_PRESET,
               "configured": configured.rstrip("/").lower() in (entry.hub_id.lower(), name)}
        for name, entry in PUBLISHED.items()
    }  # fmt: skip
    vlm = {"licence": QWEN3_VL_LICENCE}
    if as_json:
        sys.stdout.write(json.dumps({"da3": choices, "vlm": vlm}, indent=2) + "\n")
        return
    table = Table(title="DA3 checkpoints (REWARD3D_DA3_MODEL)", title_justify="left")
    for column in ("preset", "hub id", "licence", "Gaussians", ""):
        table.add_column(column)
    for name, entry in choices.items():
        marks = ", ".join(m for m, on in (("default", entry["default"]), ("configured", entry["configured"])) if on)
        table.add_row(name, entry["hub_id"], entry["licence"], entry["gaussians"], marks)
    stdout.print(table)
    stdout.print(f"Qwen3-VL (REWARD3D_VLM_MODEL): {QWEN3_VL_LICENCE}")


@models_app.command("check")
def check(
    load: Annotated[bool, typer.Option("--load", help="Also load each model (slow for big ones).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Where each configured model's weights are, their licence, and whether they load."""
    from service.cli import load_settings, stdout

    settings = load_settings()
    report = {
        "da3": check_da3(settings, load) if settings.geometry_backend.value in ("auto", "da3")
        else _entry(False, False, f"geometry backend is {settings.geometry_backend.value}"),
        "vlm": check_vlm(settings, load),
        "lpips": check_lpips(settings, load),
        "quality": check_quality(settings, load),
    }
    # DA3 under 'auto' is optional (the classical backend takes over), so only an explicit
    # `da3` backend makes a missing checkpoint a failure.
    required = {name for name, entry in report.items() if entry["configured"]}
    if settings.geometry_backend.value == "auto":
        required.discard("da3")
    failed = sorted(name for name in required if not report[name]["found"])
    if as_json:
        sys.stdout.write(json.dumps({"models": report, "failed": failed}, indent=2) + "\n")
    else:
        table = Table(title="models", title_justify="left")
        for column in ("model", "configured", "found", "where / detail", "licence"):
            table.add_column(column)
        for name, entry in report.items():
            detail = entry["where"] + (f"; {entry['detail']}" if "detail" in entry else "")
            table.add_row(name, "yes" if entry["configured"] else "no",
                          "yes" if entry["found"] else "no", detail, entry.get("licence", ""))  # fmt: skip
        stdout.print(table)
    if failed:
        raise typer.Exit(1)
