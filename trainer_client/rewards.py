"""The seam between a trainer and whatever computes its rewards.

A trainer submits each rollout's videos the moment they are decoded and keeps generating;
it collects the results later. Everything it needs is :class:`RewardSource`:

    future = source.submit(videos, prompts, terms=["reconstruction", "trajectory"])
    ...                                    # generate the next batch meanwhile
    batch = future.result(timeout=600)     # a RewardBatch
    batch.ok      # [B] bool: samples whose reward could be computed
    batch.totals  # [B] float64, NaN where not ok (never a fake 0)

Implementations:

- :class:`InProcessRewardSource` calls a plain Python function in a thread pool (tests,
  benchmarks, small local rewards).
- :class:`ResultsRewardSource` adapts any client whose ``submit`` returns a future of
  per-sample ``RewardResult``-shaped objects (the HTTP SDK, ``trainer_client.RewardClient``).
- :func:`brightness_reward` is a TEST-ONLY reward: mean pixel brightness. It measures nothing
  about 3D consistency; it exists so RL sanity checks have a cheap, deterministic signal.

Only numpy and the standard library are imported here, so the thin SDK can share this module.
Videos are uint8 ``[B,T,H,W,3]`` or float ``[B,T,C,H,W]`` in [0,1] (numpy or torch); they are
normalised to uint8 ``[B,T,H,W,3]`` (what the service takes on the wire) before a reward
function sees them.
"""

from __future__ import annotations

import concurrent.futures
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "RewardBatch",
    "RewardFn",
    "RewardSource",
    "SampleReward",
    "InProcessRewardSource",
    "ResultsRewardSource",
    "as_uint8_video",
    "brightness_reward",
    "failed_batch",
]


@dataclass(frozen=True)
class SampleReward:
    """One video's reward. ``total`` is what a trainer optimises; it is None unless ``ok``."""

    ok: bool
    total: float | None
    terms: dict[str, float] = field(default_factory=dict)  # term scores that were computed
    error: str | None = None  # why not ok (always set when ok is False)

    @staticmethod
    def failed(error: str) -> "SampleReward":
        return SampleReward(ok=False, total=None, terms={}, error=error)


@dataclass(frozen=True)
class RewardBatch:
    """Results for one submitted batch, in submission order."""

    samples: list[SampleReward]

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def ok(self) -> np.ndarray:  # [B] bool
        return np.array([s.ok for s in self.samples], dtype=bool)

    @property
    def totals(self) -> np.ndarray:  # [B] float64, NaN where not ok
        return np.array([s.total if s.ok else math.nan for s in self.samples], dtype=np.float64)

    def term_scores(self) -> dict[str, np.ndarray]:
        """Each term seen in the batch -> [B] float64 scores (NaN where absent or failed)."""
        names = sorted({name for s in self.samples for name in s.terms})
        return {
            name: np.array([s.terms.get(name, math.nan) for s in self.samples], dtype=np.float64)
            for name in names
        }


def failed_batch(size: int, error: str) -> RewardBatch:
    """A batch where every sample failed for the same reason (exception, timeout...)."""
    return RewardBatch([SampleReward.failed(error) for _ in range(size)])


@runtime_checkable
class RewardSource(Protocol):
    """What the trainer calls. ``submit`` must return quickly: compute happens elsewhere.

    ``terms`` selects reward terms (None: the source's default set); ``weights`` overrides
    term weights for the total. The future resolves to a :class:`RewardBatch` with one
    :class:`SampleReward` per video, in order. A future may also raise (e.g. the service is
    unreachable past its deadline): the trainer then masks the whole batch.

    A source whose ``submit`` also takes ``ids`` (one string per video) is given the trainer's
    item ids (``r{rank}-s{step}-i{sample}``), e.g. for the service to echo and the SDK to check.
    """

    def submit(
        self,
        videos: Any,  # uint8 [B,T,H,W,3] or float [B,T,C,H,W] in [0,1]; numpy or torch
        prompts: Sequence[str],
        *,
        terms: Sequence[str] | None = None,
        weights: Mapping[str, float] | None = None,
    ) -> concurrent.futures.Future[RewardBatch]: ...

    def close(self) -> None: ...


# --- video format ----------------------------------------------------------------------------


def as_uint8_video(videos: Any) -> np.ndarray:
    """uint8 ``[B,T,H,W,3]`` from uint8 ``[B,T,H,W,3]`` or float ``[B,T,C,H,W]`` in [0,1].

    Accepts numpy arrays and torch tensors (any device). Floats are clipped to [0,1] and
    rounded. Anything else raises ValueError naming the shape and dtype it got.
    """
    if hasattr(videos, "detach"):  # a torch tensor (torch is not imported here)
        tensor = videos.detach().cpu()
        videos = (tensor.float() if tensor.dtype.is_floating_point else tensor).numpy()  # bf16 has no numpy
    array = np.asarray(videos)
    if array.ndim != 5:
        raise ValueError(f"videos must be 5-D (uint8 [B,T,H,W,3] or float [B,T,C,H,W]); got shape {array.shape}")
    if array.dtype == np.uint8:
        if array.shape[-1] != 3:
            raise ValueError(f"uint8 videos must be [B,T,H,W,3]; got shape {array.shape}")
        return np.ascontiguousarray(array)
    if np.issubdtype(array.dtype, np.floating):
        if array.shape[2] != 3:
            raise ValueError(f"float videos must be [B,T,C,H,W] with C=3; got shape {array.shape}")
        frames = np.clip(np.nan_to_num(array, nan=0.0), 0.0, 1.0).transpose(0, 1, 3, 4, 2)
        return np.ascontiguousarray(np.rint(frames * 255.0).astype(np.uint8))
    raise ValueError(f"videos must be uint8 or floating point; got dtype {array.dtype}")


# --- in-process source -----------------------------------------------------------------------

# A reward function: per sample, a dict of term scores, or None when that sample failed.
# It may raise: every sample of the batch is then marked failed with the exception's message.
RewardFn = Callable[..., Sequence[Mapping[str, float] | None]]


def combine_terms(scores: Mapping[str, float], weights: Mapping[str, float] | None) -> float | None:
    """Weighted mean of the finite term scores (weight 1 unless given); None if none count."""
    total, weight_sum = 0.0, 0.0
    for name, value in scores.items():
        weight = 1.0 if weights is None else float(weights.get(name, 1.0))
        if weight > 0 and value is not None and math.isfinite(value):
            total += weight * float(value)
            weight_sum += weight
    return total / weight_sum if weight_sum > 0 else None


def _sample_from_scores(scores: Mapping[str, float] | None, weights: Mapping[str, float] | None) -> SampleReward:
    if scores is None:
        return SampleReward.failed("reward function returned no score for this sample")
    terms = {str(k): float(v) for k, v in scores.items() if v is not None}
    bad = [k for k, v in terms.items() if not math.isfinite(v)]
    if bad:
        return SampleReward.failed(f"non-finite score for {', '.join(bad)}")
    total = combine_terms(terms, weights)
    if total is None:
        return SampleReward.failed("no term with a positive weight was computed")
    return SampleReward(ok=True, total=total, terms=terms)


class InProcessRewardSource:
    """Runs ``reward_fn(videos_uint8, prompts, terms=...)`` on a thread pool.

    ``latency_s`` adds a sleep before each call (the GIL is released while sleeping), which
    stands in for a remote service's compute time in benchmarks. ``max_workers`` bounds how
    many batches are scored at once.
    """

    def __init__(self, reward_fn: RewardFn, *, max_workers: int = 4, latency_s: float = 0.0) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be >= 1")
        if latency_s < 0:
            raise ValueError("latency_s must be >= 0")
        self.reward_fn = reward_fn
        self.latency_s = latency_s
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers, thread_name_prefix="reward")

    def submit(
        self,
        videos: Any,
        prompts: Sequence[str],
        *,
        terms: Sequence[str] | None = None,
        weights: Mapping[str, float] | None = None,
        ids: Sequence[str] | None = None,  # accepted for the protocol; nothing to check in-process
    ) -> concurrent.futures.Future[RewardBatch]:
        frames = as_uint8_video(videos)  # copy now: the caller may reuse its buffers
        prompts = list(prompts)
        if len(prompts) != frames.shape[0]:
            raise ValueError(f"{frames.shape[0]} videos but {len(prompts)} prompts")
        terms = list(terms) if terms is not None else None
        weights = dict(weights) if weights is not None else None
        return self._pool.submit(self._score, frames, prompts, terms, weights)

    def _score(self, frames: np.ndarray, prompts: list[str], terms, weights) -> RewardBatch:
        if self.latency_s:
            time.sleep(self.latency_s)
        try:
            per_sample = list(self.reward_fn(frames, prompts, terms=terms))
        except Exception as exc:  # one broad catch: any failure becomes a masked batch
            return failed_batch(len(prompts), f"{type(exc).__name__}: {exc}")
        if len(per_sample) != len(prompts):
            return failed_batch(len(prompts), f"reward function returned {len(per_sample)} results for {len(prompts)} videos")
        return RewardBatch([_sample_from_scores(scores, weights) for scores in per_sample])

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


# --- adapter for clients that return RewardResult-shaped objects -----------------------------


def sample_from_result(result: Any) -> SampleReward:
    """A service ``RewardResult`` (or its JSON dict, or None for a failed item) -> SampleReward.

    Reads ``total`` and, per term, ``status`` and ``score``. Duck-typed so the SDK's own copy
    of the schema and ``service.schemas.RewardResult`` both work.
    """
    if result is None:
        return SampleReward.failed("no result for this sample")
    if isinstance(result, BaseException):
        return SampleReward.failed(f"{type(result).__name__}: {result}")
    get = result.get if isinstance(result, Mapping) else (lambda key, default=None: getattr(result, key, default))
    terms: dict[str, float] = {}
    reasons: list[str] = []
    for name, term in (get("terms", None) or {}).items():
        term_get = term.get if isinstance(term, Mapping) else (lambda key, default=None, t=term: getattr(t, key, default))
        status = term_get("status", None)
        status = getattr(status, "value", status)
        if status == "ok" and term_get("score", None) is not None:
            terms[name] = float(term_get("score"))
        elif status == "failed":
            reasons.append(f"{name}: {term_get('reason', None) or 'failed'}")
    total = get("total", None)
    if total is None or not math.isfinite(float(total)):
        return SampleReward(ok=False, total=None, terms=terms, error="; ".join(reasons) or "no total")
    return SampleReward(ok=True, total=float(total), terms=terms)


class ResultsRewardSource:
    """Wraps a client whose ``submit(videos, prompts=..., terms=..., weights=...)`` returns a
    ``concurrent.futures.Future`` of a per-sample list of RewardResult-shaped objects (None or
    an exception instance for a sample that failed). That is the HTTP SDK's contract."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def submit(
        self,
        videos: Any,
        prompts: Sequence[str],
        *,
        terms: Sequence[str] | None = None,
        weights: Mapping[str, float] | None = None,
        ids: Sequence[str] | None = None,
    ) -> concurrent.futures.Future[RewardBatch]:
        size = len(prompts)
        # item ids travel with the request and the SDK checks the answer carries the same ones
        # (so a rank can never be handed another rank's results); clients without ids skip them
        extra = {"ids": list(ids)} if ids is not None and _accepts_ids(self.client) else {}
        inner = self.client.submit(videos, prompts=list(prompts), terms=terms, weights=weights, **extra)
        outer: concurrent.futures.Future[RewardBatch] = concurrent.futures.Future()

        def convert(done: concurrent.futures.Future) -> None:
            try:
                results = list(done.result())
                if len(results) != size:
                    batch = failed_batch(size, f"client returned {len(results)} results for {size} videos")
                else:
                    batch = RewardBatch([sample_from_result(r) for r in results])
            except Exception as exc:  # the whole request failed past the client's retries
                batch = failed_batch(size, f"{type(exc).__name__}: {exc}")
            outer.set_result(batch)

        inner.add_done_callback(convert)
        return outer

    def close(self) -> None:
        close = getattr(self.client, "close", None)
        if close is not None:
            close()


def _accepts_ids(client: Any) -> bool:
    import inspect

    try:
        parameters = inspect.signature(client.submit).parameters
    except (TypeError, ValueError):
        return False
    return "ids" in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


# --- test-only reward ------------------------------------------------------------------------


def brightness_reward(videos: np.ndarray, prompts: Sequence[str], *, terms: Sequence[str] | None = None):
    """TEST-ONLY: mean pixel value of each video in [0,1], as the term ``brightness``.

    Deterministic and cheap, so RL sanity checks have a signal a tiny random model can
    learn. It says nothing about 3D consistency; never use it to train a real model.
    """
    if terms is not None and "brightness" not in terms:
        raise ValueError(f"the brightness test reward provides only 'brightness', not {list(terms)}")
    frames = as_uint8_video(videos)
    means = frames.reshape(frames.shape[0], -1).mean(axis=1, dtype=np.float64) / 255.0
    return [{"brightness": float(m)} for m in means]
