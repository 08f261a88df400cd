#!/usr/bin/env python
"""Build the trainer's prompt sets from the World-R1 prompts (MIT licence).

    python scripts/make_prompt_sets.py [--source ../shared/data/prompts_worldr1] [--out trainer_client/prompts]

Reads ``enhanced/{train,test,dynamic}.txt`` (the long prompts World-R1 trained on) and writes:

- ``camera_train.txt``: training prompts whose camera instruction reward3d understands
  (``service.pipeline.terms.camera_words.parse_camera_words`` finds a motion, "fixed" included),
  so the trajectory term always has a target. Prompts without camera words are dropped.
- ``camera_test.txt``: the same filter on the test prompts, minus any that also appear in train.
- ``dynamic.txt``: prompts of non-rigid motion (people, animals, water) for the dynamic phase,
  where only the quality term is used; kept whether or not they name a camera motion.
- ``README.md``: attribution, licence, how the files were made, counts per camera plan.
- ``LICENSE-World-R1.txt``: the source licence, copied verbatim.

Per set: whitespace is collapsed, empty lines and exact duplicates dropped (first kept), order
kept. The output is deterministic; ``tests/test_prompts.py`` checks the committed files match
a fresh run when the source folder is present.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from service.pipeline.terms.camera_words import parse_camera_words  # noqa: E402

DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "prompts_worldr1"
if not DEFAULT_SOURCE.is_dir():  # worktrees live one level deeper than the main checkout
    DEFAULT_SOURCE = REPO.parents[1] / "shared" / "data" / "prompts_worldr1"
DEFAULT_OUT = REPO / "trainer_client" / "prompts"


def read_prompts(path: Path) -> list[str]:
    seen: set[str] = set()
    prompts = []
    for line in path.read_text(encoding="utf-8").splitlines():
        prompt = " ".join(line.split())
        if prompt and prompt not in seen:
            seen.add(prompt)
            prompts.append(prompt)
    return prompts


def camera_plan(prompt: str) -> str | None:
    plan = parse_camera_words(prompt)
    return " > ".join(plan.motions) if plan is not None else None


def build(source: Path) -> dict[str, list[str]]:
    enhanced = source / "enhanced"
    train = [p for p in read_prompts(enhanced / "train.txt") if camera_plan(p)]
    train_set = set(train)
    test = [p for p in read_prompts(enhanced / "test.txt") if camera_plan(p) and p not in train_set]
    dynamic = read_prompts(enhanced / "dynamic.txt")
    return {"camera_train": train, "camera_test": test, "dynamic": dynamic}


def readme(sets: dict[str, list[str]], source: Path) -> str:
    lines = [
        "# Prompt sets for the Flow-GRPO trainer",
        "",
        "Made by `scripts/make_prompt_sets.py` from the World-R1 training prompts",
        "(https://github.com/microsoft/World-R1, folder `dataset/enhanced/`), Copyright (c) Microsoft",
        "Corporation, MIT licence (`LICENSE-World-R1.txt`, copied verbatim). Changes: whitespace collapsed,",
        "duplicates removed, camera sets limited to prompts whose camera words reward3d parses, test",
        "prompts that also occur in train removed. Do not edit by hand: rerun the script.",
        "",
        "| file | prompts | source file (sha256, first 12) |",
        "|---|---|---|",
    ]
    origin = {"camera_train": "train.txt", "camera_test": "test.txt", "dynamic": "dynamic.txt"}
    for name, prompts in sets.items():
        digest = hashlib.sha256((source / "enhanced" / origin[name]).read_bytes()).hexdigest()[:12]
        lines.append(f"| `{name}.txt` | {len(prompts)} | `enhanced/{origin[name]}` ({digest}) |")
    for name in ("camera_train", "camera_test"):
        counts = collections.Counter(camera_plan(p) for p in sets[name])
        lines += ["", f"Camera plans in `{name}.txt` (most common 12 of {len(counts)}):", ""]
        lines += [f"- {plan}: {count}" for plan, count in counts.most_common(12)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="World-R1 prompts folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the sets")
    args = parser.parse_args(argv)
    if not (args.source / "enhanced").is_dir():
        print(f"error: {args.source}/enhanced not found", file=sys.stderr)
        return 2
    sets = build(args.source)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, prompts in sets.items():
        (args.out / f"{name}.txt").write_text("\n".join(prompts) + "\n", encoding="utf-8")
        print(f"{name}.txt: {len(prompts)} prompts")
    (args.out / "README.md").write_text(readme(sets, args.source), encoding="utf-8")
    shutil.copyfile(args.source / "LICENSE", args.out / "LICENSE-World-R1.txt")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
