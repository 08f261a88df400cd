"""deploy/ (kustomize): every overlay renders, validates against the Kubernetes API schemas
(kubernetes-validate, strict), and agrees with the code: images, commands, ports, probes,
settings, secrets, the worker's grace period and the autoscaling metric."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest

from .manifests import DOCKER, OVERLAYS, TEST_SECRETS, api_get_routes, api_metric_names, by_kind, \
    client_env_names, container_env, dockerfile_for_image, parse_dockerfile, parse_reward3d_argv, \
    render_overlay, settings_env_names, settings_from_env  # fmt: skip

KUBERNETES_VERSION = "1.30.0"  # the oldest release we support; the schemas are kept per release
SCALEDOBJECT_SCHEMA = json.loads((Path(__file__).parent / "schemas" / "keda-scaledobject.schema.json").read_text())


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, list[dict]]:
    workdir = tmp_path_factory.mktemp("kustomize")
    return {overlay: render_overlay(overlay, workdir) for overlay in OVERLAYS}


def _workloads(objects):
    return {**by_kind(objects, "Deployment"), **by_kind(objects, "StatefulSet")}


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("version", [KUBERNETES_VERSION, kubernetes_validate.latest_version()])
def test_every_object_validates_against_the_kubernetes_schemas(rendered, overlay, version):
    checked = 0
    for obj in rendered[overlay]:
        if obj["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: kubernetes-validate has no schema; test_keda_scaledobject below
        kubernetes_validate.validate(obj, version, strict=True)  # raises with the reason
        checked += 1
    assert checked >= 10


def test_kubernetes_validate_rejects_a_broken_object(rendered):
    deployment = copy.deepcopy(by_kind(rendered["gpu"], "Deployment")["reward3d-worker"])
    deployment["spec"]["template"]["spec"]["terminationGracePeriod"] = 60  # typo of ...Seconds
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_keda_scaledobject(rendered):
    objects = rendered["gpu"]
    (scaled,) = by_kind(objects, "ScaledObject").values()
    jsonschema.validate(scaled, SCALEDOBJECT_SCHEMA)
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] in by_kind(objects, "Deployment")
    assert by_kind(objects, "Deployment")[spec["scaleTargetRef"]["name"]]["metadata"]["labels"][
        "app.kubernetes.io/component"] == "worker"  # fmt: skip
    assert spec["minReplicaCount"] >= 1  # at least one warm worker, always
    # What KEDA hands to the HPA must be a valid autoscaling/v2 HPA.
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
           "metadata": {"name": "keda-hpa-" + scaled["metadata"]["name"]},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                       "name": spec["scaleTargetRef"]["name"]},
                    "minReplicas": spec["minReplicaCount"], "maxReplicas": spec["maxReplicaCount"],
                    "behavior": spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]}}  # fmt: skip
    kubernetes_validate.validate(hpa, KUBERNETES_VERSION, strict=True)
    # It scales on queued + started jobs: a gauge the API really exports.
    (trigger,) = spec["triggers"]
    metrics = set(re.findall(r"reward3d_[a-z_]+", trigger["metadata"]["query"]))
    assert metrics == {"reward3d_jobs_unfinished"} and metrics <= api_metric_names()
    assert "namespace=\"reward3d\"" in trigger["metadata"]["query"]
    assert scaled["metadata"]["namespace"] == "reward3d"


def test_the_scaledobject_schema_is_strict(rendered):
    (scaled,) = by_kind(rendered["gpu"], "ScaledObject").values()
    for breakage in (lambda s: s["spec"].update(minReplicas=1),  # not a ScaledObject field
                     lambda s: s["spec"]["triggers"][0]["metadata"].update(threshold=2),  # not a string
                     lambda s: s["spec"]["triggers"][0]["metadata"].pop("query")):  # fmt: skip
        broken = copy.deepcopy(scaled)
        breakage(broken)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, SCALEDOBJECT_SCHEMA)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_commands_and_settings_are_real(rendered, overlay):
    objects = rendered[overlay]
    for name, workload in by_kind(objects, "Deployment").items():
        for container in workload["spec"]["template"]["spec"]["containers"]:
            dockerfile = dockerfile_for_image(container["image"])
            assert dockerfile.is_file(), f"{name}: no Dockerfile for image {container['image']}"
            image = parse_dockerfile(dockerfile)
            argv = (container.get("command") or image.exec_form("ENTRYPOINT")) + \
                (container.get("args") or ([] if "command" in container else image.exec_form("CMD")))  # fmt: skip
            parse_reward3d_argv(argv)  # raises on an unknown command or option
            env = {**image.env(), **container_env(container, objects, TEST_SECRETS)}
            ours = {k: v for k, v in env.items() if k.startswith("REWARD3D_")}
            unknown = set(ours) - settings_env_names() - client_env_names()
            assert not unknown, f"{overlay}/{name}: not settings: {sorted(unknown)}"
            settings = settings_from_env(ours)  # raises on an invalid value
            assert settings.redis_url and settings.blob_dir is not None
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
            blob_volume = volumes[mounts[str(settings.blob_dir)]]
            if getattr(settings, "blob_store", "directory") == "s3":  # the directory is a cache
                assert "emptyDir" in blob_volume and "persistentVolumeClaim" not in blob_volume
                assert settings.s3_bucket
                continue
            pvc = by_kind(objects, "PersistentVolumeClaim")[blob_volume["persistentVolumeClaim"]["claimName"]]
            assert "ReadWriteMany" in pvc["spec"]["accessModes"], "API and workers share the blobs"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_and_configmaps_referenced_exist(rendered, overlay):
    objects = rendered[overlay]
    secrets = {name: set(obj.get("data", {})) for name, obj in by_kind(objects, "Secret").items()}
    configmaps = set(by_kind(objects, "ConfigMap"))
    for name, workload in _workloads(objects).items():
        for container in workload["spec"]["template"]["spec"]["containers"]:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in configmaps
                else:
                    assert source["secretRef"]["name"] in secrets or source["secretRef"].get("optional")
            for entry in container.get("env", []):
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secrets.get(ref["name"], set()), f"{name}: {ref}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_api_ports_and_probes(rendered, overlay):
    objects = rendered[overlay]
    api = by_kind(objects, "Deployment")["reward3d-api"]
    (container,) = api["spec"]["template"]["spec"]["containers"]
    settings = settings_from_env({k: v for k, v in container_env(container, objects, TEST_SECRETS).items()
                                  if k.startswith("REWARD3D_")})  # fmt: skip
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == settings.port == 8000 and settings.host == "0.0.0.0"
    assert str(settings.port) in parse_dockerfile(DOCKER / "api.Dockerfile").all("EXPOSE")
    assert parse_reward3d_argv(container["command"]).params["workers"] == 0
    routes = api_get_routes()
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] in routes and ports[get["port"]] == settings.port
    service = by_kind(objects, "Service")["reward3d-api"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert service["spec"]["selector"].items() <= api["spec"]["template"]["metadata"]["labels"].items()
    hpa = by_kind(objects, "HorizontalPodAutoscaler")["reward3d-api"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "reward3d-api" and hpa["spec"]["minReplicas"] >= 2


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_worker_readiness_and_grace_period(rendered, overlay):
    objects = rendered[overlay]
    worker = by_kind(objects, "Deployment")["reward3d-worker"]
    pod = worker["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    settings = settings_from_env({k: v for k, v in container_env(container, objects, TEST_SECRETS).items()
                                  if k.startswith("REWARD3D_")})  # fmt: skip
    # Ready only when warm: the probe tests the file the worker writes once warm.
    assert container["readinessProbe"]["exec"]["command"] == ["test", "-f", str(settings.worker_ready_file)]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert str(settings.worker_ready_file.parent) in mounts  # writable with a read-only root
    # SIGTERM finishes the job in hand: the grace period covers the longest job the settings
    # allow (every item at its time limit) plus the stuck-item grace of the last item.
    limit = settings.item_time_limit_s
    longest_job_s = settings.max_items_per_request * limit + max(30.0, 0.5 * limit)
    assert pod["terminationGracePeriodSeconds"] >= longest_job_s + settings.heartbeat_interval_s
    assert worker["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    if overlay.startswith("gpu"):
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert settings.device == "cuda"
        models = [m for m in container["volumeMounts"] if m["mountPath"] == "/models"]
        assert models and models[0]["readOnly"]
    else:
        assert "nvidia.com/gpu" not in json.dumps(container["resources"])
        assert settings.device == "cpu" and settings.geometry_backend.value == "classical"


def test_redis_is_durable_and_only_api_and_workers_reach_it(rendered):
    objects = rendered["gpu"]
    redis = by_kind(objects, "StatefulSet")["reward3d-redis"]
    (container,) = redis["spec"]["template"]["spec"]["containers"]
    args = " ".join(container["args"])
    for flag in ("--appendonly yes", "--maxmemory-policy noeviction", "--requirepass $(REDISCLI_AUTH)"):
        assert flag in args
    assert redis["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] in \
        {m["name"] for m in container["volumeMounts"] if m["mountPath"] == "/data"}  # fmt: skip
    # The URL the clients use names this Redis's Service and password.
    for name in ("reward3d-api", "reward3d-worker"):
        (client,) = by_kind(objects, "Deployment")[name]["spec"]["template"]["spec"]["containers"]
        url = container_env(client, objects, TEST_SECRETS)["REWARD3D_REDIS_URL"]
        assert url == f"redis://:{TEST_SECRETS['REDIS_PASSWORD']}@reward3d-redis:6379/0"
    service = by_kind(objects, "Service")["reward3d-redis"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert service["spec"]["ports"][0]["port"] == 6379 == ports[service["spec"]["ports"][0]["targetPort"]]
    assert service["spec"]["selector"].items() <= redis["spec"]["template"]["metadata"]["labels"].items()
    image, _, tag = container["image"].rpartition(":")
    assert image == "redis" and tag != "latest" and any(c.isdigit() for c in tag)
    (policy,) = by_kind(objects, "NetworkPolicy").values()
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= \
        redis["spec"]["template"]["metadata"]["labels"].items()  # fmt: skip
    (rule,) = policy["spec"]["ingress"]
    (allowed,) = rule["from"]
    selector = allowed["podSelector"]["matchLabels"]
    admitted = {name for name, w in _workloads(objects).items()
                if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()}  # fmt: skip
    assert admitted == {"reward3d-api", "reward3d-worker"}
    assert rule["ports"] == [{"protocol": "TCP", "port": 6379}]


def test_external_redis_replaces_the_bundled_one(rendered):
    objects = rendered["gpu-external-redis"]
    assert "reward3d-redis" not in _workloads(objects) and not by_kind(objects, "NetworkPolicy")
    for name in ("reward3d-api", "reward3d-worker"):
        (client,) = by_kind(objects, "Deployment")[name]["spec"]["template"]["spec"]["containers"]
        env = container_env(client, objects, TEST_SECRETS)
        assert env["REWARD3D_REDIS_URL"] == TEST_SECRETS["REWARD3D_REDIS_URL"]
        assert "REDIS_PASSWORD" not in env


def test_init_secrets_writes_every_key_the_manifests_read(rendered, tmp_path):
    import shutil
    import subprocess

    from .manifests import DEPLOY

    shutil.copytree(DEPLOY, tmp_path / "deploy", ignore=shutil.ignore_patterns("secrets.env"))
    run = subprocess.run(["bash", str(tmp_path / "deploy" / "init-secrets.sh")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    path = tmp_path / "deploy" / "components" / "secrets" / "secrets.env"
    written = dict(line.split("=", 1) for line in path.read_text().splitlines())
    assert path.stat().st_mode & 0o077 == 0
    assert written["METRICS_API_KEY"] in written["REWARD3D_API_KEYS"].split(",")
    assert all(len(key) >= 16 for key in written["REWARD3D_API_KEYS"].split(","))
    read = {entry["valueFrom"]["secretKeyRef"]["key"]
            for overlay in ("gpu", "cpu") for workload in _workloads(rendered[overlay]).values()
            for container in workload["spec"]["template"]["spec"]["containers"]
            for entry in container.get("env", []) if "valueFrom" in entry}  # fmt: skip
    assert read <= set(written)
    again = subprocess.run(["bash", str(tmp_path / "deploy" / "init-secrets.sh")], capture_output=True)
    assert again.returncode != 0  # never overwrites


def test_the_s3_overlay(rendered):
    objects = rendered["gpu-s3"]
    assert "reward3d-blobs" not in by_kind(objects, "PersistentVolumeClaim")  # no shared volume
    (config,) = by_kind(objects, "ConfigMap").values()
    assert config["data"]["REWARD3D_BLOB_STORE"] == "s3" and config["data"]["REWARD3D_S3_BUCKET"]
    for name in ("reward3d-api", "reward3d-worker"):
        (container,) = by_kind(objects, "Deployment")[name]["spec"]["template"]["spec"]["containers"]
        env = container_env(container, objects, TEST_SECRETS)
        assert env["AWS_ACCESS_KEY_ID"] and env["AWS_SECRET_ACCESS_KEY"]  # boto3's chain
    settings = settings_from_env({k: v for k, v in env.items() if k.startswith("REWARD3D_")})
    assert settings.blob_store == "s3" and settings.s3_bucket == config["data"]["REWARD3D_S3_BUCKET"]

