"""TEST-ONLY reward for the distributed trainer tests: the brightness reward, with failures and
delays placed by prompt so that the same samples are affected in a 1-process and a 2-rank run.

``$REWARD3D_TEST_FAILURES`` names a JSON file ``{prompt: {"fail": k}}`` (the first ``k``
videos of each batch with that prompt fail; k >= the batch size fails the whole batch, i.e. a
whole rank's step in the tests' layout of one group per batch) or ``{prompt: {"sleep": s}}``
(a batch with that prompt takes ``s`` seconds: past the trainer's deadline, it is masked)."""

from __future__ import annotations

import json
import os
import time

from trainer_client.rewards import brightness_reward


def flaky_brightness(videos, prompts, *, terms=None):
    path = os.environ.get("REWARD3D_TEST_FAILURES")
    spec = json.loads(open(path).read()) if path else {}
    delay = max((spec.get(p, {}).get("sleep", 0.0) for p in prompts), default=0.0)
    if delay:
        time.sleep(delay)
    scores = brightness_reward(videos, prompts, terms=terms)
    seen: dict[str, int] = {}
    for i, prompt in enumerate(prompts):
        seen[prompt] = seen.get(prompt, 0) + 1
        if seen[prompt] <= spec.get(prompt, {}).get("fail", 0):
            scores[i] = None  # this sample's reward failed
    return scores
