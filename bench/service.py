#!/usr/bin/env python
"""Service benchmark (issue 4): what HTTP + queue + blob store add around the reward.

    python bench/service.py            # the full run recorded in bench/RESULTS.md (~5 min)
    python bench/service.py --quick    # fewer repetitions, small clips only

Starts ``reward3d serve`` (private Redis, 1 worker, oracle geometry sent with each clip) and
the common-practice baseline server, then prints, in one run:

1. Upload throughput (MB/s of raw uint8 video; client encode + transfer + server ingest up to
   the 202) for 16x256x448 and 81x480x832 clips: reward3d binary and .npy bodies, base64 JSON,
   and the common practice (pickle of JPEG q75 frames), with raw loopback TCP as the floor.
   Bit-exactness is checked: the service's content-addressed blob must exist under the BLAKE3 digest
   of the original array; the JPEG path is lossy (PSNR shown).
2. Service overhead: ``POST /v1/score?wait=`` end to end vs. the same RewardPipeline called
   in-process, on 16x256x448 clips, 1 worker (ratio; goal <= 1.05).
3. Latency under 8 concurrent clients (p50/p99), small clips, 1 worker.

Figures on 2 shared CPU cores are noisy; ratios measured side by side hold better.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from service.api.encode import body_chunks, encode_binary, encode_json, encode_npy  # noqa: E402
from service.jobs.blobs import DirectoryBlobStore  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer 200 within {timeout} s")


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}")


# -- the processes --------------------------------------------------------------------------
class Services:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port, self.baseline_port, self.sink_port = free_port(), free_port(), free_port()
        self.http_sink_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("REWARD3D_") and k != "REDIS_URL"}
        env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), REWARD3D_GEOMETRY_BACKEND="oracle",
                   REWARD3D_NUM_THREADS="1", REWARD3D_CACHE_TTL_S="0", REWARD3D_MAX_JSON_MB="256",
                   REWARD3D_MAX_INFLIGHT_PER_KEY="1000", REWARD3D_MAX_WAIT_S="600")  # fmt: skip
        self.log = open(root / "serve.log", "wb")
        self.serve = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--data-dir", str(root / "data"),
             "--port", str(self.port), "--log-level", "warning"],
            cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT)  # fmt: skip
        self.baseline = subprocess.Popen(
            [sys.executable, str(REPO / "bench" / "common_practice_server.py"), str(self.baseline_port)],
            env=env, stdout=self.log, stderr=subprocess.STDOUT)  # fmt: skip
        self.sink = subprocess.Popen([sys.executable, "-c", SINK, str(self.sink_port)])
        self.http_sink = subprocess.Popen([sys.executable, "-c", HTTP_SINK, str(self.http_sink_port), str(REPO)],
                                          env=env, stdout=self.log, stderr=subprocess.STDOUT)  # fmt: skip
        self.url = f"http://127.0.0.1:{self.port}"
        wait_http(f"{self.url}/readyz")
        wait_port(self.http_sink_port)
        self.key = (root / "data" / "api_key").read_text().strip()
        self.client = httpx.Client(base_url=self.url, timeout=900,
                                   headers={"Authorization": f"Bearer {self.key}"})  # fmt: skip
        self.blobs = DirectoryBlobStore(root / "data" / "blobs")
        self.sink_client = httpx.Client(base_url=f"http://127.0.0.1:{self.http_sink_port}", timeout=300)
        self.baseline_client = httpx.Client(base_url=f"http://127.0.0.1:{self.baseline_port}", timeout=300)
        time.sleep(0.5)

    def stop(self) -> None:
        for client in (self.client, self.sink_client, self.baseline_client):
            client.close()
        for process in (self.serve, self.baseline, self.sink, self.http_sink):
            process.terminate()
        for process in (self.serve, self.baseline, self.sink, self.http_sink):
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()


# The same HTTP stack as the service (uvicorn, httptools, the 4 MB high-water mark) with an app
# that discards the body: what HTTP itself costs, before hashing, storing and queueing.
HTTP_SINK = r"""
import sys, uvicorn
sys.path.insert(0, sys.argv[2])
from service.api.server import tune_uvicorn_for_uploads
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 202, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})
tune_uvicorn_for_uploads()
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""

# A loopback TCP sink: reads a length-prefixed payload into a reused buffer, answers one byte.
SINK = r"""
import socket, struct, sys
server = socket.socket(); server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", int(sys.argv[1]))); server.listen(1)
buffer = bytearray(1)
while True:
    connection, _ = server.accept()
    with connection:
        (size,) = struct.unpack("<Q", connection.recv(8, socket.MSG_WAITALL))
        if len(buffer) < size:
            buffer = bytearray(size)
        view, got = memoryview(buffer), 0
        while got < size:
            got += connection.recv_into(view[got:size])
        connection.sendall(b"k")
"""


# -- 1. upload throughput ---------------------------------------------------------------------
def distinct(video: np.ndarray, rep: int) -> np.ndarray:
    copy = video.copy()
    copy[0, 0, 0] = [rep % 256, rep // 256 % 256, 77]
    return copy


def send_tcp(services: Services, video: np.ndarray) -> float:
    payload = memoryview(np.ascontiguousarray(video).reshape(-1))
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", services.sink_port)) as sock:
        sock.sendall(len(payload).to_bytes(8, "little"))
        sock.sendall(payload)
        sock.recv(1)
    return time.perf_counter() - started


def send_http_only(services: Services, video: np.ndarray) -> float:
    started = time.perf_counter()
    headers, parts = encode_binary([video])
    response = services.sink_client.post("/", headers=headers, content=body_chunks(parts))
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed


def send_reward3d(services: Services, video: np.ndarray, encoder) -> float:
    started = time.perf_counter()
    headers, parts = encoder(video)
    content = body_chunks(parts) if isinstance(parts, list) else parts
    response = services.client.post("/v1/score", headers=headers, content=content)
    elapsed = time.perf_counter() - started
    if response.status_code not in (200, 202):  # 200: the (geometry-less) job already ended
        raise RuntimeError(response.text)
    return elapsed


def send_pickle_jpeg(services: Services, video: np.ndarray) -> float:
    started = time.perf_counter()
    frames = [cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 75])[1].tobytes() for frame in video]
    body = pickle.dumps(frames)
    response = services.baseline_client.post("/score", content=body)
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed


def psnr_of_jpeg(video: np.ndarray) -> float:
    decoded = np.stack([cv2.imdecode(cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 75])[1],
                                     cv2.IMREAD_UNCHANGED) for f in video])  # fmt: skip
    mse = np.mean((decoded.astype(np.float64) - video) ** 2)
    return 10 * np.log10(255**2 / mse)


def stored_bit_exact(services: Services, video: np.ndarray, scratch: Path) -> bool:
    """The service stores tensors content-addressed: if a blob exists under the BLAKE3 digest of the
    canonical .npy of *our* array, the service holds exactly our bytes."""
    expected = DirectoryBlobStore(scratch).put_array(video)
    return services.blobs.exists(expected)


def upload_throughput(services: Services, clips: dict[str, np.ndarray], reps: dict[str, int],
                      scratch: Path) -> list[dict]:  # fmt: skip
    methods = {
        "loopback TCP (floor)": lambda v: send_tcp(services, v),
        "HTTP only (same stack, body discarded)": lambda v: send_http_only(services, v),
        "reward3d binary": lambda v: send_reward3d(services, v, lambda x: encode_binary([x])),
        "reward3d .npy": lambda v: send_reward3d(services, v, lambda x: encode_npy(x)),
        "reward3d base64 JSON": lambda v: send_reward3d(services, v, lambda x: encode_json([x])),
        "common practice: pickle of JPEG q75": lambda v: send_pickle_jpeg(services, v),
    }
    rows = []
    for size_name, video in clips.items():
        times = {name: [] for name in methods}
        exact = {}
        for rep in range(reps[size_name]):
            for name, method in methods.items():  # interleaved: noise hits every method alike
                sample = distinct(video, 1000 * len(rows) + 10 * rep + list(methods).index(name))
                times[name].append(method(sample))
                if rep == 0 and name.startswith("reward3d"):
                    found = stored_bit_exact(services, sample, scratch / name.replace(" ", "_"))
                    exact[name] = "yes" if found else "NO: blob not found"
        megabytes = video.nbytes / 1e6
        floor = statistics.median(times["loopback TCP (floor)"])
        psnr = psnr_of_jpeg(video)
        for name, samples in times.items():
            median = statistics.median(samples)
            rows.append({"clip": size_name, "method": name, "ms": 1000 * median,
                         "mb_per_s": megabytes / median, "x_tcp": median / floor,
                         "bit_exact": exact.get(name, "-" if "JPEG" not in name else f"no ({psnr:.1f} dB)")})  # fmt: skip
    return rows


# -- 2. overhead vs in-process ------------------------------------------------------------------
# In-process scoring runs in its own fresh process (like the worker: same settings, one thread),
# so the comparison is between two identical processes, one called directly, one via the service.
_local_pipeline = None


def _start_local_pipeline() -> None:
    global _local_pipeline
    import torch

    from service.pipeline import RewardPipeline
    from service.settings import Settings

    torch.set_num_threads(1)
    _local_pipeline = RewardPipeline(Settings(geometry_backend="oracle", num_threads=1))


def _score_locally(video_path: str, geometry_path: str, options: dict) -> float:
    from service.schemas import ScoreOptions

    video = np.load(video_path)
    with np.load(geometry_path) as data:
        geometry = {key: data[key] for key in data.files}
    started = time.perf_counter()
    _local_pipeline(video, geometry_arrays=geometry, options=ScoreOptions(**options))
    return time.perf_counter() - started


def overhead(services: Services, video: np.ndarray, geometry: dict, reps: int, scratch: Path) -> dict:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    options = {"max_frames": video.shape[0], "long_side": max(video.shape[1:3])}
    scratch.mkdir(parents=True, exist_ok=True)
    np.savez(scratch / "geometry.npz", **geometry)
    local, remote, compute, queue_wait = [], [], [], []
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_start_local_pipeline) as pool:  # fmt: skip
        warm = distinct(video, 49_999)
        np.save(scratch / "warm.npy", warm)
        pool.submit(_score_locally, str(scratch / "warm.npy"), str(scratch / "geometry.npz"), options).result()
        for rep in range(reps):  # interleaved, so slow drifts of the machine hit both alike
            np.save(scratch / "local.npy", distinct(video, 50_000 + rep))
            local.append(pool.submit(_score_locally, str(scratch / "local.npy"),
                                     str(scratch / "geometry.npz"), options).result())  # fmt: skip
            sample = distinct(video, 60_000 + rep)
            started = time.perf_counter()
            headers, parts = encode_binary([sample], geometry=[geometry], options=options)
            response = services.client.post("/v1/score?wait=600", headers=headers, content=body_chunks(parts))
            remote.append(time.perf_counter() - started)
            job = response.json()
            assert response.status_code == 200 and job["items"][0]["status"] == "ok", response.text[:500]
            compute.append(job["items"][0]["result"]["timings_ms"]["total"] / 1000)
            queue_wait.append(job["started_at"] - job["created_at"])
    # What the service adds to each request (HTTP, blob store, queue, result fetch) is its
    # latency minus the worker's own compute, measured on the same request: unlike the raw
    # ratio, it does not move with compute-speed noise between two processes on shared cores.
    added = statistics.median(r - c for r, c in zip(remote, compute))
    return {"in_process_s": statistics.median(local), "service_s": statistics.median(remote),
            "ratio": statistics.median(remote) / statistics.median(local),
            "worker_compute_s": statistics.median(compute), "service_added_s": added,
            "added_ratio": (statistics.median(local) + added) / statistics.median(local),
            "queue_wait_s": statistics.median(queue_wait), "reps": reps}  # fmt: skip


# -- 3. latency under concurrency ---------------------------------------------------------------
def concurrent_latency(services: Services, video: np.ndarray, geometry: dict, clients: int,
                       requests: int) -> dict:  # fmt: skip
    options = {"max_frames": video.shape[0], "long_side": max(video.shape[1:3])}

    def one(seed: int) -> float:
        sample = distinct(video, seed)
        started = time.perf_counter()
        headers, parts = encode_binary([sample], geometry=[geometry], options=options)
        response = services.client.post("/v1/score?wait=600", headers=headers, content=body_chunks(parts))
        assert response.status_code == 200, response.text[:300]
        return time.perf_counter() - started

    alone = [one(70_000 + i) for i in range(5)]

    def client(index: int) -> list[float]:
        return [one(80_000 + 1000 * index + i) for i in range(requests)]

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = sorted(x for batch in pool.map(client, range(clients)) for x in batch)
    wall = time.perf_counter() - started
    return {"clients": clients, "requests": len(latencies), "alone_p50_ms": 1000 * statistics.median(alone),
            "p50_ms": 1000 * latencies[len(latencies) // 2],
            "p99_ms": 1000 * latencies[min(int(0.99 * len(latencies)), len(latencies) - 1)],
            "jobs_per_s": len(latencies) / wall}  # fmt: skip


# -- main ---------------------------------------------------------------------------------------
def synthetic(frames: int, height: int, width: int):
    from service.synthetic import make_clip

    clip = make_clip("orbit", frames, height, width, supersample=1)
    return clip.frames, clip.geometry_arrays()


def big_clip(small: np.ndarray) -> np.ndarray:
    """81x480x832 from the small clip's textures (realistic for JPEG, cheap to make)."""
    frames = [cv2.resize(small[i % len(small)], (832, 480), interpolation=cv2.INTER_CUBIC)
              for i in range(81)]  # fmt: skip
    return np.stack([np.roll(f, 3 * i, axis=1) for i, f in enumerate(frames)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, no 97 MB clip")
    args = parser.parse_args()
    print("making clips...", flush=True)
    video, geometry = synthetic(16, 256, 448)
    small_video, small_geometry = synthetic(8, 72, 128)
    clips = {"16x256x448 (5.5 MB)": video}
    reps = {"16x256x448 (5.5 MB)": 3 if args.quick else 7}
    if not args.quick:
        clips["81x480x832 (97 MB)"] = big_clip(video)
        reps["81x480x832 (97 MB)"] = 3
    with tempfile.TemporaryDirectory(prefix="r3d-bench-") as tmp:
        root = Path(tmp)
        print("starting reward3d serve + baseline...", flush=True)
        services = Services(root)
        try:
            print("\n1. upload throughput (median; MB/s of raw uint8 video)")
            print(f"{'clip':<22} {'method':<40} {'ms':>9} {'MB/s':>8} {'x TCP':>7}  bit-exact")
            for row in upload_throughput(services, clips, reps, root / "scratch"):
                print(f"{row['clip']:<22} {row['method']:<40} {row['ms']:>9.1f} {row['mb_per_s']:>8.1f} "
                      f"{row['x_tcp']:>7.2f}  {row['bit_exact']}")
            print("\n2. service overhead, 16x256x448 clips, 1 worker (median)")
            result = overhead(services, video, geometry, reps=3 if args.quick else 5,
                              scratch=root / "overhead")  # fmt: skip
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}))
            print(f"   end to end, service / in-process = {result['ratio']:.3f}; with the service's "
                  f"added time only: {result['added_ratio']:.3f} (goal <= 1.05)")
            print("\n3. latency under 8 concurrent clients, 8x72x128 clips, 1 worker")
            latency = concurrent_latency(services, small_video, small_geometry, clients=8,
                                         requests=4 if args.quick else 12)  # fmt: skip
            print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in latency.items()}))
        finally:
            services.stop()


if __name__ == "__main__":
    main()
