"""HTML report pages: every section is there, user text is escaped, and a real headless
Chromium loads them without console errors, decodes every image, runs the 3D path view, and
takes a screenshot."""

import re

import numpy as np
import pytest
import torch
from markupsafe import escape
from typer.testing import CliRunner

from service.cli import app
from service.pipeline import RewardPipeline
from service.report import IndexEntry, index_page, video_page
from service.settings import Settings
from service.synthetic import make_clip
from tests.browser import dump_dom, screenshot
from tests.eval_folders import write_folders

HOSTILE_PROMPT = 'Camera push in. </script><script>alert(1)</script> <img src=x onerror="alert(2)">'
HOSTILE_NAME = 'clip <b onmouseover="alert(3)">x</b>.npy'
FRAMES = 6


@pytest.fixture(scope="module")
def scored():
    clip = make_clip("push_in", FRAMES, 54, 96, detail=0.5)
    pipeline = RewardPipeline(Settings(long_side=96))
    output = pipeline.run(clip.frames, prompt=HOSTILE_PROMPT,
                          geometry_arrays=clip.geometry_arrays())  # fmt: skip
    # What the plausibility term leaves for reports when a VLM ran (none on this machine).
    views = torch.rand(2, 54, 96, 3)
    output.extras["novel_views"] = {"names": ["orbit_left", "extrapolate <end>"], "rgb": views,
                                    "alpha": torch.ones(2, 54, 96), "scores": [0.8, 0.25]}  # fmt: skip
    return output


@pytest.fixture(scope="module")
def page(scored, tmp_path_factory):
    text = video_page(scored.result, output=scored, name=HOSTILE_NAME, prompt=HOSTILE_PROMPT,
                      group="model <A>", key="abc123")  # fmt: skip
    path = tmp_path_factory.mktemp("report") / "video.html"
    path.write_text(text, encoding="utf-8")
    return path


def test_page_has_every_section(page, scored):
    text = page.read_text()
    for section in ("summary", "terms", "frames", "camera-path", "path-plot", "path-view",
                    "novel-views", "details"):  # fmt: skip
        assert f'id="{section}"' in text, section
    assert text.count('class="frame-input"') == FRAMES
    assert text.count('class="frame-render"') == FRAMES
    assert text.count('class="frame-error"') == FRAMES
    assert text.count('class="novel-view"') == 2 and "0.250" in text
    assert 'content="abc123"' in text  # the result key, for resuming report pages
    assert "requested: push_in" in text
    # Self-contained: images inline, no external resource.
    assert not re.search(r'(src|href)="(https?:)?//', text)
    assert text.count('src="data:image/') == 3 * FRAMES + 2 + 1  # frames, views, path plot


def test_user_text_is_escaped(page):
    text = page.read_text()
    assert "<script>alert(1)" not in text and "<img src=x" not in text
    assert "<b onmouseover" not in text and "<A>" not in text
    assert str(escape(HOSTILE_PROMPT)) in text  # as Jinja2 escapes: &lt; &gt; &#34; ...
    assert "extrapolate &lt;end&gt;" in text


def test_page_from_a_result_alone(scored):
    """A result scored elsewhere (a service): terms and the camera path, and it says so."""
    text = video_page(scored.result, name="remote.mp4", prompt="Camera push in.")
    assert 'id="terms"' in text and 'id="path-plot"' in text
    assert 'class="frame-input"' not in text and "Scored elsewhere" in text
    assert '"target": {"centres"' in text  # the requested path, from the prompt's words


def test_failed_video_page():
    text = video_page(None, name="broken.mp4", error={"code": "invalid_input",
                                                      "detail": "cannot decode <video>"})  # fmt: skip
    assert "Not scored: invalid_input" in text and "cannot decode &lt;video&gt;" in text


def test_chromium_renders_the_video_page(page, tmp_path):
    dom, console = dump_dom(page)
    assert console == [], console  # no script error, no warning, nothing logged
    body = re.search(r"<body([^>]*)>", dom).group(1)
    images = int(re.search(r'data-images="(\d+)"', body).group(1))
    assert images == 3 * FRAMES + 2 + 1
    assert 'data-broken-images="0"' in body  # every inline image decoded
    # The interactive view ran: the estimated and the requested path were drawn into the SVG.
    assert len(re.findall(r"<polyline ", dom)) == 2
    assert len(re.findall(r"<circle ", dom)) == 2 * FRAMES
    # The hostile prompt is text in the page, not elements.
    assert "alert(1)" in dom and "<script>alert(1)" not in dom
    assert len(re.findall(r"<script", dom)) == 3  # path data, image check, path view
    png = screenshot(page, tmp_path / "page.png")
    from PIL import Image

    image = np.asarray(Image.open(png).convert("RGB"))
    assert image.shape == (1600, 1280, 3)
    assert image.std() > 20 and len(np.unique(image.reshape(-1, 3), axis=0)) > 1000  # not blank


def test_index_page_and_eval_report(tmp_path):
    clean, broken = write_folders(tmp_path / "videos", count=2)
    report = tmp_path / "report"
    result = CliRunner().invoke(app, ["eval", str(clean), "--compare", str(broken), "--geometry",
                                      "oracle", "--long-side", "96", "--out", str(tmp_path / "out"),
                                      "--report", str(report), "--resamples", "200"])  # fmt: skip
    assert result.exit_code == 0, result.output
    pages = sorted(p.relative_to(report).as_posix() for p in report.rglob("*.html"))
    assert pages == ["index.html", "videos/broken/orbit_0.npy.html", "videos/broken/push_in_1.npy.html",
                     "videos/clean/orbit_0.npy.html", "videos/clean/push_in_1.npy.html"]
    dom, console = dump_dom(report / "index.html")
    assert console == [], console
    assert 'data-broken-images="0"' in dom
    links = re.findall(r'<a href="(videos/[^"]+)"', dom)
    assert len(links) == 4 and all((report / link).is_file() for link in links)
    assert "clean vs. broken" in dom and 'id="summary-table"' in dom
    # A rerun with nothing new rescores nothing and keeps the pages.
    before = {p: p.stat().st_mtime_ns for p in report.rglob("*.html") if p.name != "index.html"}
    result = CliRunner().invoke(app, ["eval", str(clean), "--compare", str(broken), "--geometry",
                                      "oracle", "--long-side", "96", "--out", str(tmp_path / "out"),
                                      "--report", str(report), "--resamples", "200"])  # fmt: skip
    assert result.exit_code == 0 and "0 scored now, 4 reused" in " ".join(result.output.split())
    assert before == {p: p.stat().st_mtime_ns for p in before}
    # A deleted page is drawn again (the video is rescored in-process for its renders).
    deleted = next(iter(before))
    deleted.unlink()
    result = CliRunner().invoke(app, ["eval", str(clean), "--compare", str(broken), "--geometry",
                                      "oracle", "--long-side", "96", "--out", str(tmp_path / "out"),
                                      "--report", str(report), "--resamples", "200"])  # fmt: skip
    assert result.exit_code == 0 and deleted.is_file()
    assert "1 rescored for their report page" in " ".join(result.output.split())


def test_score_writes_a_report_only_when_asked(tmp_path):
    clip = make_clip("push_in", 4, 54, 96, detail=0.5)
    np.save(tmp_path / "clip.npy", clip.frames)
    np.savez(tmp_path / "geometry.npz", **clip.geometry_arrays())
    args = ["score", str(tmp_path / "clip.npy"), "--geometry-file", str(tmp_path / "geometry.npz"),
            "--long-side", "96", "--json"]  # fmt: skip
    before = set(tmp_path.iterdir())
    assert CliRunner().invoke(app, args).exit_code == 0
    assert set(tmp_path.iterdir()) == before  # nothing written unless asked
    result = CliRunner().invoke(app, [*args, "--report", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "report" / "report.html").read_text()
    assert text.count('class="frame-render"') == 4 and "clip.npy" in text
