"""The test-only brightness quality backend (used to check the trainer end to end)."""

import numpy as np
import pytest

from service.pipeline import RewardPipeline
from service.schemas import ScoreOptions
from service.settings import Settings


def test_test_only_brightness_quality_backend():
    pipeline = RewardPipeline(Settings(geometry_backend="oracle", quality_backend="brightness"))
    dark = np.full((4, 32, 48, 3), 40, dtype=np.uint8)
    bright = np.full((4, 32, 48, 3), 200, dtype=np.uint8)
    scores = [pipeline(v, options=ScoreOptions(terms=["quality"])).terms["quality"] for v in (dark, bright)]
    assert scores[0].score == pytest.approx(40 / 255, abs=1e-6)
    assert scores[1].score == pytest.approx(200 / 255, abs=1e-6)
    assert "test-only" in scores[0].reason
    assert "quality" in pipeline.usable_terms()
