"""`reward3d serve` with no REDIS_URL: one command gives a working, authenticated service
(private Redis on a unix socket, a generated API key, a worker), and stops cleanly."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import time

import httpx
import pytest
import redis

from service.api import InsecureConfigError, create_app
from service.api.encode import encode_binary
from service.settings import Settings

from .conftest import PYTHON, REPO, body_bytes, clip_arrays

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_starts_everything_and_stops_cleanly(tmp_path):
    port, data = _free_port(), tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("REWARD3D_") and k != "REDIS_URL"}
    env.update(REWARD3D_GEOMETRY_BACKEND="oracle", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    log = open(tmp_path / "serve.log", "wb")
    serve = subprocess.Popen([PYTHON, "-m", "service.cli", "serve", "--data-dir", str(data),
                              "--port", str(port)], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert serve.poll() is None, (tmp_path / "serve.log").read_text()
            time.sleep(0.2)
        else:
            raise AssertionError("serve never became ready:\n" + (tmp_path / "serve.log").read_text())
        key_file = data / "api_key"
        key = key_file.read_text().strip()
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and key.startswith("r3d_")
        assert key in (tmp_path / "serve.log").read_text()  # printed for the user
        video, geometry = clip_arrays("orbit", 4, 20, 32)
        headers, parts = encode_binary([video], geometry=[geometry], options={"long_side": 32})
        assert httpx.post(f"{url}/v1/score", headers=headers, content=body_bytes(parts)).status_code == 401
        response = httpx.post(f"{url}/v1/score?wait=60", content=body_bytes(parts), timeout=90,
                              headers={**headers, "Authorization": f"Bearer {key}"})  # fmt: skip
        assert response.status_code == 200, response.text
        assert response.json()["items"][0]["status"] == "ok"
        socket_path = data / "redis" / "redis.sock"
        assert redis.Redis(unix_socket_path=str(socket_path)).ping()
    finally:
        serve.send_signal(signal.SIGTERM)
        code = serve.wait(60)
    assert code == 0, (tmp_path / "serve.log").read_text()
    with pytest.raises(redis.RedisError):
        redis.Redis(unix_socket_path=str(socket_path), socket_timeout=1).ping()
    assert (data / "redis" / "appendonlydir").is_dir()  # the private Redis kept an AOF


def test_the_api_refuses_to_start_without_keys_unless_told():
    with pytest.raises(InsecureConfigError):
        create_app(Settings(redis_url="redis://127.0.0.1:6379/13", api_keys=[]))
    with pytest.raises(InsecureConfigError):
        create_app(Settings(redis_url="redis://127.0.0.1:6379/13", api_keys=["short"]))
    app = create_app(Settings(redis_url="redis://127.0.0.1:6379/13", api_keys=[],
                              insecure_no_auth=True))  # fmt: skip
    assert app.state.services.insecure
