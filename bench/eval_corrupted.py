"""`reward3d eval` on real footage: a clean folder against corrupted copies of it (issue 9).

    python bench/eval_corrupted.py --data ../shared/data --work /tmp/reward3d-eval-bench \
        [--severity 2] [--families shuffle,drop,...] [--screenshot docs/report_screenshot.png]

1. Builds ``WORK/clean``: each clip as the pipeline would see it (16 frames, longer side 448
   px, uint8 .npy): great_wall cut into 4 windows of 144 frames starting every 48 (each sampled
   to 16; overlapping, so not independent), room, cake, fox (the non-commercial clips are read
   from --data, written only under --work).
2. Builds ``WORK/corrupted_<family>`` for each corruption family of
   service/validation/corruptions.py at one severity (fixed seed per clip), same file names.
3. Requested paths (``--target self``, the default, as bench/validate.py does): these clips
   have no prompt, so ``reward3d eval WORK/clean`` first estimates each clean clip's camera
   path, which becomes ``NAME.trajectory.json`` beside the clip in every folder: as if each
   prompt had described exactly the motion the footage has (only for clips whose every frame
   registered). Without it (``--target none``) only reconstruction is scored, and corruptions
   that keep each frame a valid view of one static scene (reverse, drop) cannot be seen.
4. Runs ``reward3d eval WORK/clean --compare WORK/corrupted_<family> ... --report WORK/report``
   (the real CLI, default geometry backend), then the same command again (must reuse all).
5. Prints, per family: clean vs. corrupted mean totals, the paired difference with its 95 %
   bootstrap interval, the win rate, and whether the interval excludes zero. Exit status 1 if
   the clean folder is not better than some corrupted one with an interval excluding zero.
6. With --screenshot PNG: the README's example, ``reward3d score tests/data/robot_unitree.mp4
   --prompt "The camera stays fixed as a robot walks." --report``, and a headless-Chromium
   screenshot of its page (Apache-2.0 footage, so a picture of it may live in the repository,
   unlike the non-commercial clips above).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from service.pipeline.decode import load_video  # noqa: E402

DEFAULT_FAMILIES = ("shuffle", "reverse", "drop", "elastic", "homography", "flicker", "popping",
                    "scene_cut", "frozen")  # fmt: skip


def as_uint8(frames) -> np.ndarray:  # float [T,H,W,3] in [0,1] -> uint8
    return (np.clip(frames.numpy(), 0, 1) * 255 + 0.5).astype(np.uint8)


def clean_clips(data: Path, frames: int, long_side: int) -> dict[str, np.ndarray]:
    """name -> uint8 [T,H,W,3], exactly what the pipeline would score."""
    clips = {}
    wall = as_uint8(load_video(data / "orbit_nc" / "great_wall.mp4", max_frames=10_000,
                               long_side=long_side).frames)  # fmt: skip
    # Windows of half the orbit starting every sixth: sampled to 16 frames, shorter windows
    # move too little between sampled frames for the classical backend to see translation
    # (it then calls the camera static and the reconstruction term gives no credit).
    length, stride = len(wall) // 2, len(wall) // 6
    for i, start in enumerate(range(0, len(wall) - length + 1, stride)):
        part = wall[start : start + length]
        pick = np.linspace(0, len(part) - 1, frames).round().astype(int)
        clips[f"great_wall_{i}"] = part[pick]
    for name, source in (("room", data / "orbit_nc" / "room.mp4"), ("cake", data / "cake_nc"),
                         ("fox", data / "fox_nc" / "images")):  # fmt: skip
        clips[name] = as_uint8(load_video(source, max_frames=frames, long_side=long_side).frames)
    return clips


def build_folders(clips, work: Path, families, severity: int) -> list[Path]:
    from service.validation.corruptions import corrupt

    clean = work / "clean"
    clean.mkdir(parents=True, exist_ok=True)
    folders = []
    for family in families:
        folder = work / f"corrupted_{family}"
        folder.mkdir(exist_ok=True)
        folders.append(folder)
    for index, (name, frames) in enumerate(sorted(clips.items())):
        np.save(clean / f"{name}.npy", frames)
        for family, folder in zip(families, folders):
            np.save(folder / f"{name}.npy", corrupt(frames, family, severity, seed=index))
    return [clean, *folders]


def write_self_targets(folders: list[Path], work: Path, args) -> int:
    """Score the clean clips, then put each one's estimated path beside it in every folder."""
    import csv

    for stale in (p for folder in folders for p in folder.glob("*.trajectory.json")):
        stale.unlink()  # the clean clips are scored without a requested path
    run_eval(folders[:1], work, args, out="paths", report=False)
    this_run = {row["key"] for row in csv.DictReader((work / "paths" / "results.csv").open())}
    written = 0
    for line in (work / "paths" / "results.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["key"] not in this_run:
            continue  # a result of an earlier run with other settings
        geometry = (record.get("result") or {}).get("geometry")
        if not geometry or not all(geometry["registered"]):
            continue  # no trustworthy path: that clip is scored without a target
        stem = record["name"][: -len(".npy")]
        target = json.dumps({"world_to_camera": geometry["world_to_camera"]})
        for folder in folders:
            (folder / f"{stem}.trajectory.json").write_text(target)
        written += 1
    return written


def run_eval(folders: list[Path], work: Path, args, out: str = "out", report: bool = True
             ) -> tuple[float, str]:  # fmt: skip
    command = [sys.executable, "-m", "service.cli", "eval", str(folders[0])]
    for folder in folders[1:]:
        command += ["--compare", str(folder)]
    command += ["--out", str(work / out), "--max-frames", str(args.frames),
                "--long-side", str(args.long_side)]  # fmt: skip
    if report:
        command += ["--report", str(work / "report")]
    print("$", " ".join(command), flush=True)
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)  # fmt: skip
    elapsed = time.perf_counter() - started
    if completed.returncode != 0:
        sys.stderr.write(completed.stderr)
        raise SystemExit(f"reward3d eval exited {completed.returncode}")
    return elapsed, completed.stderr


def screenshot(page: Path, png: Path) -> None:
    from PIL import Image

    binary = next((shutil.which(b) for b in ("chromium", "chromium-browser") if shutil.which(b)), None)
    if binary is None:
        print("no chromium: no screenshot")
        return
    with tempfile.TemporaryDirectory() as profile:
        raw = Path(profile) / "shot.png"
        subprocess.run([binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                        "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                        f"--user-data-dir={profile}", "--window-size=1280,2100",
                        "--virtual-time-budget=5000", f"--screenshot={raw}", page.resolve().as_uri()],
                       check=True, capture_output=True)  # fmt: skip
        image = Image.open(raw).convert("RGB")
        image = image.resize((image.width * 3 // 4, image.height * 3 // 4), Image.LANCZOS)
        png.parent.mkdir(parents=True, exist_ok=True)
        image.quantize(colors=192, method=Image.Quantize.MEDIANCUT).save(png, optimize=True)
    print(f"screenshot: {png} ({png.stat().st_size // 1024} KiB)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=None,
                        help="the shared footage (default: ../shared/data beside the checkout)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "reward3d-eval-bench")
    parser.add_argument("--families", default=",".join(DEFAULT_FAMILIES))
    parser.add_argument("--severity", type=int, default=2, choices=(1, 2, 3))
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--long-side", type=int, default=448)
    parser.add_argument("--target", choices=["self", "none"], default="self")
    parser.add_argument("--screenshot", type=Path, default=None)
    parser.add_argument("--screenshot-clip", type=Path,
                        default=REPO / "tests" / "data" / "robot_unitree.mp4",
                        help="keep it permissively licensed: the picture goes into the repository")
    parser.add_argument("--screenshot-prompt", default="The camera stays fixed as a robot walks.")
    args = parser.parse_args()
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    if args.data is None:
        candidates = [REPO.parent / "shared" / "data", REPO.parents[1] / "shared" / "data"]
        args.data = next((c for c in candidates if c.is_dir()), candidates[0])

    clips = clean_clips(args.data, args.frames, args.long_side)
    folders = build_folders(clips, args.work, families, args.severity)
    print(f"{len(clips)} clean clips ({', '.join(sorted(clips))}); "
          f"{len(families)} corrupted folders at severity {args.severity}", flush=True)
    if args.target == "self":
        print(f"requested paths: {write_self_targets(folders, args.work, args)} of {len(clips)} "
              "clips (the clean clip's own estimated path)", flush=True)

    first, log = run_eval(folders, args.work, args)
    scored = next((line for line in log.splitlines() if "scored now" in line), "").strip()
    print(f"first run: {first:.0f} s ({scored}; shared 2-core machine)")
    again, log = run_eval(folders, args.work, args)
    reused_line = next((line for line in log.splitlines() if "scored now" in line), "")
    print(f"second run (resume check): {again:.1f} s: {reused_line.strip()}")

    summary = json.loads((args.work / "out" / "summary.json").read_text())
    print()
    print((args.work / "out" / "summary.md").read_text())
    print("| corrupted folder | pairs | clean total | corrupted total | clean - corrupted [95 %] "
          "| clean wins [95 %] | interval excludes 0 |")
    print("|---|---:|---:|---:|---:|---:|---|")
    failures = 0
    for comparison in summary["comparisons"]:
        total = comparison["columns"]["total"]
        difference, wins = total["difference"], total["win_rate"]
        better = difference["low"] is not None and difference["low"] > 0
        failures += not better
        print(f"| {comparison['b']} | {comparison['pairs']} | {total['mean_a']:.3f} | "
              f"{total['mean_b']:.3f} | {difference['estimate']:.3f} [{difference['low']:.3f}, "
              f"{difference['high']:.3f}] | {wins['estimate']:.2f} [{wins['low']:.2f}, "
              f"{wins['high']:.2f}] | {'yes' if better else 'NO'} |")
    if args.screenshot is not None:
        page_dir = args.work / "screenshot"
        subprocess.run([sys.executable, "-m", "service.cli", "score", str(args.screenshot_clip),
                        "--prompt", args.screenshot_prompt, "--report", str(page_dir)],
                       cwd=REPO, check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        screenshot(page_dir / "report.html", args.screenshot)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
