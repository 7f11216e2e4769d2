"""Static checks of the production stack (docker-compose.yaml, Dockerfile, .env.example).

No Docker engine is needed: the compose file is parsed with PyYAML and interpolated from
.env.example the way Compose does it. If a Compose CLI is installed (the ``docker compose`` plugin
or the standalone ``docker-compose``), its own ``config`` validation runs too.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"

AIRFLOW_SERVICES = {"airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "airflow-worker"}
CELERY_SERVICES = {"redis", "airflow-worker"}
# [celery] options come from apache-airflow-providers-celery, which the Airflow image ships but the
# test environment does not install.
CELERY_PROVIDER_OPTIONS = {"broker_url", "result_backend"}
_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def _env_example() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if line.strip() and not line.startswith("#"))
    return {name.strip(): value.strip() for name, value in pairs}


def _interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable interpolation (``${X}``, ``${X:-default}``, ``${X:?error}``, ``$$``)."""
    if isinstance(value, dict):
        return {key: _interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [_interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if env.get(name):
            return env[name]
        if op and op.endswith("?"):
            raise AssertionError(f"compose needs {name} ({arg}) and .env.example does not set it")
        return arg if op and op.endswith("-") else env.get(name, "")

    return _VARIABLE.sub(substitute, value.replace("$$", "\0")).replace("\0", "$")


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(raw) -> dict[str, dict]:
    return _interpolate(raw["services"], _env_example())


def _environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    assert isinstance(env, dict), "environment is written as a mapping"
    return {name: str(value) for name, value in env.items()}


def _is_one_shot(service: dict) -> bool:
    return str(service.get("restart", "no")) == "no"


def _dockerfile_copies() -> dict[str, str]:
    """``COPY`` source -> where it lands in the image."""
    copies = {}
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY "):
            *sources, destination = [part for part in line.split()[1:] if not part.startswith("--")]
            for source in sources:
                landed = destination if len(sources) == 1 else f"{destination.rstrip('/')}/{source}"
                copies[source.rstrip("/")] = landed.rstrip("/")
    return copies


def _package_dir(name: str) -> Path:
    """A package's folder without importing it (Airflow and MLflow are slow to import)."""
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.submodule_search_locations, f"{name} is not installed"
    return Path(next(iter(spec.submodule_search_locations)))


def _names_in(paths: list[Path], pattern: str) -> set[str]:
    found: set[str] = set()
    for path in paths:
        found.update(re.findall(rf"[\"']({pattern})[\"']", path.read_text(errors="replace")))
    return found


def test_the_compose_file_parses_and_airflow_services_share_the_common_anchor(raw, services):
    common = raw["x-airflow-common"]
    assert set(services) >= AIRFLOW_SERVICES | {"postgres", "clickhouse", "mlflow", "redis"}
    assert common["build"]["dockerfile"] == "Dockerfile" and common["build"]["context"] == "."
    assert "_PIP_ADDITIONAL_REQUIREMENTS" not in COMPOSE_FILE.read_text(), "dependencies are baked into the image"
    common_env = _environment(_interpolate(common, _env_example()))
    for name in AIRFLOW_SERVICES:
        service = services[name]
        assert service["build"] == common["build"] and service["image"] == common["image"], name
        assert _environment(service).items() >= common_env.items(), f"{name} overrides the common environment"
        assert re.search(rf"^  {name}:\n    <<: \*airflow-common$", COMPOSE_FILE.read_text(), re.M), name
    commands = {name: services[name].get("command") for name in AIRFLOW_SERVICES}
    assert commands["airflow-apiserver"] == "api-server" and commands["airflow-scheduler"] == "scheduler"
    assert commands["airflow-dag-processor"] == "dag-processor" and commands["airflow-triggerer"] == "triggerer"
    assert commands["airflow-worker"] == "celery worker"


def test_every_long_running_service_has_a_healthcheck_and_one_shots_are_awaited_to_completion(services):
    one_shots = {name for name, service in services.items() if _is_one_shot(service)}
    assert one_shots == {"airflow-init"}
    for name, service in services.items():
        if name in one_shots:
            assert "healthcheck" not in service, f"{name} is one-shot: dependents wait for it to complete instead"
            continue
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] in {"CMD", "CMD-SHELL"}, f"{name} has no healthcheck"
        assert str(service["restart"]) in {"always", "unless-stopped"}, name
    for name, service in services.items():
        for dependency, how in (service.get("depends_on") or {}).items():
            expected = "service_completed_successfully" if dependency in one_shots else "service_healthy"
            assert how == {"condition": expected}, f"{name} -> {dependency}: {how}"
    for name in AIRFLOW_SERVICES - one_shots:
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully", name


def test_every_image_is_pinned_and_the_airflow_base_matches_the_lock(services):
    for name, service in services.items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest" and re.search(r"\d", tag), f"{name}: {image} is not pinned"
    lock = (ROOT / "requirements.lock").read_text()
    airflow_version = re.search(r"^apache-airflow==(\S+)$", lock, re.M).group(1)
    python = re.search(r'requires-python = ">=(\d+\.\d+)', (ROOT / "pyproject.toml").read_text()).group(1)
    base = re.findall(r"^FROM (\S+)", DOCKERFILE.read_text(), re.M)
    assert base == [f"apache/airflow:{airflow_version}-python{python}"]
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert services["airflow-scheduler"]["image"] == f"revopt/airflow:{version}"
    assert services["mlflow"]["image"] == services["airflow-scheduler"]["image"], "server and clients share one MLflow"


def test_the_project_is_baked_into_the_image_where_compose_expects_it(services):
    copies = _dockerfile_copies()
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    project = str(Path(copies["pyproject.toml"]).parent)
    for folder in [pattern.rstrip("*") for pattern in packages] + ["dags", "expectations", "mlflow", "docker"]:
        assert copies.get(folder) == f"{project}/{folder}", f"{folder}/ is not copied next to pyproject.toml"
    assert f"-e {project}" in DOCKERFILE.read_text(), "editable install: expectations/ and dags/ stay next to the packages"
    dags_in_image = copies["dags"]
    dockerfile_env = dict(re.findall(r"(AIRFLOW__CORE__DAGS_FOLDER)=(\S+)", DOCKERFILE.read_text()))
    assert dockerfile_env["AIRFLOW__CORE__DAGS_FOLDER"] == dags_in_image
    for name in AIRFLOW_SERVICES:
        assert _environment(services[name])["AIRFLOW__CORE__DAGS_FOLDER"] == dags_in_image, name
        assert not any(str(volume).split(":")[-1].startswith(dags_in_image) for volume in services[name].get("volumes", [])), \
            "the DAGs are baked into the image, not mounted over it"
    # Scripts the services run exist in the repository, where the image copies them from.
    scripts = [services["airflow-init"]["command"][-1], services["mlflow"]["entrypoint"][-1]]
    for script in scripts:
        in_repo = ROOT / Path(script).relative_to(project)
        assert in_repo.is_file() and os.access(in_repo, os.X_OK), script
    init_sql = (ROOT / "docker" / "postgres-init.sh").read_text()
    assert "for database in airflow mlflow" in init_sql
    assert services["postgres"]["volumes"][1].startswith("./docker/postgres-init.sh:/docker-entrypoint-initdb.d/")


def test_environment_names_are_ones_the_code_reads(services):
    revopt_reads = _names_in(sorted((ROOT / "revopt").glob("*.py")), r"(?:REVOPT|MLFLOW|AIRFLOW_CONN_REVOPT)_[A-Z0-9_]+")
    mlflow_dir = _package_dir("mlflow")
    mlflow_reads = _names_in([mlflow_dir / "environment_variables.py", mlflow_dir / "utils" / "cli_args.py",
                              mlflow_dir / "cli" / "__init__.py"], r"MLFLOW_[A-Z0-9_]+")
    airflow_options = yaml.safe_load((_package_dir("airflow") / "config_templates" / "config.yml").read_text())
    for name, service in services.items():
        for variable in _environment(service):
            if variable.startswith(("REVOPT_", "AIRFLOW_CONN_REVOPT_")):
                assert variable in revopt_reads, f"{name}: revopt never reads {variable}"
            elif variable.startswith("MLFLOW_"):
                assert variable in revopt_reads | mlflow_reads, f"{name}: neither revopt nor MLflow reads {variable}"
            elif variable.startswith("AIRFLOW__"):
                section, option = variable.removeprefix("AIRFLOW__").lower().split("__", 1)
                known = CELERY_PROVIDER_OPTIONS if section == "celery" else airflow_options.get(section, {}).get("options", {})
                assert option in known, f"{name}: no Airflow option {variable}"
    needed = {"AIRFLOW_CONN_REVOPT_POSTGRES", "AIRFLOW_CONN_REVOPT_CLICKHOUSE", "MLFLOW_TRACKING_URI", "REVOPT_HOME"}
    assert needed <= revopt_reads
    for name in AIRFLOW_SERVICES:
        env = _environment(services[name])
        assert needed <= env.keys(), f"{name} lacks {needed - env.keys()}"
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert env["AIRFLOW_CONN_REVOPT_POSTGRES"].startswith("postgresql://") and "@postgres:5432/" in env["AIRFLOW_CONN_REVOPT_POSTGRES"]
        assert env["AIRFLOW_CONN_REVOPT_CLICKHOUSE"].startswith("http://") and "@clickhouse:8123" in env["AIRFLOW_CONN_REVOPT_CLICKHOUSE"]
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("@postgres:5432/airflow")
    assert _environment(services["mlflow"])["MLFLOW_BACKEND_STORE_URI"].endswith("@postgres:5432/mlflow")


def test_task_runners_share_the_run_folders_and_the_artifacts_are_served(services):
    for name in AIRFLOW_SERVICES:
        home = _environment(services[name])["REVOPT_HOME"]
        assert f"revopt-home:{home}" in services[name]["volumes"], name
    mlflow = services["mlflow"]
    destination = _environment(mlflow)["MLFLOW_ARTIFACTS_DESTINATION"]
    assert f"mlflow-artifacts:{destination}" in mlflow["volumes"]
    assert "--serve-artifacts" in (ROOT / "mlflow" / "serve.sh").read_text()
    allowed = _environment(mlflow)["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert {"mlflow:5000", "localhost:*"} <= set(allowed), "the clients reach the server as mlflow:5000"
    assert not (ROOT / "mlflow" / "__init__.py").exists()


def test_celery_is_a_profile_of_its_own(services):
    for name, service in services.items():
        profiles = set(service.get("profiles", []))
        assert profiles == ({"celery"} if name in CELERY_SERVICES else set()), name
        if name not in CELERY_SERVICES:
            assert not set(service.get("depends_on") or {}) & CELERY_SERVICES, f"{name} would need --profile celery"
    assert _environment(services["airflow-scheduler"])["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert _environment(services["airflow-worker"])["AIRFLOW__CELERY__BROKER_URL"] == "redis://redis:6379/0"
    assert services["airflow-worker"]["depends_on"]["redis"] == {"condition": "service_healthy"}


def test_no_secret_is_committed(raw):
    env = _env_example()
    referenced = {match["name"] for match in _VARIABLE.finditer(COMPOSE_FILE.read_text().replace("$$", ""))}
    assert referenced <= env.keys(), f".env.example lacks {referenced - env.keys()}"
    for name, value in env.items():
        if re.search(r"PASSWORD|SECRET|FERNET", name):
            assert value in {"", "change-me"}, f"{name} in .env.example must be a placeholder"
    for name, service in raw["services"].items():
        for variable, value in (service.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET|KEY$", variable) and not variable.endswith("_FILE"):
                assert str(value).startswith("${"), f"{name}: {variable} is written into the compose file"
            literal = _VARIABLE.sub("", str(value))
            assert not re.search(r"://[^/\s@]*:[^/\s@]+@", literal), f"{name}: {variable} holds a password"
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def _compose_cli() -> list[str] | None:
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) and subprocess.run([*command, "version"], capture_output=True).returncode == 0:
            return command
    return None


@pytest.mark.parametrize("profile", [[], ["--profile", "celery"]], ids=["default", "celery"])
def test_compose_cli_validates_the_file(profile):
    command = _compose_cli()
    if command is None:
        pytest.skip("no Compose CLI installed (neither the `docker compose` plugin nor `docker-compose`)")
    result = subprocess.run(
        [*command, "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE), "--env-file", str(ENV_EXAMPLE), *profile,
         "config", "-q"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
