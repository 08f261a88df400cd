"""Reading the deployment files the way docker compose, docker build and kustomize do, so the
tests can hold them against the code: compose interpolation, Dockerfile instructions, the
`reward3d` command line, the Settings fields, the API's routes and metrics, kustomize output.

Pure functions except where a name says otherwise (``render_overlay`` runs kubectl).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
DEPLOY = REPO / "deploy"
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
WORKER_ENV_EXAMPLE = DOCKER / "worker.env.example"
OVERLAYS = ("gpu", "cpu", "gpu-external-redis", "gpu-s3")
SETTINGS_PREFIX = "REWARD3D_"


# -- tools ------------------------------------------------------------------------------------
def tool(name: str) -> str:
    """Path of a command-line tool: next to this Python (the venv), else on PATH. Missing:
    a failure in CI (CI=true), a skip with the reason elsewhere."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found:
        return found
    message = f"{name} is not installed (pip install -e '.[dev]' brings hadolint and " \
              "check-jsonschema; kubectl ships with the machine image)"  # fmt: skip
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


# -- compose ----------------------------------------------------------------------------------
_VARIABLE = re.compile(r"\$(?:\$|\{(?P<braced>[^}]+)\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")


class MissingVariable(KeyError):
    pass


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose-style interpolation: ``$$``, ``$VAR``, ``${VAR}``, ``${VAR:-default}``,
    ``${VAR-default}``, ``${VAR:?error}``, ``${VAR?error}``."""

    def substitute(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        expression = match.group("braced") or match.group("plain")
        name, operator, argument = re.match(r"([A-Za-z_][A-Za-z0-9_]*)(:?[-?])?(.*)", expression,
                                            re.S).groups()  # fmt: skip
        value = env.get(name)
        empty_counts = operator is not None and operator.startswith(":")
        missing = value is None or (empty_counts and value == "")
        if operator in (":-", "-"):
            return interpolate(argument, env) if missing else value
        if operator in (":?", "?"):
            if missing:
                raise MissingVariable(f"{name}: {argument}")
            return value
        return value or ""

    return _VARIABLE.sub(substitute, text)


def interpolate_tree(node, env: dict[str, str]):
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [interpolate_tree(item, env) for item in node]
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env) for key, value in node.items()}
    return node


def variables_used(node) -> set[str]:
    """Names of the ``${VAR...}`` / ``$VAR`` references in a YAML tree (``$$`` is not one)."""
    if isinstance(node, str):
        names = set()
        for match in _VARIABLE.finditer(node):
            if match.group(0) != "$$":
                expression = match.group("braced") or match.group("plain")
                names.add(re.match(r"[A-Za-z_][A-Za-z0-9_]*", expression).group(0))
        return names
    if isinstance(node, list):
        return set().union(*(variables_used(item) for item in node)) if node else set()
    if isinstance(node, dict):
        return set().union(*(variables_used(v) for v in node.values())) if node else set()
    return set()


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (comments and blank lines skipped), as docker compose reads .env."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def load_compose(env: dict[str, str] | None = None) -> dict:
    """docker-compose.yml, interpolated with ``env`` (default: .env.example's values)."""
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    return interpolate_tree(raw, read_env_file(ENV_EXAMPLE) if env is None else env)


def service_environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def active_services(compose: dict, profiles: set[str]) -> dict[str, dict]:
    """The services `docker compose up` starts with these profiles on."""
    return {name: service for name, service in compose["services"].items()
            if not service.get("profiles") or profiles & set(service["profiles"])}  # fmt: skip


def service_dockerfile(service: dict) -> Path:
    """The Dockerfile a compose service's image comes from: its own build, or (pull_policy
    never) the Dockerfile of the image another service builds."""
    if "build" in service:
        return REPO / service["build"]["dockerfile"]
    assert service.get("pull_policy") == "never", "an image of ours that nothing builds"
    return dockerfile_for_image(service["image"])


def compose_container_env(service: dict) -> dict[str, str]:
    """A compose service's container environment: the image's ENV, then env_file (worker.env:
    its example), then `environment` (compose's order of precedence)."""
    env = parse_dockerfile(service_dockerfile(service)).env()
    for entry in service.get("env_file", []):
        path = entry["path"] if isinstance(entry, dict) else entry
        assert path == "worker.env", path
        env.update(read_env_file(WORKER_ENV_EXAMPLE))
    env.update(service_environment(service))
    return env


def compose_argv(service: dict) -> list[str]:
    """The argv a compose service's container runs: entrypoint (else the image's ENTRYPOINT)
    followed by command (else the image's CMD)."""
    dockerfile = parse_dockerfile(service_dockerfile(service))
    entrypoint = service.get("entrypoint") or dockerfile.exec_form("ENTRYPOINT")
    return list(entrypoint) + list(service.get("command") or dockerfile.exec_form("CMD"))


# -- Dockerfiles ------------------------------------------------------------------------------
@dataclass
class Dockerfile:
    path: Path
    instructions: list[tuple[str, str]]  # (INSTRUCTION, arguments), continuations joined
    args: dict[str, str] = field(default_factory=dict)  # ARG defaults

    def all(self, name: str) -> list[str]:
        return [arguments for instruction, arguments in self.instructions if instruction == name]

    def last_stage(self) -> list[tuple[str, str]]:
        starts = [i for i, (instruction, _) in enumerate(self.instructions) if instruction == "FROM"]
        return self.instructions[starts[-1]:]

    def exec_form(self, name: str) -> list[str] | None:
        """The final stage's ENTRYPOINT or CMD as an argv (exec form only)."""
        found = [arguments for instruction, arguments in self.last_stage() if instruction == name]
        if not found:
            return None
        return yaml.safe_load(found[-1])  # a JSON array

    def env(self) -> dict[str, str]:
        """ENV of the final stage (the image's environment)."""
        values: dict[str, str] = {}
        for instruction, arguments in self.last_stage():
            if instruction == "ENV":
                for token in shlex.split(arguments):
                    key, _, value = token.partition("=")
                    values[key] = value
        return values

    def healthcheck(self) -> str | None:
        found = [arguments for instruction, arguments in self.last_stage() if instruction == "HEALTHCHECK"]
        return found[-1] if found else None


def parse_dockerfile(path: Path) -> Dockerfile:
    lines, current = [], ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    instructions = []
    for line in lines:
        instruction, _, arguments = line.partition(" ")
        instructions.append((instruction.upper(), arguments.strip()))
    args = {}
    for instruction, arguments in instructions:
        if instruction == "ARG" and "=" in arguments:
            key, _, value = arguments.partition("=")
            args[key] = value.strip('"')
    return Dockerfile(path, instructions, args)


def dockerfile_for_image(image: str) -> Path:
    """``<registry>/<name>:<tag>`` -> docker/<name>.Dockerfile (the naming docker-compose.yml and
    the kustomize overlays use)."""
    name = image.rsplit("/", 1)[-1].split(":", 1)[0]
    return DOCKER / f"{'dashboard' if name == 'rq-dashboard' else name}.Dockerfile"


# -- the reward3d command line and settings -----------------------------------------------------
def parse_reward3d_argv(argv: list[str]):
    """Parse ``reward3d ...`` as the real CLI would, without running it: the click context of
    the subcommand. Raises click.UsageError for an unknown command or option."""
    import typer.main

    from service.cli import app

    assert argv and argv[0] == "reward3d", f"not a reward3d command: {argv}"
    group = typer.main.get_command(app)
    context = group.make_context("reward3d", list(argv[1:]), resilient_parsing=False)
    name, command, rest = group.resolve_command(context, list(argv[1:]))
    return command.make_context(name, rest, parent=context)


def settings_env_names() -> set[str]:
    """Every environment variable Settings reads (REWARD3D_<field>, plus aliases)."""
    from pydantic import AliasChoices

    from service.settings import Settings

    names = set()
    for name, info in Settings.model_fields.items():
        names.add(f"{SETTINGS_PREFIX}{name.upper()}")
        if isinstance(info.validation_alias, AliasChoices):
            names.update(str(choice).upper() for choice in info.validation_alias.choices)
    return names


def client_env_names() -> set[str]:
    """REWARD3D_* variables the SDK / trainer read (os.environ.get("REWARD3D_...") in trainer_client)."""
    names = set()
    for path in (REPO / "trainer_client").rglob("*.py"):
        names.update(re.findall(r"environ(?:\.get\(|\[)\s*[\"'](REWARD3D_[A-Z0-9_]+)", path.read_text()))
    return names


def settings_from_env(env: dict[str, str]):
    """Settings exactly as a process with this environment (and no .env file) builds them."""
    from service.settings import Settings

    saved = dict(os.environ)
    try:
        for key in [k for k in os.environ if k.startswith(SETTINGS_PREFIX) or k == "REDIS_URL"]:
            del os.environ[key]
        os.environ.update(env)
        return Settings(_env_file=None)
    finally:
        os.environ.clear()
        os.environ.update(saved)


# -- the API ------------------------------------------------------------------------------------
def api_get_routes() -> set[str]:
    """Paths the API answers GET on: its OpenAPI document, from the app `reward3d serve` builds."""
    from service.api import create_app
    from service.settings import Settings

    app = create_app(Settings(_env_file=None, redis_url="redis://127.0.0.1:1/15",
                              api_keys=["k" * 24]))  # fmt: skip  (Redis is not contacted)
    return {path for path, operations in app.openapi()["paths"].items() if "get" in operations}


class _EmptyRedis:
    """Just enough of a Redis client for FleetCollector on an empty database."""

    def zcard(self, key):
        return 0

    def zrange(self, *args, **kwargs):
        return []

    def scan_iter(self, *args, **kwargs):
        return iter(())

    def smembers(self, key):
        return set()


class _EmptyQueue:
    count = 0


def api_metric_names() -> set[str]:
    """Metric families GET /metrics exports (fleet gauges included)."""
    from service.api.metrics import ApiMetrics

    metrics = ApiMetrics(_EmptyRedis(), _EmptyQueue())
    return {family.name for family in metrics.registry.collect()}


# -- what an image installs ---------------------------------------------------------------------
def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def project_requirements(extras: tuple[str, ...]) -> list[str]:
    """This checkout's requirements for ``pip install ".[extras]"`` (self-references expanded)."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted, seen, todo = list(project["dependencies"]), set(), list(extras)
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for requirement in project["optional-dependencies"][extra]:
            match = re.fullmatch(r"reward3d\[([^\]]+)\]", requirement.strip())
            if match:
                todo += [e.strip() for e in match.group(1).split(",")]
            else:
                wanted.append(requirement)
    return wanted


def installed_closure(extras: tuple[str, ...]) -> set[str]:
    """Distributions ``pip install ".[extras]"`` brings (resolved against this environment's
    installed metadata): what an image built with those extras contains."""
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.requirements import Requirement

    closure: set[str] = set()
    todo = [(Requirement(r), frozenset()) for r in project_requirements(extras)]
    while todo:
        requirement, _ = todo.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        key = (_normalise(requirement.name), frozenset(requirement.extras))
        if key in closure:
            continue
        closure.add(key)
        try:
            dist = distribution(requirement.name)
        except PackageNotFoundError:
            continue
        for text in dist.requires or []:
            nested = Requirement(text)
            environments = [{"extra": e} for e in requirement.extras] or [{"extra": ""}]
            if nested.marker is None or any(nested.marker.evaluate(e) for e in environments):
                todo.append((nested, frozenset()))
    return {name for name, _ in closure}


def modules_outside(extras: tuple[str, ...]) -> set[str]:
    """Top-level modules installed here whose distributions an image with ``extras`` lacks."""
    from importlib.metadata import packages_distributions

    inside = installed_closure(extras) | {"reward3d"}  # the project itself (service, trainer_client)
    return {module for module, dists in packages_distributions().items()
            if module.isidentifier() and not {_normalise(d) for d in dists} & inside}  # fmt: skip


def import_blocker(blocked: set[str], label: str) -> str:
    """A sitecustomize.py that makes these top-level modules unimportable (ModuleNotFoundError),
    for a process that must run with only what an image installs."""
    return f"""
import importlib.abc, sys
_BLOCKED = {sorted(blocked)!r}
class _NotInTheImage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in _BLOCKED:
            raise ModuleNotFoundError(f"{{name}} is not installed in the {label} image")
        return None
sys.meta_path.insert(0, _NotInTheImage())
"""


# -- kustomize ----------------------------------------------------------------------------------
TEST_SECRETS = {
    "REDIS_PASSWORD": "test-redis-password-0123456789",
    "REWARD3D_API_KEYS": "test-client-key-0123456789,test-metrics-key-0123456789",
    "METRICS_API_KEY": "test-metrics-key-0123456789",
    "REWARD3D_REDIS_URL": "rediss://:test-redis-password@redis.example:6380/0",
}


def render_overlay(overlay: str, workdir: Path) -> list[dict]:
    """``kubectl kustomize deploy/overlays/<overlay>`` on a copy of deploy/ whose secrets.env is
    written by deploy/init-secrets.sh (the operator's step), as a list of objects."""
    kubectl = tool("kubectl")
    copy = workdir / "deploy"
    if not copy.exists():
        shutil.copytree(DEPLOY, copy, ignore=shutil.ignore_patterns("secrets.env", "s3.env"))
        subprocess.run(["bash", str(copy / "init-secrets.sh"), "--external-redis",
                        TEST_SECRETS["REWARD3D_REDIS_URL"]], check=True, capture_output=True)  # fmt: skip
        s3 = copy / "components" / "s3-blobs"
        (s3 / "s3.env").write_text((s3 / "s3.env.example").read_text())
    result = subprocess.run([kubectl, "kustomize", str(copy / "overlays" / overlay)],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def container_env(container: dict, objects: list[dict], secrets: dict[str, str]) -> dict[str, str]:
    """A container's environment as the kubelet builds it: envFrom ConfigMaps and Secrets (as
    rendered), then env with secretKeyRef (values from ``secrets``) and $(VAR) expansion."""
    import base64

    configmaps = {o["metadata"]["name"]: o.get("data", {}) for o in objects if o["kind"] == "ConfigMap"}
    secret_objects = {o["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in o.get("data", {}).items()}
                      for o in objects if o["kind"] == "Secret"}  # fmt: skip
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(configmaps[source["configMapRef"]["name"]])
        else:
            ref = source["secretRef"]
            assert ref["name"] in secret_objects or ref.get("optional"), ref
            env.update(secret_objects.get(ref["name"], {}))
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                                        lambda m: env.get(m.group(1), m.group(0)), entry["value"])  # fmt: skip
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            env[entry["name"]] = secrets[ref["key"]]
    return env


def by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}
