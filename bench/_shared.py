"""Where the real footage lives: ``../shared/data`` next to the checkout (or one level up, for
worktrees under ``wt/``), or ``$REWARD3D_SHARED_DATA``."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shared_data() -> Path:
    candidates = [os.environ.get("REWARD3D_SHARED_DATA"), REPO.parent / "shared" / "data",
                  REPO.parent.parent / "shared" / "data"]  # fmt: skip
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return REPO.parent / "shared" / "data"
