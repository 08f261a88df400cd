"""A bounded chaos soak of `reward3d serve` on loopback (issue 15).

N trainer clients (the SDK, one call = one job) submit for M minutes while a chaos thread
kill -9s random workers (and now and then the API process, which is then started again, as an
orchestrator would), and stops this soak's own redis-server for 5-60 s several times (SIGKILL,
then a restart on the same port and append-only file). Afterwards, with the chaos over, it
waits for the clients' calls to end and counts, from the clients and from Redis itself:

    accepted    jobs the service created (records in Redis; the chaos thread's probes included)
    completed   accepted jobs that finished with every item scored
    lost        accepted jobs that never finished (or failed)
    duplicated  client calls that produced more than one job (a retried upload counted twice)
    time to result, p50 / p99: from the client's call to its scores, retries included
    scored after Redis returned: per outage, from the restart to a fresh probe job's result

and draws the time to result over the soak with the outages and kills (``--plot``).

Scoring is the cheap oracle-geometry path of the service tests (tiny clips with their exact
geometry), so the soak measures the service, not the reward.

    .venv/bin/python bench/chaos.py --minutes 10 --worker-kills 50 --outages 5,15,30,45,60 \\
        --api-kills 2 --json bench/chaos.json --plot bench/chaos.png
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

API_KEY = "chaos-key-0123456789abcdef"
OPTIONS = {"long_side": 64, "max_frames": 6}


@dataclass
class SoakConfig:
    minutes: float = 1.0
    clients: int = 3
    workers: int = 2
    worker_kills: int = 3
    api_kills: int = 0
    outages_s: list[float] = field(default_factory=lambda: [10.0])
    seed: int = 0
    drain_timeout_s: float = 300.0


@dataclass
class Call:
    client: int
    tag: str
    started: float  # seconds since the soak began
    ended: float | None = None
    job_id: str | None = None
    outcome: str = "pending"  # ok | failed | error: <reason>


@dataclass
class SoakReport:
    config: dict
    duration_s: float
    calls: int
    accepted: int
    completed: int
    lost: int
    duplicated: int
    client_errors: int
    time_to_result_p50_s: float | None
    time_to_result_p99_s: float | None
    time_to_result_max_s: float | None
    worker_kills: int
    api_kills: int
    outages: list[tuple[float, float]]  # (start, end), seconds since the soak began
    scored_after_redis_returned_s: list[float | None]  # per outage (Soak.probe)
    kills: list[tuple[float, str]]
    worker_restarts_seen: int

    def ok(self) -> bool:
        return self.accepted > 0 and self.lost == 0 and self.duplicated == 0 and self.completed == self.accepted


# -- processes ----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SoakRedis:
    """This soak's own redis-server: AOF with fsync always, so a SIGKILL loses nothing accepted."""

    def __init__(self, directory: Path) -> None:
        self.directory, self.port, self.process = directory, free_port(), None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
             "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                redis.Redis(port=self.port, socket_timeout=1).ping()
                return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class Serve:
    """`reward3d serve` (API + its supervised workers) against the soak's Redis."""

    def __init__(self, root: Path, redis_url: str, workers: int) -> None:
        self.root, self.port, self.process = root, free_port(), None
        self.log = open(root / "serve.log", "ab")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("REWARD3D_")}
        self.env.update(
            REWARD3D_REDIS_URL=redis_url, REWARD3D_API_KEYS=API_KEY, REWARD3D_GEOMETRY_BACKEND="oracle",
            REWARD3D_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
            REWARD3D_HEARTBEAT_INTERVAL_S="0.5", REWARD3D_HEARTBEAT_TTL_S="3",
            REWARD3D_WATCHDOG_INTERVAL_S="0.5", REWARD3D_RETRY_BACKOFF_S="0",
            REWARD3D_JOB_RETRIES="100",  # every kill can land on the same job: none may run out
            REWARD3D_CACHE_TTL_S="0", REWARD3D_MAX_INFLIGHT_PER_KEY="1000", PYTHONPATH=str(REPO),
        )  # fmt: skip
        self.args = [sys.executable, "-m", "service.cli", "serve", "--port", str(self.port),
                     "--workers", str(workers), "--data-dir", str(root / "data"), "--log-level", "warning"]  # fmt: skip

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(self.args, cwd=REPO, env=self.env, stdout=self.log,
                                        stderr=subprocess.STDOUT)  # fmt: skip

    def worker_pids(self) -> list[int]:
        """The pool's worker processes (children of the serve process)."""
        if self.process is None or self.process.poll() is not None:
            return []
        pids = []
        for task in Path(f"/proc/{self.process.pid}/task").glob("*"):
            try:
                pids += [int(p) for p in (task / "children").read_text().split()]
            except (FileNotFoundError, ProcessLookupError):
                pass
        return pids

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()


def wait_ready(url: str, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the service was not ready within {timeout:.0f} s")


# -- the soak ------------------------------------------------------------------------------------
def _clip(seed: int):
    from service.synthetic import make_clip

    clip = make_clip("orbit", 6, 36, 64, supersample=1)
    video = clip.frames.copy()
    video[0, 0, :8] = np.random.default_rng(seed).integers(0, 256, size=(8, 3), dtype=np.uint8)  # unique
    return video, clip.geometry_arrays()


class Soak:
    def __init__(self, config: SoakConfig, root: Path) -> None:
        self.config, self.root = config, root
        self.rng = random.Random(config.seed)
        self.redis = SoakRedis(root / "redis")
        self.serve = Serve(root, self.redis.url, config.workers)
        self.calls: list[Call] = []
        self.calls_lock = threading.Lock()
        self.stop_submitting = threading.Event()
        self.outages: list[tuple[float, float]] = []
        self.kills: list[tuple[float, str]] = []
        self.recoveries: list[float | None] = []  # per outage: Redis back -> a probe job scored
        self.t0 = 0.0

    def now(self) -> float:
        return time.monotonic() - self.t0

    def client_loop(self, index: int) -> None:
        from trainer_client import RewardClient

        with RewardClient(self.serve.url, api_key=API_KEY, deadline_s=self.config.drain_timeout_s,
                          poll_wait_s=10) as client:  # fmt: skip
            n = 0
            while not self.stop_submitting.is_set():
                n += 1
                tag = f"c{index}-{n}"
                video, geometry = _clip(index * 1_000_000 + n)
                call = Call(index, tag, self.now())
                with self.calls_lock:
                    self.calls.append(call)
                try:
                    scores = client.score([video], geometry=[geometry], options=OPTIONS, ids=[tag])
                    call.job_id = scores.job_id
                    call.outcome = "ok" if bool(scores.ok.all()) else "failed"
                except Exception as exc:  # DeadlineExceeded, RequestRejected: counted, not hidden
                    call.job_id = getattr(exc, "job_id", None)
                    call.outcome = f"error: {type(exc).__name__}: {str(exc)[:200]}"
                call.ended = self.now()

    def chaos_loop(self, duration_s: float) -> None:
        """Outages evenly spread over the soak, kills at random moments between them."""
        config = self.config
        events = [(duration_s * (i + 0.5) / max(len(config.outages_s), 1), "outage", s)
                  for i, s in enumerate(config.outages_s)]  # fmt: skip
        # Kills in the first 90 % of the soak, so that the last ones are healed within it.
        events += [(self.rng.uniform(0.03, 0.9) * duration_s, "worker", 0) for _ in range(config.worker_kills)]
        events += [(self.rng.uniform(0.1, 0.85) * duration_s, "api", 0) for _ in range(config.api_kills)]
        events.sort()
        busy_until = 0.0
        for when, kind, length in events:
            while self.now() < max(when, busy_until) and not self.stop_submitting.is_set():
                time.sleep(0.05)
            try:
                busy_until = self._chaos_event(kind, length, busy_until)
            except Exception as exc:  # the soak goes on; the report's counts show what happened
                print(f"chaos: {kind} failed: {type(exc).__name__}: {exc}", file=sys.stderr)

    def _chaos_event(self, kind: str, length: float, busy_until: float) -> float:
        """One outage, worker kill or API kill; returns until when the next must wait."""
        if kind == "outage":
            started = self.now()
            self.redis.kill()
            time.sleep(length)
            self.redis.start()
            self.outages.append((started, self.now()))
            self.recoveries.append(self.probe())
        elif kind == "worker":
            self._kill_a_worker()
        else:
            self.serve.kill()
            self.kills.append((self.now(), "api"))
            self.serve.start()
            busy_until = self.now() + 2.0
        return busy_until

    def probe(self) -> float | None:
        """Seconds from Redis being back to a fresh one-video job scored (API and worker both
        recovered; the clients' backlog of a few jobs goes first)."""
        import httpx

        from service.api.encode import encode_binary

        video, geometry = _clip(10**9 + len(self.recoveries))  # (clients use seeds below 10**9)
        headers, parts = encode_binary([video], geometry=[geometry], options=OPTIONS)
        body = b"".join(bytes(p) for p in parts)
        started = time.monotonic()
        while time.monotonic() - started < 120:
            try:
                response = httpx.post(f"{self.serve.url}/v1/score", params={"wait": 30}, content=body,
                                      headers={**headers, "Authorization": f"Bearer {API_KEY}",
                                               "Idempotency-Key": f"probe-{len(self.recoveries)}"},
                                      timeout=40)  # fmt: skip
                if response.status_code == 200:
                    return round(time.monotonic() - started, 2)
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        return None

    def _kill_a_worker(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # a worker may be between deaths: wait for one
            pids = self.serve.worker_pids()
            if pids:
                victim = self.rng.choice(pids)
                try:
                    os.kill(victim, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                self.kills.append((self.now(), "worker"))
                return
            time.sleep(0.1)

    def run(self) -> SoakReport:
        config = self.config
        duration_s = config.minutes * 60
        self.redis.start()
        self.serve.start()
        try:
            wait_ready(self.serve.url, 180)
            self.t0 = time.monotonic()
            clients = [threading.Thread(target=self.client_loop, args=(i,), daemon=True)
                       for i in range(config.clients)]  # fmt: skip
            chaos = threading.Thread(target=self.chaos_loop, args=(duration_s,), daemon=True)
            for thread in clients + [chaos]:
                thread.start()
            while self.now() < duration_s:
                time.sleep(0.2)
            chaos.join()  # (an outage still running ends first: the drain sees Redis up)
            self.stop_submitting.set()
            for thread in clients:
                thread.join(config.drain_timeout_s + 30)
            elapsed = self.now()
            return self.report(elapsed)
        finally:
            self.serve.stop()
            self.redis.kill()
            self.reap_orphans()

    def reap_orphans(self) -> None:
        """Workers of a killed `serve` leave on their own once they notice; any still here after
        a grace period (this soak's only: its data dir is in their environment) are killed."""
        marker = f"REWARD3D_DATA_DIR={self.root / 'data'}".encode()
        deadline = time.monotonic() + 20
        while True:
            mine = []
            for proc in Path("/proc").glob("[0-9]*"):
                try:
                    if marker in (proc / "environ").read_bytes().split(b"\0"):
                        mine.append(int(proc.name))
                except (FileNotFoundError, PermissionError, ProcessLookupError):
                    pass
            mine = [pid for pid in mine if pid != os.getpid()]
            if not mine or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        for pid in mine:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def report(self, elapsed: float) -> SoakReport:
        connection = redis.Redis(port=self.redis.port)
        records = {}
        for key in connection.scan_iter(match="reward3d:job:*", count=1000):
            name = key.decode()
            if name.endswith(":items"):
                continue
            fields = connection.hgetall(key)
            records[name.rsplit(":", 1)[-1]] = {
                "status": fields[b"status"].decode(), "tags": json.loads(fields[b"item_ids"]),
                "attempts": int(fields.get(b"attempts", 0)),
            }  # fmt: skip
        jobs_per_tag: dict[str, int] = {}
        for record in records.values():
            for tag in record["tags"]:
                if tag is not None:  # (the probes carry no tag)
                    jobs_per_tag[tag] = jobs_per_tag.get(tag, 0) + 1
        completed = sum(1 for r in records.values() if r["status"] == "finished")
        times = sorted(c.ended - c.started for c in self.calls if c.outcome == "ok" and c.ended is not None)
        restarts = _count_lines(self.root / "serve.log", "restarting in")
        return SoakReport(
            config=asdict(self.config), duration_s=round(elapsed, 1), calls=len(self.calls),
            accepted=len(records), completed=completed, lost=len(records) - completed,
            duplicated=sum(n - 1 for n in jobs_per_tag.values() if n > 1),
            client_errors=sum(1 for c in self.calls if c.outcome.startswith("error")),
            time_to_result_p50_s=_percentile(times, 50), time_to_result_p99_s=_percentile(times, 99),
            time_to_result_max_s=round(times[-1], 2) if times else None,
            worker_kills=sum(1 for _, kind in self.kills if kind == "worker"),
            api_kills=sum(1 for _, kind in self.kills if kind == "api"),
            outages=[(round(a, 1), round(b, 1)) for a, b in self.outages],
            scored_after_redis_returned_s=self.recoveries,
            kills=[(round(t, 1), kind) for t, kind in self.kills], worker_restarts_seen=restarts,
        )  # fmt: skip


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values else None


def _count_lines(path: Path, text: str) -> int:
    try:
        return sum(1 for line in path.read_text(errors="replace").splitlines() if text in line)
    except FileNotFoundError:
        return 0


def run_soak(config: SoakConfig, root: Path | None = None) -> tuple[SoakReport, list[Call]]:
    root = Path(root or tempfile.mkdtemp(prefix="reward3d-chaos-"))
    soak = Soak(config, root)
    return soak.run(), soak.calls


def plot(report: SoakReport, calls: list[Call], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 6), sharex=True)
    done = [c for c in calls if c.ended is not None]
    ok = [c for c in done if c.outcome == "ok"]
    top.scatter([c.started for c in ok], [c.ended - c.started for c in ok], s=4, label="time to result")
    bad = [c for c in done if c.outcome != "ok"]
    if bad:
        top.scatter([c.started for c in bad], [c.ended - c.started for c in bad], s=12, c="red", label="not ok")
    top.set_yscale("log")
    top.set_ylabel("time to result (s)")
    bins = np.arange(0, report.duration_s + 10, 10)
    bottom.hist([c.ended for c in ok], bins=bins, color="tab:green")
    bottom.set_ylabel("results / 10 s")
    bottom.set_xlabel("seconds since the soak began")
    for axis in (top, bottom):
        for start, end in report.outages:
            axis.axvspan(start, end, color="tab:orange", alpha=0.25, lw=0)
        for when, kind in report.kills:
            axis.axvline(when, color="black" if kind == "api" else "tab:red", lw=0.6, alpha=0.6)
    top.set_title(f"chaos soak: {report.accepted} accepted, {report.completed} completed, {report.lost} lost, "
                  f"{report.duplicated} duplicated; {report.worker_kills} worker kills (red), "
                  f"{report.api_kills} API kills (black), Redis down (orange)", fontsize=9)  # fmt: skip
    top.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--worker-kills", type=int, default=50)
    parser.add_argument("--api-kills", type=int, default=2)
    parser.add_argument("--outages", default="5,15,30,45,60", help="Redis outage lengths, seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--plot", type=Path, help="write the plot here (PNG)")
    parser.add_argument("--root", type=Path, help="working directory (default: a new temp dir)")
    args = parser.parse_args()
    config = SoakConfig(minutes=args.minutes, clients=args.clients, workers=args.workers,
                        worker_kills=args.worker_kills, api_kills=args.api_kills, seed=args.seed,
                        outages_s=[float(s) for s in args.outages.split(",") if s.strip()])  # fmt: skip
    report, calls = run_soak(config, args.root)
    text = json.dumps(asdict(report), indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    if args.plot:
        plot(report, calls, args.plot)
    return 0 if report.ok() else 1


if __name__ == "__main__":
    sys.exit(main())
