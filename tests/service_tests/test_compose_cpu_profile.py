"""The docker compose `cpu` profile, run for real without Docker: its API and worker containers'
commands (ENTRYPOINT + command) and settings (image ENV + environment), exactly as
docker-compose.yml and docker/*.Dockerfile state them, started as processes here.

Only what a container gets from its surroundings is replaced: `reward3d` is this checkout
(`python -m service.cli`), Redis is the test DB, the blob volume, data dir and ready file are
temporary folders, the API port is a free one, the thread count is 1 (2 shared cores), and the
API listens on 127.0.0.1. Each process can import only what its image installs (the `api`
extra for the API: no torch, no pipeline; the `service` extra for the CPU worker): every other
installed package is made unimportable. Then a video is scored through them with the
weights-free classical backend, the compose healthchecks are run, and both stop on SIGTERM as
`docker compose stop` would ask them to.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import httpx
import pytest

from service.api.encode import encode_binary
from tests.deploy_tests.manifests import active_services, compose_argv, compose_container_env, \
    import_blocker, load_compose, modules_outside, parse_dockerfile  # fmt: skip

from .conftest import PYTHON, REPO, body_bytes

pytestmark = [pytest.mark.slow, pytest.mark.redis]

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _process_argv(argv: list[str]) -> list[str]:
    assert argv[0] == "reward3d", argv  # the console script; here: this checkout's module
    return [PYTHON, "-m", "service.cli", *argv[1:]]


def _process_env(container_env: dict[str, str], surroundings: dict[str, str], pythonpath: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REWARD3D_") and k != "REDIS_URL"}
    env.update({k: v for k, v in container_env.items() if k.startswith("REWARD3D_")})
    replaced = set(surroundings) & set(env)
    env.update(surroundings)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=pythonpath)
    return env, replaced


def test_the_cpu_profile_scores_a_video(redis_url, fresh_redis, tmp_path):
    compose = load_compose()
    services = active_services(compose, {"cpu"})
    assert set(services) == {"redis", "api", "worker-cpu"}
    api, worker = services["api"], services["worker-cpu"]
    port = _free_port()
    blobs, ready = tmp_path / "blobs", tmp_path / "run" / "worker-ready"
    # Each process sees only the packages its image installs (the Dockerfile's EXTRAS): the api
    # image has the `api` extra (no torch, no pipeline), the worker-cpu image `service`.
    blockers = {}
    for name in ("api", "worker-cpu"):
        extras = tuple(parse_dockerfile(REPO / services[name]["build"]["dockerfile"]).args["EXTRAS"].split(","))
        blockers[name] = tmp_path / f"{name}-image"
        blockers[name].mkdir()
        (blockers[name] / "sitecustomize.py").write_text(import_blocker(modules_outside(extras), name))
    surroundings = {"REWARD3D_REDIS_URL": redis_url, "REWARD3D_BLOB_DIR": str(blobs),
                    "REWARD3D_DATA_DIR": str(tmp_path / "data"), "REWARD3D_NUM_THREADS": "1"}  # fmt: skip
    api_env, api_replaced = _process_env(compose_container_env(api), {
        **surroundings, "REWARD3D_PORT": str(port), "REWARD3D_HOST": "127.0.0.1"},
        pythonpath=f"{blockers['api']}{os.pathsep}{REPO}")  # fmt: skip
    worker_env, worker_replaced = _process_env(compose_container_env(worker), {
        **surroundings, "REWARD3D_WORKER_READY_FILE": str(ready)},
        pythonpath=f"{blockers['worker-cpu']}{os.pathsep}{REPO}")  # fmt: skip
    # Every replaced setting was set by the compose file / image (nothing silently added).
    assert api_replaced == {"REWARD3D_REDIS_URL", "REWARD3D_BLOB_DIR", "REWARD3D_DATA_DIR",
                            "REWARD3D_PORT", "REWARD3D_HOST"}  # fmt: skip
    assert worker_replaced == {"REWARD3D_REDIS_URL", "REWARD3D_BLOB_DIR", "REWARD3D_DATA_DIR",
                               "REWARD3D_NUM_THREADS", "REWARD3D_WORKER_READY_FILE"}  # fmt: skip
    assert worker_env["REWARD3D_GEOMETRY_BACKEND"] == "classical"
    api_key = api_env["REWARD3D_API_KEYS"].split(",")[0]
    for env, module in ((api_env, "torch"), (api_env, "cv2"), (worker_env, "huggingface_hub")):
        blocked = subprocess.run([PYTHON, "-c", f"import {module}"], env=env, cwd=tmp_path, capture_output=True)
        assert blocked.returncode != 0 and b"is not installed in the" in blocked.stderr, module

    logs = {name: open(tmp_path / f"{name}.log", "wb") for name in ("api", "worker")}
    # cwd: an empty folder, as in the container (no .env of a developer's checkout is read).
    processes = {
        "worker": subprocess.Popen(_process_argv(compose_argv(worker)), env=worker_env, cwd=tmp_path,
                                   stdout=logs["worker"], stderr=subprocess.STDOUT),
        "api": subprocess.Popen(_process_argv(compose_argv(api)), env=api_env, cwd=tmp_path,
                                stdout=logs["api"], stderr=subprocess.STDOUT),
    }  # fmt: skip

    def log_tail() -> str:
        return "\n".join(f"--- {n}\n" + (tmp_path / f"{n}.log").read_text()[-3000:] for n in logs)

    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:  # ready = the API answers /readyz 200 (Redis up, a warm worker alive)
            assert all(p.poll() is None for p in processes.values()), log_tail()
            assert time.monotonic() < deadline, "the stack never became ready\n" + log_tail()
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)

        # The compose healthchecks themselves (the API's: its port is the only change).
        api_check = api["healthcheck"]["test"]
        assert api_check[0] == "CMD" and api_check[1] == "python"
        code = api_check[3].replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        assert subprocess.run([PYTHON, api_check[2], code], env=api_env, timeout=30).returncode == 0
        worker_check = worker["healthcheck"]["test"]
        assert worker_check[0] == "CMD-SHELL"
        assert subprocess.run(["sh", "-c", worker_check[1].replace("$$", "$")], env=worker_env,
                              timeout=30).returncode == 0  # fmt: skip

        # A 16-frame orbit through the API, scored by the CPU worker's classical geometry.
        from service.synthetic import make_clip

        video = make_clip("orbit", 16, 96, 128, supersample=1).frames
        headers, parts = encode_binary([video], options={"long_side": 128})
        response = httpx.post(f"{url}/v1/score?wait=240", content=body_bytes(parts), timeout=260,
                              headers={**headers, "Authorization": f"Bearer {api_key}"})  # fmt: skip
        assert response.status_code == 200, response.text + log_tail()
        item = response.json()["items"][0]
        assert item["status"] == "ok", item
        result = item["result"]
        assert result["geometry"]["backend"] == "classical", result["geometry"]
        assert result["terms"]["reconstruction"]["status"] == "ok", result["terms"]
        assert result["total"] is not None
        info = httpx.get(f"{url}/v1/info", headers={"Authorization": f"Bearer {api_key}"}).json()
        assert info["workers"][0]["geometry_backend"] == "classical"
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)  # docker compose stop
        codes = {name: p.wait(60) for name, p in processes.items()}
    assert codes == {"api": 0, "worker": 0}, log_tail()
    assert not ready.exists()
