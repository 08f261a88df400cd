"""`reward3d eval`: bootstrap statistics, folders/lists/prompts, the resumable store, the
table and summary, clean-vs-corrupted comparison, interrupted runs that resume."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from service.cli import app
from service.evaluation.scorers import InProcessScorer
from service.evaluation.stats import mean_interval, paired_comparison
from service.evaluation.store import ResultStore
from service.evaluation.videos import EvaluationInputError, collect_group, read_prompts
from service.synthetic import make_clip
from tests.conftest import REPO
from tests.eval_folders import CLIPS, write_folders, write_prompts

runner = CliRunner()


# -- statistics ------------------------------------------------------------------------------
def test_mean_interval_is_deterministic_and_brackets_the_mean():
    values = np.random.default_rng(1).normal(0.5, 0.1, size=40)
    first, second = mean_interval(values), mean_interval(values)
    assert first == second  # fixed seed
    assert first.low < first.estimate < first.high
    assert first.estimate == pytest.approx(values.mean())
    # The 95 % interval of a mean is about +-1.96 standard errors.
    half_width = (first.high - first.low) / 2
    assert half_width == pytest.approx(1.96 * values.std(ddof=1) / math.sqrt(40), rel=0.2)
    assert mean_interval(values, seed=5) != first  # the seed matters
    assert mean_interval([0.3, None, float("nan")]).n == 1  # missing values dropped
    assert math.isnan(mean_interval([0.3]).low)  # no interval from one value


def test_paired_comparison_difference_and_win_rate():
    rng = np.random.default_rng(2)
    b = rng.uniform(0.2, 0.8, size=30)
    a = b + 0.05 + rng.normal(0, 0.01, size=30)  # A better on every pair, by about 0.05
    result = paired_comparison(a, b)
    assert result.difference.estimate == pytest.approx(0.05, abs=0.01)
    assert result.difference.excludes(0.0) and result.difference.low > 0
    assert result.win_rate.estimate == 1.0
    # Lower is better (an error): A's larger values lose.
    errors = paired_comparison(a, b, higher_is_better=False)
    assert errors.win_rate.estimate == 0.0 and errors.difference.low > 0
    # No real difference: the interval straddles zero; ties count one half.
    noise = paired_comparison(b + rng.normal(0, 0.01, size=30), b)
    assert not noise.difference.excludes(0.0)
    assert paired_comparison([1.0, 2.0], [1.0, 2.0]).win_rate.estimate == 0.5
    # Pairs with a missing value on either side are left out.
    assert paired_comparison([1.0, None, 3.0], [0.0, 1.0, float("nan")]).difference.n == 1


# -- inputs ------------------------------------------------------------------------------------
def test_collect_folder_and_list(tmp_path):
    folder = tmp_path / "model_a"
    (folder / "sub").mkdir(parents=True)
    (folder / "images").mkdir()
    (folder / ".cache").mkdir()
    for name in ("b.mp4", "a.npy", "sub/c.webm", ".cache/x.mp4", "notes.md"):
        (folder / name).write_bytes(b"x")
    (folder / "a.geometry.npz").write_bytes(b"x")  # geometry beside a.npy, not a video
    for i in range(2):
        (folder / "images" / f"{i:03d}.png").write_bytes(b"x")
    group = collect_group(folder)
    assert group.label == "model_a"
    assert [v.name for v in group.videos] == ["a.npy", "b.mp4", "images", "sub/c.webm"]
    assert group.videos[0].geometry_path == folder / "a.geometry.npz"
    assert group.videos[1].geometry_path is None

    listing = tmp_path / "list.txt"
    listing.write_text(f"# my picks\nmodel_a/b.mp4\n\n{folder / 'sub' / 'c.webm'}\n")
    assert [v.name for v in collect_group(listing).videos] == ["b.mp4", "c.webm"]
    listing.write_text("model_a/b.mp4\nmodel_a/missing.mp4\n")
    with pytest.raises(EvaluationInputError, match="list.txt:2: no such file"):
        collect_group(listing)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "b.mp4").write_bytes(b"y")
    listing.write_text("model_a/b.mp4\nother/b.mp4\n")
    with pytest.raises(EvaluationInputError, match="same file name"):
        collect_group(listing)
    with pytest.raises(EvaluationInputError, match="no videos"):
        collect_group(tmp_path / "other" / ".." / "model_a" / "images")
    with pytest.raises(EvaluationInputError, match="no such folder"):
        collect_group(tmp_path / "nope")


def test_prompt_file_formats(tmp_path):
    names = ["clip_b.mp4", "sub/clip_a.mp4", "clip_c.mp4"]
    (tmp_path / "p.jsonl").write_text('{"name": "clip_b", "prompt": "push in"}\n\n'
                                      '{"name": "sub/clip_a.mp4", "prompt": "orbit <left>"}\n')
    assert read_prompts(tmp_path / "p.jsonl", names) == {"clip_b.mp4": "push in",
                                                         "sub/clip_a.mp4": "orbit <left>"}
    (tmp_path / "p.csv").write_text('name,prompt,seed\nclip_a.mp4,"pan left, then tilt up",3\n')
    assert read_prompts(tmp_path / "p.csv", names) == {"sub/clip_a.mp4": "pan left, then tilt up"}
    (tmp_path / "p.json").write_text('{"clip_c": "fixed"}')
    assert read_prompts(tmp_path / "p.json", names) == {"clip_c.mp4": "fixed"}
    (tmp_path / "p.txt").write_text("one\ntwo\nthree\n")  # sorted names: clip_b, clip_c, sub/...
    assert read_prompts(tmp_path / "p.txt", names) == {"clip_b.mp4": "one", "clip_c.mp4": "two",
                                                       "sub/clip_a.mp4": "three"}
    (tmp_path / "short.txt").write_text("one\n")
    with pytest.raises(EvaluationInputError, match="1 prompts for 3 videos"):
        read_prompts(tmp_path / "short.txt", names)
    (tmp_path / "bad.jsonl").write_text('{"name": "x"}\n')
    with pytest.raises(EvaluationInputError, match="bad.jsonl:1"):
        read_prompts(tmp_path / "bad.jsonl", names)
    (tmp_path / "bad.json").write_text("{oops")
    with pytest.raises(EvaluationInputError, match="invalid JSON"):
        read_prompts(tmp_path / "bad.json", names)
    (tmp_path / "p.yaml").write_text("a: b")
    with pytest.raises(EvaluationInputError, match="must be .jsonl"):
        read_prompts(tmp_path / "p.yaml", names)


def test_store_survives_a_line_cut_short(tmp_path):
    store = ResultStore(tmp_path)
    store.append({"key": "a", "status": "ok"})
    with store.path.open("a") as handle:
        handle.write('{"key": "b", "sta')  # a crash mid-write
    reloaded = ResultStore(tmp_path)
    assert "a" in reloaded and "b" not in reloaded and reloaded.skipped_lines == 1
    reloaded.append({"key": "c", "status": "ok"})
    again = ResultStore(tmp_path)
    assert set(again.records) == {"a", "c"}


# -- end to end --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    clean, broken = write_folders(root)
    return root, clean, broken, write_prompts(root / "prompts.jsonl")


def said(result) -> str:
    """The CLI's output with line wrapping undone (rich wraps at the terminal width)."""
    return " ".join(result.output.split())


def run_eval(*args):
    return runner.invoke(app, ["eval", *map(str, args), "--geometry", "oracle",
                               "--long-side", "96", "--resamples", "2000"])  # fmt: skip


def test_clean_folder_beats_corrupted_folder(folders, tmp_path):
    root, clean, broken, prompts = folders
    result = run_eval(clean, "--compare", broken, "--prompts", prompts, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    groups = {g["group"]: g for g in summary["groups"]}
    assert groups["clean"]["scored"] == groups["broken"]["scored"] == len(CLIPS)
    (comparison,) = summary["comparisons"]
    assert (comparison["a"], comparison["b"], comparison["pairs"]) == ("clean", "broken", len(CLIPS))
    total = comparison["columns"]["total"]
    assert total["difference"]["low"] > 0, total  # the interval excludes zero: clean is better
    assert total["a_better"] == "yes" and total["win_rate"]["estimate"] == 1.0
    assert comparison["columns"]["reconstruction.psnr"]["difference"]["low"] > 0
    # The table: one row per video, terms and metrics as columns; Markdown summary.
    import csv

    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert len(rows) == 2 * len(CLIPS)
    assert {"group", "name", "total", "reconstruction", "trajectory", "reconstruction.psnr",
            "trajectory.rotation_error_mean_deg", "video_sha256"} <= set(rows[0])
    assert all(r["status"] == "ok" and float(r["trajectory"]) > 0 for r in rows)  # prompts used
    markdown = (tmp_path / "summary.md").read_text()
    assert "| clean | 6 | 6 | 0 |" in markdown and "## clean vs. broken" in markdown
    assert "| total | " in markdown and "| yes |" in markdown
    pyarrow = pytest.importorskip("pyarrow.parquet")
    assert pyarrow.read_table(tmp_path / "results.parquet").num_rows == 2 * len(CLIPS)


def test_interrupted_run_resumes_with_only_the_missing_videos(folders, tmp_path, monkeypatch):
    root, clean, broken, _ = folders
    scored_names = []
    original = InProcessScorer.score

    def interrupt_after_three(self, task):
        if len(scored_names) == 3:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the 4th video
        scored_names.append(task.entry.name)
        return original(self, task)

    monkeypatch.setattr(InProcessScorer, "score", interrupt_after_three)
    result = run_eval(clean, "--out", tmp_path)
    assert result.exit_code == 130, result.output
    assert "rerun the same command" in said(result)
    first = ResultStore(tmp_path).records
    assert len(first) == 3

    scored_names.clear()

    def counting(self, task):
        scored_names.append(task.entry.name)
        return original(self, task)

    monkeypatch.setattr(InProcessScorer, "score", counting)
    result = run_eval(clean, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    names = sorted(f"{motion}_{i}.npy" for i, (motion, _) in enumerate(CLIPS))
    done_first = sorted(r["name"] for r in first.values())
    assert sorted(scored_names) == sorted(set(names) - set(done_first))  # only the missing
    assert "3 scored now, 3 reused" in said(result)
    store = ResultStore(tmp_path)
    assert len(store.records) == len(CLIPS)
    assert len(store.path.read_text().splitlines()) == len(CLIPS)  # nothing scored twice

    # A third run scores nothing; changing an option (the fingerprint) rescores everything.
    scored_names.clear()
    assert run_eval(clean, "--out", tmp_path).exit_code == 0 and scored_names == []
    result = runner.invoke(app, ["eval", str(clean), "--out", str(tmp_path), "--geometry",
                                 "oracle", "--long-side", "80", "--resamples", "200"])
    assert result.exit_code == 0 and len(scored_names) == len(CLIPS)


def test_killed_process_resumes(folders, tmp_path):
    """A real crash: kill -9 the CLI once it has stored two results, then run it again."""
    root, clean, broken, _ = folders
    command = [sys.executable, "-m", "service.cli", "eval", str(clean), "--out", str(tmp_path),
               "--geometry", "oracle", "--long-side", "96", "--resamples", "200"]
    results = tmp_path / "results.jsonl"
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            if results.exists() and len(results.read_text().splitlines()) >= 2:
                break
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    stored_before = set(ResultStore(tmp_path).records)
    assert 2 <= len(stored_before) < len(CLIPS), "the run should have been cut half-way"

    rerun = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr
    missing = len(CLIPS) - len(stored_before)
    assert f"{missing} scored now, {len(stored_before)} reused" in " ".join(rerun.stderr.split())
    after = ResultStore(tmp_path)
    assert len(after.records) == len(CLIPS) and stored_before <= set(after.records)


def test_bad_arguments_get_a_clear_message(folders, tmp_path):
    root, clean, broken, _ = folders
    result = run_eval(tmp_path / "missing", "--out", tmp_path)
    assert result.exit_code == 2 and "no such folder" in said(result)
    (tmp_path / "p.txt").write_text("only one\n")
    result = run_eval(clean, "--prompts", tmp_path / "p.txt", "--out", tmp_path)
    assert result.exit_code == 2 and "1 prompts for 6 videos" in said(result)
    result = run_eval(clean, "--compare", clean, "--out", tmp_path)
    assert result.exit_code == 2 and "given twice" in said(result)


def test_unreadable_video_is_a_row_not_a_crash(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "broken.mp4").write_bytes(b"not a video at all")
    np.save(folder / "one_frame.npy", np.zeros((1, 32, 32, 3), np.uint8))
    geometry = make_clip("static", 2, 32, 32).geometry_arrays()
    for name in ("broken", "one_frame"):  # so that decoding is what fails
        np.savez(folder / f"{name}.geometry.npz", **geometry)
    result = runner.invoke(app, ["eval", str(folder), "--out", str(tmp_path / "out"),
                                 "--geometry", "oracle", "--resamples", "200"])
    assert result.exit_code == 0, result.output  # refused inputs are outcomes, stored
    rows = {r["name"]: r for r in ResultStore(tmp_path / "out").records.values()}
    assert rows["broken.mp4"]["status"] == "failed"
    assert rows["broken.mp4"]["error"]["code"] == "invalid_input"
    assert "at least 2 frames" in rows["one_frame.npy"]["error"]["detail"]


def test_requested_path_beside_the_video(tmp_path):
    """NAME.trajectory.json sets the requested camera path (no prompt needed) and is part of
    the result's key: changing it rescores that video."""
    folder = tmp_path / "videos"
    folder.mkdir()
    clip = make_clip("move_right", 6, 54, 96, detail=0.5)
    np.save(folder / "a.npy", clip.frames)
    np.savez(folder / "a.geometry.npz", **clip.geometry_arrays())
    path = folder / "a.trajectory.json"
    path.write_text(json.dumps({"world_to_camera": clip.world_to_camera.tolist()}))
    result = run_eval(folder, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    (record,) = ResultStore(tmp_path / "out").records.values()
    trajectory = record["result"]["terms"]["trajectory"]
    assert trajectory["status"] == "ok" and trajectory["score"] > 0.95  # its own exact path
    assert trajectory["metrics"]["target_source"] == "poses"
    reversed_path = {"world_to_camera": clip.world_to_camera[::-1].tolist()}
    path.write_text(json.dumps(reversed_path))
    result = run_eval(folder, "--out", tmp_path / "out")
    assert "1 scored now, 0 reused" in said(result)
    scores = sorted(r["result"]["terms"]["trajectory"]["score"]
                    for r in ResultStore(tmp_path / "out").records.values())  # fmt: skip
    assert scores[0] < scores[1] - 0.3  # the reversed request scores lower
    path.write_text("{not json")
    result = run_eval(folder, "--out", tmp_path / "out")
    (failed,) = [r for r in ResultStore(tmp_path / "out").records.values() if r["status"] == "failed"]
    assert failed["error"]["code"] == "invalid_input" and "trajectory" in failed["error"]["detail"]


def test_eval_fingerprint_names_the_renderer_version():
    # Stored results are keyed by the fingerprint: a renderer change must re-score them.
    from service.pipeline.render.torch_points import TorchPointRenderer
    from service.schemas import ScoreOptions
    from service.settings import Settings

    fingerprint = InProcessScorer(Settings(renderer="torch_points"), ScoreOptions()).fingerprint()
    assert fingerprint["renderer"] == TorchPointRenderer().versions()["renderer"]
    assert fingerprint["renderer"].startswith("torch_points-2")
