"""docker-compose.yml against the compose specification, and against the code: images, commands,
ports, settings, volumes and probes it names must exist and agree."""

from __future__ import annotations

import subprocess
from urllib.parse import urlparse

import pytest
import yaml

from .manifests import COMPOSE_FILE, DOCKER, ENV_EXAMPLE, REPO, WORKER_ENV_EXAMPLE, MissingVariable, \
    active_services, api_get_routes, client_env_names, compose_argv, compose_container_env, \
    interpolate, load_compose, parse_reward3d_argv, read_env_file, settings_env_names, \
    settings_from_env, tool, variables_used  # fmt: skip

# Services running `reward3d` (every image of ours but rq-dashboard).
OUR_REGISTRY = read_env_file(ENV_EXAMPLE)["IMAGE_REGISTRY"] + "/"
REWARD3D_SERVICES = tuple(name for name, service in load_compose()["services"].items()
                          if service["image"].startswith(OUR_REGISTRY) and not name.startswith("rq-"))  # fmt: skip
GPU_WORKERS = tuple(name for name in REWARD3D_SERVICES if name == "worker" or name.startswith("worker-gpu"))


def _check_jsonschema(path) -> subprocess.CompletedProcess:
    # The compose-spec schema ships inside check-jsonschema (--builtin-schema): no network.
    return subprocess.run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec",
                           str(path)], capture_output=True, text=True, timeout=60)  # fmt: skip


def test_compose_file_follows_the_compose_specification():
    result = _check_jsonschema(COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_rejects_a_broken_compose_file(tmp_path):
    broken = yaml.safe_load(COMPOSE_FILE.read_text())
    broken["services"]["api"]["healthcheck"]["intervall"] = "5s"  # a typo compose would reject
    del broken["services"]["redis"]["image"]
    broken["services"]["redis"]["ports"] = [{"target": "not-a-port"}]
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken))
    result = _check_jsonschema(path)
    assert result.returncode != 0 and "intervall" in result.stdout


def test_interpolation():
    env = {"A": "1", "EMPTY": ""}
    assert interpolate("x${A}y$A$$A", env) == "x1y1$A"
    assert interpolate("${EMPTY:-d} ${EMPTY-d} ${NONE-d} ${A:-x}", env) == "d  d 1"  # (no nesting)
    with pytest.raises(MissingVariable):
        interpolate("${NONE:?say so}", env)
    with pytest.raises(MissingVariable):
        interpolate("${EMPTY:?say so}", env)


def test_every_variable_is_in_env_example_and_no_setting_is():
    """init-env.sh writes .env from .env.example: every ${VAR} compose uses must be there.
    And no REWARD3D_* in it: `reward3d` reads a .env in its working directory as settings."""
    example = read_env_file(ENV_EXAMPLE)
    used = variables_used(yaml.safe_load(COMPOSE_FILE.read_text()))
    assert used - set(example) == {"PROMETHEUS_PORT", "RQ_DASHBOARD_PORT"}  # both have defaults
    assert not [k for k in example if k.startswith("REWARD3D_")]
    with pytest.raises(MissingVariable):  # secrets have no defaults: compose refuses to start
        load_compose({})


def test_init_env_writes_every_secret(tmp_path):
    (tmp_path / "docker").mkdir()
    (tmp_path / ".env.example").write_text(ENV_EXAMPLE.read_text())
    (tmp_path / "docker" / "init-env.sh").write_text((DOCKER / "init-env.sh").read_text())
    run = subprocess.run(["bash", str(tmp_path / "docker" / "init-env.sh"), "--cpu"],
                         capture_output=True, text=True, timeout=30)  # fmt: skip
    assert run.returncode == 0, run.stderr
    env = read_env_file(tmp_path / ".env")
    assert (tmp_path / ".env").stat().st_mode & 0o077 == 0
    assert not [k for k, v in env.items() if "change-me" in v], env
    assert env["COMPOSE_PROFILES"] == "cpu"
    assert env["METRICS_API_KEY"] in env["API_KEYS"].split(",")
    compose = load_compose(env)  # every required variable is set
    assert compose["services"]["api"]["environment"]["REWARD3D_API_KEYS"] == env["API_KEYS"]
    again = subprocess.run(["bash", str(tmp_path / "docker" / "init-env.sh")], capture_output=True)
    assert again.returncode != 0 and read_env_file(tmp_path / ".env") == env  # never overwrites


@pytest.mark.parametrize("name", REWARD3D_SERVICES)
def test_services_build_their_image_and_run_a_real_command(name):
    compose = load_compose()
    service = compose["services"][name]
    image_name = service["image"].rsplit("/", 1)[-1].split(":")[0]
    if "build" in service:
        assert service["build"]["context"] == "."
        assert REPO / service["build"]["dockerfile"] == DOCKER / f"{image_name}.Dockerfile"
    else:  # uses the image another service builds
        assert service["pull_policy"] == "never"
        assert [s for s in compose["services"].values() if s["image"] == service["image"] and "build" in s]
    assert (DOCKER / f"{image_name}.Dockerfile").is_file()
    parse_reward3d_argv(compose_argv(service))  # raises on an unknown command or option


@pytest.mark.parametrize("name", REWARD3D_SERVICES)
def test_service_settings_are_real_and_valid(name):
    service = load_compose()["services"][name]
    env = compose_container_env(service)
    ours = {k: v for k, v in env.items() if k.startswith("REWARD3D_")}
    unknown = set(ours) - settings_env_names() - client_env_names()
    assert not unknown, f"{name}: not settings: {sorted(unknown)}"
    settings = settings_from_env(ours)  # raises on an invalid value
    redis = urlparse(settings.redis_url)
    assert redis.hostname == "redis" and redis.port == 6379 and redis.password
    assert settings.blob_dir is not None
    mounts = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}
    assert mounts[str(settings.blob_dir)] == "blobs", f"{name}: blob dir is not the shared volume"


def test_the_api_port_healthcheck_and_auth():
    compose = load_compose()
    api = compose["services"]["api"]
    settings = settings_from_env({k: v for k, v in compose_container_env(api).items()
                                  if k.startswith("REWARD3D_")})  # fmt: skip
    assert settings.embedded_workers == 0 or "--workers" in api["command"]
    assert parse_reward3d_argv(compose_argv(api)).params["workers"] == 0  # no worker inside the API
    published = api["ports"][0].rsplit(":", 1)[-1]
    assert int(published) == settings.port == 8000
    assert settings.host == "0.0.0.0" and settings.api_keys and not settings.insecure_no_auth
    check = " ".join(api["healthcheck"]["test"])
    assert f"127.0.0.1:{settings.port}/healthz" in check and "/healthz" in api_get_routes()


def _gpu_ids(compose: dict, profiles: set[str]) -> list[str]:
    """The GPU each started worker reserves, in service order."""
    ids = []
    for name, service in active_services(compose, profiles).items():
        for device in service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", []):
            assert device["driver"] == "nvidia" and "gpu" in device["capabilities"], name
            assert name in GPU_WORKERS
            ids += device["device_ids"]
    return ids


@pytest.mark.parametrize("gpus, profiles", [(1, "gpu"), (2, "gpu,gpus-2"), (4, "gpu,gpus-4"),
                                            (8, "gpu,gpus-8")])  # fmt: skip
def test_one_gpu_worker_per_gpu(gpus, profiles):
    compose = load_compose()
    assert _gpu_ids(compose, set(profiles.split(","))) == [str(i) for i in range(gpus)]


@pytest.mark.parametrize("gpus, profiles", [(0, "gpu"), (1, "gpu"), (3, "gpu,gpus-2"), (4, "gpu,gpus-4"),
                                            (7, "gpu,gpus-4"), (8, "gpu,gpus-8"), (16, "gpu,gpus-8")])  # fmt: skip
def test_init_env_counts_the_gpus(tmp_path, gpus, profiles):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\n[ \"$1\" = -L ] || exit 2\n" + "".join(
        f"echo 'GPU {i}: NVIDIA H100 80GB HBM3 (UUID: GPU-{i})'\n" for i in range(gpus)))  # fmt: skip
    (fake / "nvidia-smi").chmod(0o755)
    (tmp_path / "docker").mkdir()
    (tmp_path / ".env.example").write_text(ENV_EXAMPLE.read_text())
    (tmp_path / "docker" / "init-env.sh").write_text((DOCKER / "init-env.sh").read_text())
    import os

    env = {**os.environ, "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}"}
    run = subprocess.run(["bash", str(tmp_path / "docker" / "init-env.sh")], env=env,
                         capture_output=True, text=True, timeout=30)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert read_env_file(tmp_path / ".env")["COMPOSE_PROFILES"] == profiles


def test_workers_gpu_and_cpu_profiles():
    compose = load_compose()
    gpu, cpu = compose["services"]["worker"], compose["services"]["worker-cpu"]
    assert gpu["profiles"] == ["gpu"] and cpu["profiles"] == ["cpu"]
    for name in GPU_WORKERS:  # weights mounted read-only, never in the image
        assert "/models:ro" in " ".join(compose["services"][name]["volumes"])
    cpu_settings = settings_from_env({k: v for k, v in compose_container_env(cpu).items()
                                      if k.startswith("REWARD3D_")})  # fmt: skip
    assert cpu_settings.device == "cpu" and cpu_settings.geometry_backend.value == "classical"
    assert "deploy" not in cpu  # no GPU needed: any laptop
    for worker in [compose["services"][n] for n in GPU_WORKERS] + [cpu]:
        ready = compose_container_env(worker)["REWARD3D_WORKER_READY_FILE"]
        assert ready and "$$REWARD3D_WORKER_READY_FILE" not in " ".join(worker["healthcheck"]["test"])
        assert "$REWARD3D_WORKER_READY_FILE" in " ".join(worker["healthcheck"]["test"])
        assert worker["stop_grace_period"]  # SIGTERM finishes the job in hand
    # Without a profile only Redis and the API start; each profile adds its worker.
    assert set(active_services(compose, set())) == {"redis", "api"}
    assert set(active_services(compose, {"cpu"})) == {"redis", "api", "worker-cpu"}
    assert set(active_services(compose, {"gpu"})) == {"redis", "api", "worker"}
    assert not set(active_services(compose, {"gpus-8"})) & {"worker", "worker-cpu"}  # gpu adds GPU 0


def test_redis_is_durable_private_and_password_protected():
    redis = load_compose()["services"]["redis"]
    command = " ".join(redis["command"])
    for flag in ("--appendonly yes", "--maxmemory-policy noeviction", "--requirepass"):
        assert flag in command
    assert "ports" not in redis  # not published on the host
    assert redis["environment"]["REDISCLI_AUTH"] == read_env_file(ENV_EXAMPLE)["REDIS_PASSWORD"]
    assert any(v.endswith(":/data") for v in redis["volumes"])  # the AOF survives the container


def test_dashboard_and_prometheus_profiles():
    compose = load_compose()
    dashboard, prometheus = compose["services"]["rq-dashboard"], compose["services"]["prometheus"]
    assert dashboard["profiles"] == ["dashboard"] and prometheus["profiles"] == ["monitoring"]
    assert dashboard["environment"]["RQ_DASHBOARD_USERNAME"] and dashboard["environment"]["RQ_DASHBOARD_PASSWORD"]
    with pytest.raises(MissingVariable):  # no password, no dashboard
        load_compose({k: v for k, v in read_env_file(ENV_EXAMPLE).items() if k != "RQ_DASHBOARD_PASSWORD"})
    assert all(p.startswith("127.0.0.1:") for p in dashboard["ports"] + prometheus["ports"])
    config = yaml.safe_load((REPO / compose["configs"]["prometheus-config"]["file"]).read_text())
    scrape = config["scrape_configs"][0]
    assert scrape["static_configs"][0]["targets"] == ["api:8000"]
    assert scrape["metrics_path"] in api_get_routes()
    secret = prometheus["secrets"][0]
    assert scrape["authorization"]["credentials_file"] == f"/run/secrets/{secret['target']}"
    assert compose["secrets"][secret["source"]]["environment"] == "METRICS_API_KEY"


def test_worker_env_example_holds_valid_settings():
    values = read_env_file(WORKER_ENV_EXAMPLE)
    assert set(values) <= settings_env_names()
    settings_from_env(values)


def _seconds(duration: str) -> float:
    """A compose duration ("65m", "1h30m", "90s") in seconds."""
    import re

    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def test_stop_grace_period_covers_the_longest_job():
    """`docker compose stop` sends SIGTERM; the worker finishes the job in hand. The grace
    period covers the longest job the API accepts (items x per-item limit) and the stuck-item
    grace of the last item (service/jobs/worker.py: max(30 s, limit / 2))."""
    compose = load_compose()
    api = settings_from_env({k: v for k, v in compose_container_env(compose["services"]["api"]).items()
                             if k.startswith("REWARD3D_")})  # fmt: skip
    assert _seconds("1h30m") == 5400 and _seconds("65m") == 3900
    for name in GPU_WORKERS + ("worker-cpu",):
        service = compose["services"][name]
        worker = settings_from_env({k: v for k, v in compose_container_env(service).items()
                                    if k.startswith("REWARD3D_")})  # fmt: skip
        limit = worker.item_time_limit_s
        longest_job_s = api.max_items_per_request * limit + max(30.0, 0.5 * limit)
        assert _seconds(service["stop_grace_period"]) >= longest_job_s, (name, longest_job_s)


def test_images_without_a_build_are_pinned():
    for name, service in load_compose()["services"].items():
        if "build" not in service and not service["image"].startswith(OUR_REGISTRY):
            image = service["image"]
            tag = image.rpartition(":")[2]
            assert ":" in image and tag != "latest" and any(c.isdigit() for c in tag), f"{name}: {image}"

