"""docker/*.Dockerfile: hadolint, and every path, command, setting and version they name is
real (no Docker engine here: docker build itself cannot run)."""

from __future__ import annotations

import fnmatch
import re
import subprocess
from pathlib import Path

import pytest

from .manifests import DOCKER, REPO, client_env_names, parse_dockerfile, parse_reward3d_argv, \
    settings_env_names, settings_from_env, tool  # fmt: skip

DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
SERVICE_IMAGES = ("api", "worker", "worker-cpu")  # images whose entry point is `reward3d`


def test_the_images_are_there():
    assert {p.name for p in DOCKERFILES} >= {"api.Dockerfile", "worker.Dockerfile",
                                              "trainer.Dockerfile", "worker-cpu.Dockerfile"}  # fmt: skip


def test_hadolint_passes():
    result = subprocess.run([tool("hadolint"), "--config", str(REPO / ".hadolint.yaml"),
                             "--no-color", *map(str, DOCKERFILES)],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path):
    """The linter is really consulted: an unpinned `pip install` and `latest` fail."""
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install fastapi\n")
    result = subprocess.run([tool("hadolint"), "--config", str(REPO / ".hadolint.yaml"), str(bad)],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode != 0 and "DL3007" in result.stdout and "DL3013" in result.stdout


def _dockerignore_allows(path: str) -> bool:
    """Whether .dockerignore (an exclude-all list with ! exceptions) lets ``path`` in."""
    allowed = False
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate, pattern = line.startswith("!"), line.lstrip("!").rstrip("/")
        if pattern == "*" or fnmatch.fnmatch(path, pattern) or path == pattern \
                or path.startswith(pattern + "/"):  # fmt: skip
            allowed = negate
    return allowed


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.stem)
def test_copied_sources_exist_and_reach_the_build_context(dockerfile):
    for arguments in parse_dockerfile(dockerfile).all("COPY"):
        if "--from=" in arguments:
            continue
        *sources, _destination = arguments.split()
        for source in sources:
            assert (REPO / source).exists(), f"{dockerfile.name}: COPY {source}: no such path"
            assert _dockerignore_allows(source.rstrip("/")), f".dockerignore drops {source}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.stem)
def test_base_images_and_packages_are_pinned(dockerfile):
    parsed = parse_dockerfile(dockerfile)
    for image in parsed.all("FROM"):
        image = re.sub(r"\$\{(\w+)\}", lambda m: parsed.args[m.group(1)], image.split()[0])
        name, _, tag = image.rpartition(":")
        assert name and re.search(r"\d+\.\d+", tag), f"{dockerfile.name}: base image {image} is not pinned"
    for arguments in parsed.all("RUN"):
        for spec in re.findall(r"pip install [^&;]*", arguments):
            for requirement in _pip_requirements(spec.split()[2:]):
                assert requirement.startswith(".[") or "==" in requirement, \
                    f"{dockerfile.name}: unpinned pip install {requirement}"  # fmt: skip


def _pip_requirements(tokens: list[str]) -> list[str]:
    """The requirement arguments of a `pip install` (options and their values left out)."""
    takes_value = {"--index-url", "--extra-index-url", "--constraint", "-c", "--no-binary",
                   "--only-binary", "--find-links", "-f", "-r", "--requirement"}  # fmt: skip
    requirements, skip = [], False
    for token in tokens:
        if skip:
            skip = False
        elif token in takes_value:
            skip = True
        elif not token.startswith("-"):
            requirements.append(token.strip('"'))
    return requirements


def test_constraints_pin_everything_the_images_install():
    """Every requirement of the extras the images install has an exact version: in
    docker/constraints.txt, or (torch, gsplat, torch-tensorrt, depth-anything-3) a build ARG."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    pins = {line.split("==")[0].lower().replace("_", "-")
            for line in (DOCKER / "constraints.txt").read_text().splitlines() if "==" in line}  # fmt: skip
    build_args = {"torch": "TORCH_VERSION", "gsplat": "GSPLAT_VERSION",
                  "torch-tensorrt": "TORCH_TENSORRT_VERSION", "depth-anything-3": "DA3_VERSION"}  # fmt: skip
    wanted = list(project["dependencies"])
    for extra in set(extras) - {"all", "dev"}:  # every extra an image may be built with
        wanted += [r for r in extras[extra] if not r.startswith("reward3d[")]
    worker_args = parse_dockerfile(DOCKER / "worker.Dockerfile").args
    for requirement in wanted:
        name = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower().replace("_", "-")
        if name in build_args:
            assert worker_args.get(build_args[name]), f"{name}: no {build_args[name]} build arg"
        else:
            assert name in pins, f"{name} is not pinned in docker/constraints.txt"


def test_the_api_image_installs_no_torch():
    import tomllib

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower() for r in extras["api"]}
    assert not names & {"torch", "reward3d", "opencv-python-headless", "pycolmap", "scipy"}
    api = parse_dockerfile(DOCKER / "api.Dockerfile")
    assert api.args["EXTRAS"] == "api"
    assert any('".[${EXTRAS}]"' in run and '! python -c "import torch"' in run for run in api.all("RUN"))


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.stem)
def test_image_extras_exist(dockerfile):
    import tomllib

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    parsed = parse_dockerfile(dockerfile)
    for run in parsed.all("RUN"):
        for group in re.findall(r'"\.\[([^\]]+)\]"', run):
            names = parsed.args["EXTRAS"] if group == "${EXTRAS}" else group
            assert set(names.split(",")) <= set(extras), f"{dockerfile.name}: {names}"


@pytest.mark.parametrize("image", SERVICE_IMAGES)
def test_service_images_run_a_real_reward3d_command_as_non_root(image):
    parsed = parse_dockerfile(DOCKER / f"{image}.Dockerfile")
    argv = parsed.exec_form("ENTRYPOINT") + parsed.exec_form("CMD")
    parse_reward3d_argv(argv)  # raises on an unknown command or option
    user = [arguments for instruction, arguments in parsed.last_stage() if instruction == "USER"]
    assert user and not user[-1].startswith(("root", "0")), f"{image} runs as root"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.stem)
def test_image_settings_are_real_and_valid(dockerfile):
    env = parse_dockerfile(dockerfile).env()
    ours = {k: v for k, v in env.items() if k.startswith("REWARD3D_")}
    unknown = set(ours) - settings_env_names() - client_env_names()
    assert not unknown, f"{dockerfile.name}: not settings: {sorted(unknown)}"
    settings = settings_from_env(ours)  # raises on an invalid value
    if "REWARD3D_PORT" in ours:
        assert str(settings.port) in parse_dockerfile(dockerfile).all("EXPOSE")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.stem)
def test_every_image_has_a_healthcheck(dockerfile):
    parsed = parse_dockerfile(dockerfile)
    check = parsed.healthcheck()
    assert check, f"{dockerfile.name}: no HEALTHCHECK"
    if dockerfile.stem == "trainer":
        assert check == "NONE"  # a batch job: its exit code is its health (stated in the file)
    elif dockerfile.stem.startswith("worker"):
        assert "$REWARD3D_WORKER_READY_FILE" in check and parsed.env()["REWARD3D_WORKER_READY_FILE"]
    elif dockerfile.stem == "api":
        assert "/healthz" in check


def test_trainer_image_runs_reward3d_train_on_a_shipped_config():
    parsed = parse_dockerfile(DOCKER / "trainer.Dockerfile")
    argv = parsed.exec_form("ENTRYPOINT") + parsed.exec_form("CMD")
    assert argv[:2] == ["reward3d", "train"]
    config = Path(argv[2].replace("/opt/reward3d/configs", str(REPO / "configs")))
    assert config.is_file(), argv
    from trainer_client.cli import app as train_app
    import typer.main

    typer.main.get_command(train_app).make_context("train", argv[2:])  # real options
