#!/usr/bin/env python
"""Speed of the CPU reward, side by side with a plain epipolar check (issue 14).

    OMP_NUM_THREADS=1 python bench/speed.py [--clip ../shared/data/orbit_nc/great_wall.mp4]
        [--repeats 5] [--skip-sweep] [--skip-eval] [--skip-upload]

Everything is a whole process (imports, decode, models, scoring: what a user waits for), one
thread, timed from spawn to exit; peak memory is the child's ru_maxrss (os.wait4).

1. ``reward3d score clip.npy --json`` vs ``bench/epipolar_baseline.py clip.npy`` (SIFT +
   MAGSAC fundamental + Sampson error on the same frames) on a 16x252x448 clip, interleaved,
   median of ``--repeats``; ratio.
2. Sweep: 16 / 48 / 81 frames at 448 px and 16 frames at 224 / 672 px (one run each, the
   epipolar check beside each).
3. ``reward3d eval`` over a folder of 20 clips (16x252x448 windows of the clip): clips/min.
4. Upload: a 97 MB 81x480x832 uint8 tensor as the binary body to ``reward3d serve`` (up to the
   202; the blob store hashes and writes it) vs the same bytes through a loopback TCP socket
   and through the same HTTP stack discarding the body, after one warm-up, median of 5,
   bit-exact check; and the hash alone (sha256 vs BLAKE3) on the same bytes.

On a shared machine absolute times are noisy; the ratios are measured in the same run.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

PYTHON = sys.executable
REWARD3D = [PYTHON, "-m", "service.cli"]
EPIPOLAR = [PYTHON, str(REPO / "bench" / "epipolar_baseline.py")]
CONFIGS = ((16, 448), (48, 448), (81, 448), (16, 224), (16, 672))  # (frames, long side px)


def whole_process(command: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB, stdout) of one child process, spawn to exit."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "REWARD3D_NUM_THREADS": "1"}
    with tempfile.TemporaryFile() as out:
        started = time.perf_counter()
        child = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode()
    if child.returncode != 0:
        raise RuntimeError(f"{command} exited {child.returncode}")
    return wall, usage.ru_maxrss / 1024, text


def make_clips(source: str, work: Path) -> dict[str, Path]:
    """uint8 .npy clips decoded from ``source``: 'TxS' -> path (T frames, long side S)."""
    from service.pipeline.decode import load_video

    clips = {}
    for frames, side in CONFIGS:
        path = work / f"clip_{frames}x{side}.npy"
        if not path.exists():
            video = load_video(source, max_frames=frames, long_side=side)
            np.save(path, (video.frames.numpy() * 255).round().astype(np.uint8))
        clips[f"{frames}x{side}"] = path
    return clips


def score_command(path: Path, frames: int, side: int) -> list[str]:
    return REWARD3D + ["score", str(path), "--json", "--max-frames", str(frames), "--long-side", str(side)]


def main_table(clips: dict[str, Path], repeats: int) -> dict:
    path = clips["16x448"]
    ours, theirs = [], []
    for _ in range(repeats):  # interleaved: both see the same machine load
        ours.append(whole_process(score_command(path, 16, 448)))
        theirs.append(whole_process(EPIPOLAR + [str(path)]))
    result = json.loads(ours[-1][2])
    row = {
        "reward3d_s": statistics.median(w for w, _, _ in ours),
        "reward3d_mib": max(m for _, m, _ in ours),
        "epipolar_s": statistics.median(w for w, _, _ in theirs),
        "epipolar_mib": max(m for _, m, _ in theirs),
        "reward3d_runs": [round(w, 2) for w, _, _ in ours],
        "epipolar_runs": [round(w, 2) for w, _, _ in theirs],
        "stages_ms": {k: round(v) for k, v in result["timings_ms"].items()},
    }
    row["ratio"] = row["reward3d_s"] / row["epipolar_s"]
    return row


def sweep(clips: dict[str, Path]) -> list[dict]:
    rows = []
    for name in ("16x448", "48x448", "81x448", "16x224", "16x672"):
        frames, side = (int(x) for x in name.split("x"))
        wall, mib, text = whole_process(score_command(clips[name], frames, side))
        epi_wall, epi_mib, _ = whole_process(EPIPOLAR + [str(clips[name])])
        shape = np.load(clips[name], mmap_mode="r").shape
        rows.append({"clip": f"{frames}x{shape[1]}x{shape[2]}", "reward3d_s": wall, "reward3d_mib": mib,
                     "epipolar_s": epi_wall, "ratio": wall / epi_wall,
                     "stages_ms": {k: round(v) for k, v in json.loads(text)["timings_ms"].items()}})  # fmt: skip
    return rows


def make_eval_folder(source: str, work: Path, count: int = 20) -> Path:
    """``count`` distinct 16x252x448 windows of the source clip (16 frames at stride 4)."""
    from service.pipeline.decode import load_video

    folder = work / "eval_clips"
    if not folder.exists() or len(list(folder.glob("*.npy"))) != count:
        folder.mkdir(parents=True, exist_ok=True)
        frames = (load_video(source, max_frames=100_000, long_side=448).frames.numpy() * 255)
        frames = frames.round().astype(np.uint8)
        span = 16 * 4  # 16 frames at source stride 4: a window with parallax
        starts = np.linspace(0, len(frames) - span, count).astype(int)
        for i, start in enumerate(starts):
            np.save(folder / f"clip_{i:02d}.npy", frames[start : start + span : 4])
    return folder


def eval_rate(work: Path, count: int = 20) -> dict:
    """``reward3d eval`` over the folder of ``count`` clips, whole process, no resume."""
    folder = work / "eval_clips"
    out = work / "eval_out"
    subprocess.run(["rm", "-rf", str(out)], check=True)  # no resume: score every clip
    wall, mib, _ = whole_process(REWARD3D + ["eval", str(folder), "--out", str(out),
                                             "--resamples", "100"])  # fmt: skip
    return {"clips": count, "wall_s": wall, "clips_per_min": 60 * count / wall, "peak_mib": mib}


def upload(work: Path) -> dict:
    spec = importlib.util.spec_from_file_location("bench_service", REPO / "bench" / "service.py")
    bench_service = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_service)
    from service.api.encode import encode_binary

    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, size=(16, 256, 448, 3), dtype=np.uint8)
    video = bench_service.big_clip(small)  # 81x480x832
    raw = memoryview(video.reshape(-1))
    hashes = {}
    for name, make in (("sha256", hashlib.sha256), ("blake3", _blake3)):
        times = []
        for _ in range(3):
            started = time.perf_counter()
            h = make()
            for offset in range(0, len(raw), 1 << 16):  # the receive path's 64 KiB chunks
                h.update(raw[offset : offset + (1 << 16)])
            h.hexdigest()
            times.append(time.perf_counter() - started)
        hashes[name] = statistics.median(times)
    (work / "serve").mkdir(parents=True, exist_ok=True)
    services = bench_service.Services(work / "serve")
    try:
        binary = lambda v: encode_binary([v])  # noqa: E731
        bench_service.send_reward3d(services, bench_service.distinct(video, 99), binary)  # warm-up
        tcp, http, ours = [], [], []
        for rep in range(5):  # interleaved: noise hits every method alike
            tcp.append(bench_service.send_tcp(services, video))
            http.append(bench_service.send_http_only(services, video))
            ours.append(bench_service.send_reward3d(services, bench_service.distinct(video, rep), binary))
        exact = bench_service.stored_bit_exact(services, bench_service.distinct(video, 0), work / "scratch")
    finally:
        services.stop()
    return {"mb": video.nbytes / 1e6, "tcp_ms": 1e3 * statistics.median(tcp),
            "http_only_ms": 1e3 * statistics.median(http),
            "reward3d_ms": 1e3 * statistics.median(ours),
            "ratio": statistics.median(ours) / statistics.median(tcp), "bit_exact": exact,
            "sha256_ms": 1e3 * hashes["sha256"], "blake3_ms": 1e3 * hashes["blake3"]}  # fmt: skip


def _blake3():
    from blake3 import blake3

    return blake3()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", default=str(REPO.parent / "shared" / "data" / "orbit_nc" / "great_wall.mp4"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "reward3d-speed")
    parser.add_argument("--skip-sweep", action="store_true")
    parser.add_argument("--skip-eval", action="store_true")
    parser.add_argument("--skip-upload", action="store_true")
    parser.add_argument("--skip-main", action="store_true", help="skip table 1 (re-runs)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--prepare-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.prepare_only:
        make_clips(args.clip, args.work)
        make_eval_folder(args.clip, args.work)
        return
    # Decoding imports torch: do it in a child, so this process stays small. A child forked
    # from a large parent reports the parent's RSS as its own ru_maxrss.
    subprocess.run([PYTHON, __file__, "--prepare-only", "--clip", args.clip, "--work", str(args.work)],
                   check=True)  # fmt: skip
    clips = {f"{t}x{s}": args.work / f"clip_{t}x{s}.npy" for t, s in CONFIGS}
    load = os.getloadavg()
    print(f"{os.cpu_count()} CPUs, load {load[0]:.1f} (shared machine: compare ratios), 1 thread")
    report: dict = {"load": load[0]}

    row = report["main"] = None if args.skip_main else main_table(clips, args.repeats)
    if row:
        print(f"\n16x252x448, whole process, median of {args.repeats}")
        print("| | wall s | peak MiB |\n|---|---:|---:|")
        print(f"| `reward3d score clip.npy --json` | {row['reward3d_s']:.2f} | {row['reward3d_mib']:.0f} |")
        print(f"| epipolar check | {row['epipolar_s']:.2f} | {row['epipolar_mib']:.0f} |")
        print(f"| ratio | {row['ratio']:.2f}x | |")
        print(f"runs: reward3d {row['reward3d_runs']}, epipolar {row['epipolar_runs']}; "
              f"stages (last run, ms) {row['stages_ms']}")  # fmt: skip

    if not args.skip_sweep:
        report["sweep"] = sweep(clips)
        print("\n| clip | reward3d s | peak MiB | epipolar s | ratio | stages ms |\n|---|---:|---:|---:|---:|---|")
        for r in report["sweep"]:
            stages = ", ".join(f"{k} {v}" for k, v in r["stages_ms"].items() if k != "total")
            print(f"| {r['clip']} | {r['reward3d_s']:.2f} | {r['reward3d_mib']:.0f} | "
                  f"{r['epipolar_s']:.2f} | {r['ratio']:.2f}x | {stages} |")  # fmt: skip
    if not args.skip_eval:
        r = report["eval"] = eval_rate(args.work)
        print(f"\n`reward3d eval` on {r['clips']} clips (16x252x448): {r['wall_s']:.1f} s whole "
              f"process, {r['clips_per_min']:.1f} clips/min, peak {r['peak_mib']:.0f} MiB")  # fmt: skip
    if not args.skip_upload:
        r = report["upload"] = upload(args.work)
        print(f"\nupload {r['mb']:.0f} MB binary: reward3d {r['reward3d_ms']:.0f} ms vs loopback TCP "
              f"{r['tcp_ms']:.0f} ms = {r['ratio']:.2f}x (bit-exact: {r['bit_exact']}; HTTP stack alone, body "
              f"discarded: {r['http_only_ms']:.0f} ms = {r['http_only_ms'] / r['tcp_ms']:.2f}x); hash alone "
              f"sha256 {r['sha256_ms']:.0f} ms, BLAKE3 {r['blake3_ms']:.0f} ms")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
