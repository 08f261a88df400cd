"""The HTTP SDK: score videos with a reward3d service (docs/sdk.md; wire contract: docs/service.md).

    from trainer_client import RewardClient

    with RewardClient("http://rewards:8000", api_key=KEY) as client:
        future = client.submit(videos, prompts=prompts, terms=["reconstruction", "trajectory"])
        ...                                   # generate the next batch meanwhile
        scores = future.result()              # Scores: one entry per video
        scores.ok, scores.totals              # [B] mask, [B] float64 with NaN where not ok

One call = one job: the videos are uploaded in the binary format (``POST /v1/score?wait=0``),
then the job is long-polled (``GET /v1/jobs/{id}?wait=``) until it ends. Everything happens
under one overall deadline (``deadline_s``, counted from the call). Transient failures
(connection errors and timeouts, 429, 502, 503, 504) are retried with jittered exponential
backoff, honouring ``Retry-After``, with the same ``Idempotency-Key`` so a retried upload
never creates a second job. Any other error status (400, 401, 404, 413, 415, 422, 500...)
raises :class:`RequestRejected` at once: retrying cannot fix it.

:class:`AsyncRewardClient` is the asyncio client; :class:`RewardClient` runs one on a
background event-loop thread and hands out ``concurrent.futures.Future`` objects, so many
requests are in flight at once without a thread each (``max_in_flight`` bounds them).

The retry loop is written out here rather than taken from tenacity: the SDK's only
dependencies are httpx and numpy (and pydantic for the result models), and the loop must
combine Retry-After, jitter and a deadline shared with the long-polls.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import logging
import math
import os
import random
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from trainer_client.schemas import JobPublic, RewardResult, TermStatus
from trainer_client.wire import GEOMETRY_NAMES, EncodedBody, area_resize, encode_binary, to_uint8_videos

__all__ = [
    "AsyncRewardClient",
    "DeadlineExceeded",
    "ItemFailure",
    "RequestRejected",
    "RetryPolicy",
    "RewardClient",
    "RewardServiceError",
    "Scores",
    "ServiceBusy",
]

log = logging.getLogger("reward3d.client")

TRANSIENT_STATUS = frozenset({429, 502, 503, 504})  # 502/504: a proxy in front lost the service
TRANSIENT_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


# --- errors ----------------------------------------------------------------------------------


class RewardServiceError(Exception):
    """Base class of the SDK's errors."""


class RequestRejected(RewardServiceError):
    """The service refused the request (4xx, or a 500): not retried. ``code`` is the problem
    code of docs/service.md "Errors" (``video-limits``, ``unauthorized``...)."""

    def __init__(self, status: int, code: str, detail: str, problem: dict | None = None) -> None:
        super().__init__(f"HTTP {status} {code}: {detail}")
        self.status, self.code, self.detail, self.problem = status, code, detail, problem or {}

    @classmethod
    def from_response(cls, response: httpx.Response) -> "RequestRejected":
        try:
            problem = response.json()
        except ValueError:
            problem = None
        if not isinstance(problem, dict):
            return cls(response.status_code, "unexpected-response", response.text[:300])
        return cls(response.status_code, str(problem.get("code", "error")),
                   str(problem.get("detail") or problem.get("title") or ""), problem)  # fmt: skip


class ServiceBusy(RewardServiceError):
    """A transient status (429, 502, 503, 504); retried. ``retry_after``: seconds, if given."""

    def __init__(self, status: int, code: str, retry_after: float | None) -> None:
        suffix = f", Retry-After {retry_after:g} s" if retry_after is not None else ""
        super().__init__(f"HTTP {status} {code}{suffix}")
        self.status, self.code, self.retry_after = status, code, retry_after


class DeadlineExceeded(RewardServiceError, TimeoutError):
    """No result within the call's deadline. ``last_error`` is the last transient failure
    (None if the service was simply still scoring); ``job_id`` is set once a job existed."""

    def __init__(self, deadline_s: float, *, attempts: int, last_error: BaseException | None,
                 job_id: str | None = None) -> None:  # fmt: skip
        self.deadline_s, self.attempts, self.last_error, self.job_id = deadline_s, attempts, last_error, job_id
        super().__init__(self._message())

    def _message(self) -> str:
        text = f"no result within the {self.deadline_s:g} s deadline ({self.attempts} request(s)"
        if self.last_error is not None:
            text += f"; last error: {type(self.last_error).__name__}: {self.last_error}"
        return text + (f"; job {self.job_id}" if self.job_id else "") + ")"

    def __str__(self) -> str:  # job_id may be set after construction
        return self._message()


class ItemFailure(RewardServiceError):
    """One video that got no reward (item status ``failed`` or ``cancelled``). Returned in
    :class:`Scores` in place of a RewardResult, never raised by the client."""

    def __init__(self, index: int, code: str, detail: str, item_id: str | None = None) -> None:
        super().__init__(f"{code}: {detail}")
        self.index, self.code, self.detail, self.item_id = index, code, detail, item_id


# --- retry policy ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """Waits between attempts. Without Retry-After: "equal jitter" exponential backoff,
    uniform in [d/2, d] with d = min(max_delay_s, base_delay_s * 2**(attempt-1)), so ranks
    that failed together do not come back together. With Retry-After r: uniform in
    [r, r * (1 + retry_after_jitter)] (never earlier than the service asked).
    ``max_attempts`` (None: unlimited) caps requests per HTTP call; the deadline always does."""

    base_delay_s: float = 0.5
    max_delay_s: float = 20.0
    retry_after_jitter: float = 0.2
    max_attempts: int | None = None

    def delay(self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        rng = rng or random
        if retry_after is not None:
            return retry_after * (1.0 + self.retry_after_jitter * rng.random())
        ceiling = min(self.max_delay_s, self.base_delay_s * 2.0 ** (attempt - 1))
        return ceiling / 2 + rng.random() * ceiling / 2


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


# --- results ---------------------------------------------------------------------------------


class Scores(list):
    """One entry per video, in order: a :class:`RewardResult`, or an :class:`ItemFailure`.

    A video's reward is usable only if its item is ``ok`` *and* ``result.total`` is not None
    (None when no term could be computed): that is ``ok``. ``totals`` has NaN elsewhere, never
    a made-up 0 (a 0 would drag its GRPO group's mean and standard deviation).
    """

    job_id: str | None = None
    deduplicated: bool = False

    @property
    def ok(self) -> np.ndarray:  # [B] bool
        return np.array([_usable_total(entry) is not None for entry in self], dtype=bool)

    @property
    def totals(self) -> np.ndarray:  # [B] float64, NaN where not ok
        values = [_usable_total(entry) for entry in self]
        return np.array([math.nan if v is None else v for v in values], dtype=np.float64)

    def term(self, name: str) -> np.ndarray:
        """[B] float64: the term's score where that term is ``ok``, else NaN."""
        values = []
        for entry in self:
            term = entry.terms.get(name) if isinstance(entry, RewardResult) else None
            ok = term is not None and term.status == TermStatus.OK and term.score is not None
            values.append(term.score if ok else math.nan)
        return np.array(values, dtype=np.float64)

    @property
    def errors(self) -> list[str | None]:
        """Why each video is not ok (None where it is)."""
        reasons: list[str | None] = []
        for entry in self:
            if isinstance(entry, ItemFailure):
                reasons.append(str(entry))
            elif _usable_total(entry) is None:
                failed = [f"{n}: {t.reason}" for n, t in entry.terms.items() if t.status == TermStatus.FAILED]
                reasons.append("no total: " + ("; ".join(failed) or "no term with a positive weight was ok"))
            else:
                reasons.append(None)
        return reasons

    @classmethod
    def from_job(cls, job: JobPublic, count: int, ids: Sequence[str | None] | None = None) -> "Scores":
        """The job's items in order; checks they are the ones sent (count, indices, ``ids``)."""
        if len(job.items) != count or [item.index for item in job.items] != list(range(count)):
            raise RewardServiceError(f"job {job.id} has items {[i.index for i in job.items]} for {count} videos")
        if ids is not None and [item.id for item in job.items] != [None if i is None else str(i) for i in ids]:
            raise RewardServiceError(f"job {job.id} answered for items {[i.id for i in job.items]}, not {list(ids)}")
        scores = cls()
        for item in job.items:
            if item.status == "ok" and item.result is not None:
                scores.append(item.result)
            else:
                error = item.error
                code = error.code if error else ("cancelled" if item.status == "cancelled" else "failed")
                detail = error.detail if error else f"item status {item.status}"
                scores.append(ItemFailure(item.index, code, detail, item.id))
        scores.job_id, scores.deduplicated = job.id, job.deduplicated
        return scores


def _usable_total(entry: Any) -> float | None:
    if not isinstance(entry, RewardResult) or entry.total is None or not math.isfinite(entry.total):
        return None
    return float(entry.total)


# --- the asyncio client ----------------------------------------------------------------------


@dataclass
class PreparedRequest:
    """A request ready to send. ``videos`` are the SDK's own uint8 copies (frames already
    sampled); ``encode()`` shrinks them to ``long_side`` (downsample) and builds the body, off
    the caller's thread. Every retry reuses the body and the idempotency key."""

    videos: list[np.ndarray] | None
    geometry: list[dict | None] | None
    items: list[dict] | None
    options: dict | None
    long_side: int | None  # shrink to this before encoding (None: send as they are)
    idempotency_key: str
    deadline: float  # time.monotonic() by which the result must be in
    deadline_s: float
    ids: list[str | None] | None = None  # the item ids sent, checked against the answer
    body: EncodedBody | None = None

    def encode(self) -> EncodedBody:
        if self.body is None:
            videos = self.videos
            if self.long_side is not None:
                videos = [area_resize(video, self.long_side) for video in videos]
            self.body = encode_binary(videos, geometry=self.geometry, items=self.items, options=self.options)
            self.videos = None
        return self.body


class AsyncRewardClient:
    """asyncio client. ``await client.score(videos, prompts=...)`` -> :class:`Scores`.

    Parameters (all but ``url`` keyword-only in practice):

    - ``api_key``: bearer key; default ``$REWARD3D_API_KEY``.
    - ``deadline_s``: default overall deadline of one call (upload, retries, queueing,
      scoring, polls). A call past it raises :class:`DeadlineExceeded` and, with
      ``cancel_on_deadline``, cancels its job so no worker spends time on it.
    - ``downsample``: sample ``max_frames`` frames and shrink to ``long_side`` (the service's
      working resolution from ``GET /v1/info``, or the call's ``options``) before uploading.
      The service would do the same (same frame indices; area averaging like its INTER_AREA
      resize, rounded to uint8), so results agree to that rounding, for a fraction of the bytes.
    - ``options``: default ScoreOptions fields sent with every call (``long_side``,
      ``max_frames``, ``frame_stride``, ``terms``, ``weights``).
    - ``max_in_flight``: calls in progress at once; more wait (their deadline runs).
    - ``retry``: :class:`RetryPolicy`. ``poll_wait_s``: long-poll length per request.
      ``request_timeout_s``: how long one request may stall (read beyond the long-poll, write,
      connect) before it counts as a transient failure and is retried.
    - ``transport``: an httpx transport (tests).
    """

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        deadline_s: float = 900.0,
        downsample: bool = False,
        options: Mapping[str, Any] | None = None,
        max_in_flight: int = 16,
        retry: RetryPolicy | None = None,
        poll_wait_s: float = 60.0,
        request_timeout_s: float = 30.0,
        cancel_on_deadline: bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if deadline_s <= 0 or poll_wait_s < 0 or request_timeout_s <= 0 or max_in_flight < 1:
            raise ValueError("deadline_s and request_timeout_s must be > 0, poll_wait_s >= 0, max_in_flight >= 1")
        api_key = api_key if api_key is not None else os.environ.get("REWARD3D_API_KEY")
        headers = {"User-Agent": "reward3d-sdk"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.url = url.rstrip("/")
        self.deadline_s = float(deadline_s)
        self.downsample = downsample
        self.options = dict(options or {})
        self.max_in_flight = max_in_flight
        self.retry = retry or RetryPolicy()
        self.poll_wait_s = float(poll_wait_s)
        self.request_timeout_s = float(request_timeout_s)
        self.cancel_on_deadline = cancel_on_deadline
        self._http = httpx.AsyncClient(base_url=self.url, headers=headers, transport=transport,
                                       limits=httpx.Limits(max_connections=max_in_flight + 4))  # fmt: skip
        self._slots: asyncio.Semaphore | None = None  # created in the loop that uses it
        self._scoring: dict | None = None
        self._rng = random.Random()

    # -- public ------------------------------------------------------------------------------

    async def score(
        self,
        videos: Any,
        prompts: Sequence[str | None] | None = None,
        trajectories: Sequence[Mapping[str, Any] | None] | None = None,
        terms: Sequence[str] | None = None,
        weights: Mapping[str, float] | None = None,
        *,
        ids: Sequence[str | None] | None = None,
        geometry: Sequence[Mapping[str, Any] | None] | None = None,
        options: Mapping[str, Any] | None = None,
        deadline_s: float | None = None,
    ) -> Scores:
        """Score a batch of videos (one job); see the class and docs/sdk.md."""
        deadline_s = self.deadline_s if deadline_s is None else float(deadline_s)
        deadline = time.monotonic() + deadline_s
        scoring = await self._scoring_info(deadline) if self.downsample else None
        prepared = await asyncio.to_thread(
            self.prepare, videos, prompts=prompts, trajectories=trajectories, terms=terms, weights=weights,
            ids=ids, geometry=geometry, options=options, scoring=scoring, deadline=deadline, deadline_s=deadline_s,
        )  # fmt: skip
        return await self.run(prepared)

    async def info(self, *, deadline_s: float = 60.0, retry: bool = True) -> dict:
        """``GET /v1/info``: versions, scoring settings, limits. ``retry=False``: one attempt
        (a start-up check: raises the transport error or ServiceBusy instead of waiting)."""
        response = await self._request("GET", "/v1/info", deadline=time.monotonic() + deadline_s,
                                       deadline_s=deadline_s, retry=retry)  # fmt: skip
        return response.json()

    async def job(self, job_id: str, *, wait: float = 0.0, deadline_s: float = 60.0) -> JobPublic:
        deadline = time.monotonic() + deadline_s + wait
        response = await self._request("GET", f"/v1/jobs/{job_id}", deadline=deadline, deadline_s=deadline_s + wait,
                                       params={"wait": wait})  # fmt: skip
        return JobPublic.model_validate_json(response.content)

    async def cancel(self, job_id: str) -> None:
        """``DELETE /v1/jobs/{id}`` (a job that already ended is left as it is)."""
        try:
            await self._request("DELETE", f"/v1/jobs/{job_id}", deadline=time.monotonic() + 30, deadline_s=30)
        except RequestRejected as exc:
            if exc.status != 409:  # 409: it had already ended
                raise

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncRewardClient":
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.aclose()

    # -- building a request (pure; runs in the caller's thread for RewardClient) --------------

    def prepare(
        self,
        videos: Any,
        *,
        prompts: Sequence[str | None] | None = None,
        trajectories: Sequence[Mapping[str, Any] | None] | None = None,
        terms: Sequence[str] | None = None,
        weights: Mapping[str, float] | None = None,
        ids: Sequence[str | None] | None = None,
        geometry: Sequence[Mapping[str, Any] | None] | None = None,
        options: Mapping[str, Any] | None = None,
        scoring: Mapping[str, Any] | None = None,
        deadline: float,
        deadline_s: float,
    ) -> PreparedRequest:
        """Copy the videos into uint8 arrays (only the sampled frames with ``downsample``) and
        check the per-video fields. After this the caller may reuse its buffers; the
        resizing and encoding happen in :meth:`run` (``PreparedRequest.encode``)."""
        request_options = {**self.options, **dict(options or {})}
        if terms is not None:
            request_options["terms"] = list(terms)
        if weights is not None:
            request_options["weights"] = {str(k): float(v) for k, v in weights.items()}
        long_side = None
        if scoring is not None:  # downsample: the frames the service would pick, at its size
            long_side = int(request_options.get("long_side") or scoring["long_side"])
            max_frames = int(request_options.get("max_frames") or scoring["max_frames"])
            stride = int(request_options.get("frame_stride") or scoring.get("frame_stride") or 1)
            arrays, kept = to_uint8_videos(videos, max_frames=max_frames, frame_stride=stride)
            # sampled already: the service must keep every frame it gets (stride 1)
            request_options.update(long_side=long_side, max_frames=max_frames, frame_stride=1)
        else:
            arrays, kept = to_uint8_videos(videos)
        count = len(arrays)
        per_video = {"prompts": prompts, "trajectories": trajectories, "ids": ids, "geometry": geometry}
        for name, values in per_video.items():
            if values is not None and len(values) != count:
                raise ValueError(f"{count} videos but {len(values)} {name}")
        items = [_item_fields(i, prompts, trajectories, ids) for i in range(count)]
        geometry_arrays = None
        if geometry is not None:
            geometry_arrays = [_sample_geometry(g, kept[i]) for i, g in enumerate(geometry)]
        return PreparedRequest(
            videos=arrays, geometry=geometry_arrays, items=items if any(items) else None,
            options=request_options or None, long_side=long_side, idempotency_key=uuid.uuid4().hex,
            deadline=deadline, deadline_s=deadline_s, ids=list(ids) if ids is not None else None,
        )  # fmt: skip

    # -- running a request -------------------------------------------------------------------

    async def run(self, prepared: PreparedRequest) -> Scores:
        """Upload, then long-poll until the job ends or the deadline passes."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_in_flight)
        remaining = prepared.deadline - time.monotonic()
        try:
            await asyncio.wait_for(self._slots.acquire(), timeout=max(remaining, 0.0))
        except TimeoutError:
            raise DeadlineExceeded(prepared.deadline_s, attempts=0, last_error=None) from None
        job: JobPublic | None = None
        try:
            body = prepared.body or await asyncio.to_thread(prepared.encode)
            response = await self._request(
                "POST", "/v1/score", deadline=prepared.deadline, deadline_s=prepared.deadline_s, params={"wait": 0},
                headers={**body.headers, "Idempotency-Key": prepared.idempotency_key}, body=body,
            )  # fmt: skip
            job = _job(response)
            while not job.ended:
                remaining = prepared.deadline - time.monotonic()
                # ask the service to answer a little before our deadline, so the last poll
                # still brings the job back rather than timing out on our side
                wait = max(0.0, min(self.poll_wait_s, remaining - min(1.0, remaining / 4)))
                response = await self._request("GET", f"/v1/jobs/{job.id}", deadline=prepared.deadline,
                                               deadline_s=prepared.deadline_s, params={"wait": round(wait, 3)})  # fmt: skip
                job = _job(response)
        except (DeadlineExceeded, asyncio.CancelledError) as exc:
            if job is not None:
                if isinstance(exc, DeadlineExceeded):
                    exc.job_id = job.id
                if self.cancel_on_deadline:
                    await self._cancel_quietly(job.id)
            raise
        finally:
            self._slots.release()
        return Scores.from_job(job, body.num_videos, prepared.ids)

    async def _request(
        self,
        method: str,
        path: str,
        *,
        deadline: float,
        deadline_s: float,
        params: dict | None = None,
        headers: dict | None = None,
        body: EncodedBody | None = None,
        retry: bool = True,
    ) -> httpx.Response:
        """One HTTP call with retries of transient failures, all before ``deadline``."""
        attempts, last_error = 0, None
        wait = float((params or {}).get("wait", 0.0))
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineExceeded(deadline_s, attempts=attempts, last_error=last_error)
            timeout = httpx.Timeout(self.request_timeout_s, read=self.request_timeout_s + wait)
            attempts += 1
            retry_after = None
            try:
                async with asyncio.timeout(remaining):  # the deadline, whatever httpx is doing
                    response = await self._http.request(
                        method, path, params=params, headers=headers, timeout=timeout,
                        content=_async_chunks(body) if body is not None else None,
                    )  # fmt: skip
            except TimeoutError:  # asyncio.timeout fired: the deadline passed mid-request
                raise DeadlineExceeded(deadline_s, attempts=attempts, last_error=last_error) from None
            except TRANSIENT_ERRORS as exc:
                last_error = exc
            else:
                if response.status_code < 300:
                    return response
                if response.status_code not in TRANSIENT_STATUS:
                    raise RequestRejected.from_response(response)
                retry_after = parse_retry_after(response.headers.get("retry-after"))
                last_error = ServiceBusy(response.status_code, _problem_code(response), retry_after)
            if not retry or (self.retry.max_attempts is not None and attempts >= self.retry.max_attempts):
                raise last_error
            delay = self.retry.delay(attempts, retry_after, self._rng)
            if time.monotonic() + delay >= deadline:  # do not sleep past the deadline
                raise DeadlineExceeded(deadline_s, attempts=attempts, last_error=last_error)
            log.warning("%s %s: %s: %s; retrying in %.2f s (attempt %d)", method, path,
                        type(last_error).__name__, last_error, delay, attempts + 1)  # fmt: skip
            await asyncio.sleep(delay)

    async def _scoring_info(self, deadline: float) -> dict:
        if self._scoring is None:
            response = await self._request("GET", "/v1/info", deadline=deadline, deadline_s=deadline - time.monotonic())
            self._scoring = dict(response.json()["scoring"])
        return self._scoring

    async def _cancel_quietly(self, job_id: str) -> None:
        try:
            await asyncio.wait_for(self._http.delete(f"/v1/jobs/{job_id}", timeout=5.0), timeout=5.0)
        except Exception as exc:  # best effort: the job's result simply expires otherwise
            log.info("could not cancel job %s: %s", job_id, exc)


def _job(response: httpx.Response) -> JobPublic:
    try:
        return JobPublic.model_validate_json(response.content)
    except ValueError as exc:
        raise RewardServiceError(f"unexpected response to {response.request.method} {response.request.url.path}: {exc}") from None


def _problem_code(response: httpx.Response) -> str:
    try:
        return str(response.json().get("code", response.reason_phrase))
    except (ValueError, AttributeError):
        return response.reason_phrase


async def _async_chunks(body: EncodedBody):
    for chunk in body.chunks():  # a fresh iterator per attempt
        yield chunk


def _item_fields(index: int, prompts, trajectories, ids) -> dict:
    item: dict[str, Any] = {}
    if ids is not None and ids[index] is not None:
        item["id"] = str(ids[index])
    if prompts is not None and prompts[index] is not None:
        item["prompt"] = str(prompts[index])
    if trajectories is not None and trajectories[index] is not None:
        item["trajectory"] = _trajectory_fields(trajectories[index])
    return item


def _trajectory_fields(trajectory: Mapping[str, Any]) -> dict:
    """A TrajectoryTarget as JSON: ``{"camera_to_world" | "world_to_camera": [N,4,4],
    "convention": "opencv" | "opengl"}``; arrays and tensors become nested lists."""
    if not isinstance(trajectory, Mapping):
        raise TypeError("a trajectory is a mapping such as {'camera_to_world': array [N,4,4]} "
                        "(or 'world_to_camera'; optional 'convention': 'opencv' | 'opengl')")  # fmt: skip
    fields = {}
    for key, value in trajectory.items():
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        fields[key] = np.asarray(value, dtype=np.float64).tolist() if key != "convention" else value
    return fields


def _sample_geometry(arrays: Mapping[str, Any] | None, frames: list[int] | None) -> dict | None:
    """Known geometry of one video, its per-frame arrays restricted to the sampled frames."""
    if arrays is None:
        return None
    out = {}
    for name in GEOMETRY_NAMES:
        value = arrays.get(name)
        if value is None:
            continue
        value = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value)
        per_frame = not (name == "intrinsics" and value.ndim == 2)  # [3,3]: shared by all frames
        out[name] = value[frames] if frames is not None and per_frame else value
    return out


# --- the synchronous client ------------------------------------------------------------------


class RewardClient:
    """Thread-safe synchronous client with futures. Same parameters as
    :class:`AsyncRewardClient`; an event loop on a daemon thread does the I/O.

    - ``submit(videos, prompts=, trajectories=, terms=, weights=, ...)`` returns at once (after
      copying the videos) with a ``concurrent.futures.Future`` of :class:`Scores`; the future
      raises :class:`RequestRejected` or :class:`DeadlineExceeded` if the call failed as a
      whole. ``future.cancel()`` stops waiting and cancels the job on the service.
    - ``score(...)`` = ``submit(...).result()``.
    """

    def __init__(self, url: str, api_key: str | None = None, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="reward3d-client", daemon=True)
        self._thread.start()
        self._closed = False

        async def build() -> AsyncRewardClient:  # httpx's client belongs to the loop it runs on
            return AsyncRewardClient(url, api_key, **kwargs)

        self._client = self._call(build())

    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    @property
    def deadline_s(self) -> float:
        return self._client.deadline_s

    def submit(
        self,
        videos: Any,
        prompts: Sequence[str | None] | None = None,
        trajectories: Sequence[Mapping[str, Any] | None] | None = None,
        terms: Sequence[str] | None = None,
        weights: Mapping[str, float] | None = None,
        *,
        ids: Sequence[str | None] | None = None,
        geometry: Sequence[Mapping[str, Any] | None] | None = None,
        options: Mapping[str, Any] | None = None,
        deadline_s: float | None = None,
    ) -> concurrent.futures.Future[Scores]:
        if self._closed:
            raise RuntimeError("this RewardClient is closed")
        client = self._client
        deadline_s = client.deadline_s if deadline_s is None else float(deadline_s)
        deadline = time.monotonic() + deadline_s
        scoring = self._call(client._scoring_info(deadline)) if client.downsample else None
        prepared = client.prepare(videos, prompts=prompts, trajectories=trajectories, terms=terms, weights=weights,
                                  ids=ids, geometry=geometry, options=options, scoring=scoring,
                                  deadline=deadline, deadline_s=deadline_s)  # fmt: skip
        return asyncio.run_coroutine_threadsafe(client.run(prepared), self._loop)

    def score(self, videos: Any, prompts=None, trajectories=None, terms=None, weights=None, **kwargs: Any) -> Scores:
        return self.submit(videos, prompts, trajectories, terms, weights, **kwargs).result()

    def info(self, **kwargs: Any) -> dict:
        return self._call(self._client.info(**kwargs))

    def job(self, job_id: str, **kwargs: Any) -> JobPublic:
        return self._call(self._client.job(job_id, **kwargs))

    def cancel(self, job_id: str) -> None:
        self._call(self._client.cancel(job_id))

    def close(self) -> None:
        """Stop the I/O thread. Calls still in flight are cancelled (and their jobs too)."""
        if self._closed:
            return
        self._closed = True

        async def shutdown() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._client.aclose()

        self._call(shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> "RewardClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
