"""A real headless Chromium (Debian's package) for the report tests, without CDP: the DOM
after scripts ran (``--dump-dom``), console messages (``--enable-logging=stderr``), and
screenshots. Tests skip with a reason when no chromium binary is installed."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

BINARIES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000"]  # fmt: skip
CONSOLE = re.compile(r":CONSOLE[^\]]*\]\s*(.*)")


def chromium_or_skip() -> str:
    for name in BINARIES:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no chromium binary on PATH (Debian: apt-get install -y chromium; .ci/run does)")


def run_chromium(url: str, *extra: str, timeout: float = 120) -> tuple[str, list[str]]:
    """(stdout, console messages) of one headless Chromium run on ``url``."""
    binary = chromium_or_skip()
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        completed = subprocess.run(
            [binary, *FLAGS, f"--user-data-dir={profile}", *extra, url],
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
    console = [m.group(1) for m in map(CONSOLE.search, completed.stderr.splitlines()) if m]
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stdout, console


def dump_dom(page: Path) -> tuple[str, list[str]]:
    return run_chromium(page.resolve().as_uri(), "--dump-dom")


def screenshot(page: Path, png: Path, width: int = 1280, height: int = 1600) -> Path:
    run_chromium(page.resolve().as_uri(), f"--screenshot={png}", f"--window-size={width},{height}",
                 "--hide-scrollbars")  # fmt: skip
    assert png.is_file(), "chromium wrote no screenshot"
    return png
