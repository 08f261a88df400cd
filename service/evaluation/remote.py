"""Scoring through a running reward3d service (``reward3d eval --service URL``), many videos in
flight at once. Wire contract: docs/service.md.

Per video: ``POST /v1/score`` (an encoded video file as multipart; arrays, and videos with
known geometry, in the binary tensor format), with the result key as ``Idempotency-Key`` so a
retried or repeated submit returns the same job; then ``GET /v1/jobs/{id}?wait=`` (long poll)
until the job ends. 429/503 are retried after their ``Retry-After``; connection errors and 5xx
with exponential backoff (tenacity); a refused input (413/415/422) is that video's outcome.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import json
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from service.evaluation.scorers import EvaluationSetupError, Scored, Task
from service.evaluation.videos import IMAGE_SUFFIXES
from service.schemas import RewardResult, ScoreOptions

ENCODED_SUFFIXES = {".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v", ".gif"}
TERMINAL = {"finished", "failed", "cancelled"}
POLL_WAIT_S = 20  # long-poll length; also how soon an interrupted run's threads notice
SUBMIT_ATTEMPTS = 8
REFUSED = {413, 415, 422}  # the input itself was refused: the video's outcome, not a retry


class _Retryable(Exception):
    """A response worth retrying (429, 503, 5xx); ``retry_after`` from the server, if any."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServiceScorer:
    # Pages come from the service (GET /v1/jobs/{id}/report, asked for with "report": true)
    # when it keeps them; otherwise they are drawn from the result alone.
    full_reports = False

    def __init__(self, url: str, *, api_key: str | None, options: ScoreOptions,
                 concurrency: int = 8, known_geometry: bool = False, want_reports: bool = False,
                 client=None) -> None:  # fmt: skip
        import httpx

        self.url = url.rstrip("/")
        self.source = self.url
        self.options = options
        self.concurrency = concurrency
        self.uses_known_geometry = known_geometry
        self.want_reports = want_reports
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = client or httpx.Client(base_url=self.url, headers=headers,
                                             timeout=httpx.Timeout(30.0, read=POLL_WAIT_S + 30))  # fmt: skip
        self._info: dict[str, Any] | None = None
        self._stop = threading.Event()

    # -- set-up ------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        if self._info is None:
            import httpx

            try:
                response = self.client.get("/v1/info")
            except httpx.HTTPError as exc:
                raise EvaluationSetupError(f"cannot reach the service at {self.url}: {exc}") from None
            if response.status_code == 401:
                raise EvaluationSetupError(
                    "the service refused the API key (give --api-key or set REWARD3D_API_KEY)"
                )
            if response.status_code != 200:
                raise EvaluationSetupError(f"{self.url}/v1/info answered {response.status_code}: "
                                           f"{_problem(response)}")  # fmt: skip
            self._info = response.json()
        return self._info

    def fingerprint(self) -> dict[str, Any]:
        info = self.info()
        return {"service": self.url, "reward3d": info.get("reward3d"),
                "reward_spec": info.get("reward_spec"), "scoring": info.get("scoring"),
                "options": self.options.model_dump(mode="json", exclude_none=True)}  # fmt: skip

    def prepare(self) -> None:
        self.info()

    # -- scoring -----------------------------------------------------------------------------
    def score_all(self, tasks: Iterable[Task]) -> Iterator[tuple[Task, Scored]]:
        executor = concurrent.futures.ThreadPoolExecutor(self.concurrency,
                                                         thread_name_prefix="reward3d-eval")  # fmt: skip
        futures = {executor.submit(self.score, task): task for task in tasks}
        try:
            for future in concurrent.futures.as_completed(futures):
                yield futures[future], future.result()
        finally:
            # Interrupted (or done): stop polling, drop what has not started.
            self._stop.set()
            executor.shutdown(wait=False, cancel_futures=True)

    def score(self, task: Task) -> Scored:
        try:
            job = self._submit(task)
        except _Refused as exc:
            return Scored("failed", error={"code": "invalid_input", "detail": str(exc)})
        except (_Retryable, _Rejected) as exc:
            return Scored("failed", error={"code": "service_error", "detail": str(exc)})
        job_id = job["id"]
        while job.get("status") not in TERMINAL:
            if self._stop.is_set():
                return Scored("failed", job_id=job_id,
                              error={"code": "interrupted", "detail": "the run was interrupted"})  # fmt: skip
            try:
                job = self._get_job(job_id)
            except _Retryable as exc:
                return Scored("failed", job_id=job_id,
                              error={"code": "service_error", "detail": str(exc)})  # fmt: skip
            if job is None:
                return Scored("failed", job_id=job_id, error={"code": "job_lost", "detail":
                              f"job {job_id} is unknown to the service (expired?)"})  # fmt: skip
        scored = _item_outcome(job, job_id)
        report = (job.get("items") or [{}])[0].get("report")
        if scored.status == "ok" and report:
            scored.report_html = self._get_report(report)
        return scored

    def fetch_report(self, record: dict) -> str | None:
        """The page the service kept for a stored result (None if it kept none, or expired)."""
        if not self.want_reports or not record or not record.get("job_id"):
            return None
        return self._get_report(f"/v1/jobs/{record['job_id']}/report?item=0")

    def _get_report(self, path: str) -> str | None:
        import httpx

        try:
            response = self.client.get(path)
        except httpx.HTTPError:
            return None
        if response.status_code != 200 or "text/html" not in response.headers.get("content-type", ""):
            return None  # not kept, or expired: the page is then drawn from the result alone
        return response.text

    def _submit(self, task: Task) -> dict[str, Any]:
        import httpx
        from tenacity import Retrying, retry_if_exception_type, stop_after_attempt

        request = {"items": [{"id": task.entry.name[:256],
                              **({"prompt": task.prompt} if task.prompt else {}),
                              **self._trajectory(task),
                              **({"report": True} if self.want_reports else {})}],
                   "options": self.options.model_dump(mode="json", exclude_none=True)}  # fmt: skip
        # Same video, prompt, options and request -> same key -> the same job, on a retry or a
        # rerun; any change in the request (e.g. asking for a report) is another key.
        request_json = json.dumps(request, sort_keys=True)
        headers = {"Idempotency-Key": hashlib.sha256(f"{task.key}:{request_json}".encode()).hexdigest()}
        retrying = Retrying(retry=retry_if_exception_type((_Retryable, httpx.TransportError)),
                            stop=stop_after_attempt(SUBMIT_ATTEMPTS), wait=_wait, reraise=True)  # fmt: skip
        for attempt in retrying:
            with attempt:
                try:
                    response = self._post(task, request, headers)
                except httpx.TransportError as exc:
                    raise _Retryable(f"cannot reach the service: {exc}") from None
                return self._job_from(response)
        raise AssertionError("unreachable")  # tenacity re-raises the last error

    def _post(self, task: Task, request: dict, headers: dict[str, str]):
        path, geometry = task.entry.path, self._geometry(task)
        if path.is_file() and path.suffix.lower() in ENCODED_SUFFIXES and geometry is None:
            with path.open("rb") as handle:
                return self.client.post("/v1/score", headers=headers,
                                        files=[("video", (path.name, handle, "application/octet-stream"))],
                                        data={"request": json.dumps(request)})  # fmt: skip
        if path.is_file() and path.suffix.lower() in ENCODED_SUFFIXES:
            parts = [("video", (path.name, path.read_bytes(), "application/octet-stream"))]
            parts += [(name, (f"{name}.npy", _npy_bytes(array), "application/octet-stream"))
                      for name, array in geometry.items()]  # fmt: skip
            return self.client.post("/v1/score", headers=headers, files=parts,
                                    data={"request": json.dumps(request)})  # fmt: skip
        from service.api.encode import body_chunks, encode_binary

        body_headers, parts = encode_binary([read_frames(path)],
                                            geometry=[geometry] if geometry else None,
                                            items=request["items"], options=request["options"])  # fmt: skip
        return self.client.post("/v1/score", headers={**headers, **body_headers},
                                content=body_chunks(parts))  # fmt: skip

    def _trajectory(self, task: Task) -> dict[str, Any]:
        from service.inputs import InputFileError, load_trajectory_file

        if task.entry.trajectory_path is None:
            return {}
        try:
            target = load_trajectory_file(task.entry.trajectory_path)
        except InputFileError as exc:
            raise _Refused(str(exc)) from None
        return {"trajectory": target.model_dump(mode="json", exclude_none=True)}

    def _geometry(self, task: Task) -> dict[str, np.ndarray] | None:
        if not self.uses_known_geometry:
            return None
        if task.entry.geometry_path is None:
            raise _Refused(f"--geometry oracle needs {task.entry.path.name}'s known geometry "
                           "in a file NAME.geometry.npz next to it")  # fmt: skip
        with np.load(task.entry.geometry_path, allow_pickle=False) as data:
            arrays = {key: np.asarray(data[key]) for key in data.files}
        if "world_to_camera" not in arrays and "camera_to_world" in arrays:
            arrays["world_to_camera"] = np.linalg.inv(arrays.pop("camera_to_world"))
        return {k: arrays[k] for k in ("depth", "world_to_camera", "intrinsics", "confidence")
                if k in arrays}  # fmt: skip

    def _job_from(self, response) -> dict[str, Any]:
        if response.status_code in (200, 202):
            return response.json()
        if response.status_code == 401:
            raise EvaluationSetupError("the service refused the API key")
        if response.status_code in REFUSED and _code(response) != "idempotency-key-reused":
            raise _Refused(f"refused by the service ({response.status_code}): {_problem(response)}")
        if response.status_code in (429, 503) or response.status_code >= 500:
            raise _Retryable(f"service answered {response.status_code}: {_problem(response)}",
                             _retry_after(response))  # fmt: skip
        raise _Rejected(f"service answered {response.status_code}: {_problem(response)}")

    def _get_job(self, job_id: str) -> dict[str, Any] | None:
        import httpx
        from tenacity import Retrying, retry_if_exception_type, stop_after_attempt

        retrying = Retrying(retry=retry_if_exception_type(_Retryable),
                            stop=stop_after_attempt(SUBMIT_ATTEMPTS), wait=_wait, reraise=True)  # fmt: skip
        for attempt in retrying:
            with attempt:
                try:
                    response = self.client.get(f"/v1/jobs/{job_id}", params={"wait": POLL_WAIT_S})
                except httpx.TransportError as exc:
                    raise _Retryable(f"cannot reach the service: {exc}") from None
                if response.status_code == 404:
                    return None
                if response.status_code == 200:
                    return response.json()
                if response.status_code == 401:
                    raise EvaluationSetupError("the service refused the API key")
                raise _Retryable(f"service answered {response.status_code}: {_problem(response)}",
                                 _retry_after(response))  # fmt: skip
        raise AssertionError("unreachable")


class _Refused(Exception):
    """The service refused this input (413/415/422): the video's outcome, stored like a result."""


class _Rejected(Exception):
    """Another 4xx (not about the input): not retried now, not stored; a rerun tries again."""


def _item_outcome(job: dict[str, Any], job_id: str) -> Scored:
    items = job.get("items") or []
    if not items:
        error = job.get("error") or {"code": "service_error", "detail": f"job {job['status']}"}
        return Scored("failed", job_id=job_id, error=error)
    item = items[0]
    if item.get("status") == "ok" and item.get("result") is not None:
        return Scored("ok", result=RewardResult.model_validate(item["result"]), job_id=job_id)
    error = item.get("error") or job.get("error") or {"code": "service_error",
                                                      "detail": f"item {item.get('status')}"}  # fmt: skip
    return Scored("failed", job_id=job_id, error={"code": str(error.get("code")),
                                                  "detail": str(error.get("detail"))})  # fmt: skip


def _wait(retry_state) -> float:
    """The server's Retry-After when it gave one, else 0.5, 1, 2, ... 30 s."""
    error = retry_state.outcome.exception() if retry_state.outcome else None
    if isinstance(error, _Retryable) and error.retry_after is not None:
        return min(error.retry_after, 120.0)
    return min(30.0, 0.5 * 2 ** (retry_state.attempt_number - 1))


def _retry_after(response) -> float | None:
    try:
        return float(response.headers.get("Retry-After"))
    except (TypeError, ValueError):
        return None


def _code(response) -> str | None:
    try:
        return response.json().get("code")
    except ValueError:
        return None


def _problem(response) -> str:
    """An RFC 9457 problem's ``detail`` (or the body's start)."""
    try:
        body = response.json()
        return f"{body.get('code', '')}: {body.get('detail') or body.get('title')}"
    except ValueError:
        return response.text[:300]


# -- encoding ----------------------------------------------------------------------------------
def read_frames(path: Path) -> np.ndarray:
    """The raw frames of an array file or image folder, uint8/float [T,H,W,C] (no resizing:
    the server samples and resizes, exactly as in-process scoring does)."""
    if path.is_dir():
        from PIL import Image

        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    if path.suffix.lower() == ".npy":
        array = np.load(path, allow_pickle=False)
    elif path.suffix.lower() == ".safetensors":
        from safetensors.numpy import load_file

        tensors = load_file(str(path))
        key = next((k for k in ("video", "frames") if k in tensors), None)
        if key is None and len(tensors) != 1:
            raise _Refused(f"{path} holds tensors {sorted(tensors)}; name the video 'video'")
        array = tensors[key] if key else next(iter(tensors.values()))
    else:
        raise _Refused(f"{path.name}: not a video file, array or image folder")
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    return np.ascontiguousarray(array)


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()
