"""TEST-ONLY reward for the distributed trainer tests: the brightness reward, with failures
placed by prompt so that the same samples fail in a 1-process and a 2-rank run.

``$REWARD3D_TEST_FAILURES`` names a JSON file ``{prompt: k}``: the first ``k`` videos of each
batch with that prompt fail (k >= the batch size fails the whole batch, i.e. a whole rank's
step in the tests' layout of one group per batch)."""

from __future__ import annotations

import json
import os

from trainer_client.rewards import brightness_reward


def flaky_brightness(videos, prompts, *, terms=None):
    spec = json.loads(open(os.environ["REWARD3D_TEST_FAILURES"]).read()) if os.environ.get("REWARD3D_TEST_FAILURES") else {}
    scores = brightness_reward(videos, prompts, terms=terms)
    seen: dict[str, int] = {}
    for i, prompt in enumerate(prompts):
        seen[prompt] = seen.get(prompt, 0) + 1
        if seen[prompt] <= spec.get(prompt, 0):
            scores[i] = None  # this sample's reward failed
    return scores
