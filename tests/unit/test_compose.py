"""Static checks of the production stack (docker-compose.yaml, Dockerfile, .env.example) and of
the scripts its services run before anything starts (docker/check-env.sh, mlflow/serve.sh).

No Docker engine is needed: the compose file is parsed with PyYAML and interpolated from
.env.example the way Compose does it. If a Compose CLI is installed (the ``docker compose`` plugin
or the standalone ``docker-compose``), its own ``config`` validation runs too.
"""

from __future__ import annotations

import importlib.util
import os
import re
import runpy
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"

CHECK_ENV = ROOT / "docker" / "check-env.sh"
SERVE = ROOT / "mlflow" / "serve.sh"

AIRFLOW_SERVICES = {"airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "airflow-worker"}
CELERY_SERVICES = {"redis", "airflow-worker"}
BUILDER = "config-check"
# Services that hold no secret of .env and need not wait for config-check.
UNGATED = {BUILDER, "redis"}
PLACEHOLDER = "change-me"
URL_SAFE = re.compile(r"[A-Za-z0-9._~-]+")
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


def _revopt_image(services: dict[str, dict]) -> str:
    return services[BUILDER]["image"]


def _secret_names(env: dict[str, str]) -> set[str]:
    return {name for name in env if re.search(r"PASSWORD|SECRET|FERNET", name)}


def _run_check_env(env: dict[str, str]) -> subprocess.CompletedProcess:
    """docker/check-env.sh's check_env, sourced the way a test can call one function of it."""
    return subprocess.run(["bash", "-c", 'source "$1" && check_env', "check-env", str(CHECK_ENV)],
                          env={"PATH": os.environ["PATH"], **env}, capture_output=True, text=True, timeout=30)


def _chosen_secrets(env: dict[str, str]) -> dict[str, str]:
    """.env.example with every placeholder replaced, as an operator would."""
    return {name: (f"{name.lower().replace('_', '-')}-0123456789abcdef" if value == PLACEHOLDER else value)
            for name, value in env.items()}


def test_the_compose_file_parses_and_airflow_services_share_the_common_anchor(raw, services):
    common = raw["x-airflow-common"]
    assert set(services) >= AIRFLOW_SERVICES | {BUILDER, "postgres", "clickhouse", "mlflow", "redis"}
    assert "build" not in common, "the Airflow services run the image config-check builds"
    assert "_PIP_ADDITIONAL_REQUIREMENTS" not in COMPOSE_FILE.read_text(), "dependencies are baked into the image"
    common_env = _environment(_interpolate(common, _env_example()))
    for name in AIRFLOW_SERVICES:
        service = services[name]
        assert service["image"] == common["image"] and service["pull_policy"] == "never", name
        assert _environment(service).items() >= common_env.items(), f"{name} overrides the common environment"
        assert re.search(rf"^  {name}:\n    <<: \*airflow-common$", COMPOSE_FILE.read_text(), re.M), name
    commands = {name: services[name].get("command") for name in AIRFLOW_SERVICES}
    assert commands["airflow-apiserver"] == ["airflow", "api-server"] and commands["airflow-scheduler"] == ["airflow", "scheduler"]
    assert commands["airflow-dag-processor"] == ["airflow", "dag-processor"] and commands["airflow-triggerer"] == ["airflow", "triggerer"]
    assert commands["airflow-worker"] == ["airflow", "celery", "worker"]
    # The image's entrypoint is only the init process: each service names its program.
    assert re.findall(r"^ENTRYPOINT (.+)$", DOCKERFILE.read_text(), re.M) == ['["/usr/bin/dumb-init", "--"]']


def test_exactly_one_service_builds_the_image_and_the_others_never_pull_it(services):
    builders = {name for name, service in services.items() if "build" in service}
    assert builders == {BUILDER}, f"services that build: {sorted(builders)} (parallel builds of one tag collide)"
    assert services[BUILDER]["build"] == {"context": ".", "dockerfile": "Dockerfile"}
    image = _revopt_image(services)
    # `build`: Compose builds it and never pulls a registry's image of that name (not ours).
    assert services[BUILDER]["pull_policy"] == "build"
    users = {name for name, service in services.items() if service["image"] == image} - builders
    assert users == AIRFLOW_SERVICES | {"mlflow"}
    for name in users:
        assert services[name]["pull_policy"] == "never", f"{name} could pull someone else's {image}"


def test_every_long_running_service_has_a_healthcheck_and_one_shots_are_awaited_to_completion(services):
    one_shots = {name for name, service in services.items() if _is_one_shot(service)}
    assert one_shots == {BUILDER, "airflow-init"}
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
    # Nothing that holds a secret starts before config-check has refused placeholders; postgres and
    # clickhouse least of all, since they keep the password of their first start.
    for name in set(services) - UNGATED:
        assert "config-check" in services[name].get("depends_on", {}), f"{name} starts without config-check"


def test_every_image_is_pinned_and_the_base_is_the_projects_python(services):
    for name, service in services.items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest" and re.search(r"\d", tag), f"{name}: {image} is not pinned"
    python = re.search(r'requires-python = ">=(\d+\.\d+)', (ROOT / "pyproject.toml").read_text()).group(1)
    base = re.findall(r"^FROM (\S+)", DOCKERFILE.read_text(), re.M)
    assert len(base) == 1 and re.fullmatch(rf"python:{re.escape(python)}\.\d+-slim-bookworm", base[0]), base
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert _revopt_image(services) == f"revopt/airflow:{version}"
    assert services["mlflow"]["image"] == services["airflow-scheduler"]["image"], "server and clients share one MLflow"


def _run_lines(dockerfile: str) -> list[str]:
    """Every RUN instruction, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", dockerfile)
    return [line[4:] for line in joined.splitlines() if line.startswith("RUN ")]


def test_the_image_is_exactly_the_runtime_lock_checked_with_the_libraries_it_loads():
    dockerfile = DOCKERFILE.read_text()
    runs = _run_lines(dockerfile)
    apt = [run for run in runs if "apt-get install" in run]
    assert len(apt) == 1 and "--no-install-recommends" in apt[0]
    packages = set(re.findall(r"apt-get install[^&]*", apt[0])[0].split()[2:]) - {"-y", "--no-install-recommends"}
    assert {"libgomp1", "dumb-init", "curl"} <= packages, "LightGBM needs libgomp1; the health checks curl"
    # Only the runtime lock: synced (nothing else in the virtualenv), from wheels, then checked.
    assert "COPY requirements.lock /opt/revopt/requirements.lock" in dockerfile
    assert "requirements-test.lock" not in dockerfile
    assert "requirements-test.lock" in (ROOT / ".dockerignore").read_text().split()
    installs = [run for run in runs if re.search(r"\b(pip|uv pip) (install|sync)\b", run)]
    assert any("uv pip sync" in run and "--no-build" in run and run.rstrip().endswith("/opt/revopt/requirements.lock")
               for run in installs), installs
    for run in installs:
        for command in re.split(r"&&", run):
            if re.search(r"\b(install|sync)\b", command):
                assert re.search(r'uv==\$\{UV_VERSION\}|--no-deps -e /opt/revopt|requirements\.lock$', command.strip()), \
                    f"installs something besides the lock, revopt and a pinned uv: {command.strip()}"
    assert re.search(r"^ARG UV_VERSION=\d+\.\d+\.\d+$", dockerfile, re.M), "uv is pinned"
    last_install = max(index for index, run in enumerate(runs) if run in installs)
    assert "uv pip check" in runs[last_install], "the build fails when the installed environment is inconsistent"
    assert re.search(r"^USER airflow$", dockerfile, re.M), "services do not run as root"


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
    scripts = [services["airflow-init"]["command"][-1], services[BUILDER]["command"][-1], services["mlflow"]["command"][-1]]
    for script in scripts:
        in_repo = ROOT / Path(script).relative_to(project)
        assert in_repo.is_file() and os.access(in_repo, os.X_OK), script
    init_sql = (ROOT / "docker" / "postgres-init.sh").read_text()
    assert "for database in airflow mlflow mlflow_auth" in init_sql
    assert services["postgres"]["volumes"][1].startswith("./docker/postgres-init.sh:/docker-entrypoint-initdb.d/")


def test_environment_names_are_ones_the_code_reads(services):
    revopt_reads = _names_in(sorted((ROOT / "revopt").rglob("*.py")), r"(?:REVOPT|MLFLOW|AIRFLOW_CONN_REVOPT)_[A-Z0-9_]+")
    mlflow_dir = _package_dir("mlflow")
    mlflow_reads = _names_in([mlflow_dir / "environment_variables.py", mlflow_dir / "utils" / "cli_args.py",
                              mlflow_dir / "cli" / "__init__.py"], r"MLFLOW_[A-Z0-9_]+")
    serve_reads = set(re.findall(r"\$\{?(MLFLOW_[A-Z0-9_]+)", SERVE.read_text()))
    airflow_dir = _package_dir("airflow")
    airflow_options = yaml.safe_load((airflow_dir / "config_templates" / "config.yml").read_text())
    # [celery] options are the Celery provider's (locked with the rest: the `celery` profile needs it).
    celery_info = runpy.run_path(str(airflow_dir / "providers" / "celery" / "get_provider_info.py"))["get_provider_info"]()
    airflow_options = {**airflow_options, **celery_info["config"]}
    for name, service in services.items():
        for variable in _environment(service):
            if variable.startswith(("REVOPT_", "AIRFLOW_CONN_REVOPT_")):
                assert variable in revopt_reads, f"{name}: revopt never reads {variable}"
            elif variable.startswith("MLFLOW_"):
                assert variable in revopt_reads | mlflow_reads | serve_reads, f"{name}: neither revopt, MLflow nor serve.sh reads {variable}"
            elif variable.startswith("AIRFLOW__"):
                section, option = variable.removeprefix("AIRFLOW__").lower().split("__", 1)
                assert option in airflow_options.get(section, {}).get("options", {}), f"{name}: no Airflow option {variable}"
    needed = {"AIRFLOW_CONN_REVOPT_POSTGRES", "AIRFLOW_CONN_REVOPT_CLICKHOUSE", "MLFLOW_TRACKING_URI", "REVOPT_HOME"}
    assert needed <= revopt_reads
    mlflow_env = _environment(services["mlflow"])
    for name in AIRFLOW_SERVICES:
        env = _environment(services[name])
        assert needed <= env.keys(), f"{name} lacks {needed - env.keys()}"
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert env["AIRFLOW_CONN_REVOPT_POSTGRES"].startswith("postgresql://") and "@postgres:5432/" in env["AIRFLOW_CONN_REVOPT_POSTGRES"]
        assert env["AIRFLOW_CONN_REVOPT_CLICKHOUSE"].startswith("http://") and "@clickhouse:8123" in env["AIRFLOW_CONN_REVOPT_CLICKHOUSE"]
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("@postgres:5432/airflow")
        # The tasks log in to MLflow as the admin the server creates.
        assert (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]) == \
            (mlflow_env["MLFLOW_AUTH_ADMIN_USERNAME"], mlflow_env["MLFLOW_AUTH_ADMIN_PASSWORD"]), name
    assert mlflow_env["MLFLOW_BACKEND_STORE_URI"].endswith("@postgres:5432/mlflow")
    assert mlflow_env["MLFLOW_AUTH_DATABASE_URI"].endswith("@postgres:5432/mlflow_auth")
    assert {"REVOPT_READER_PASSWORD", "REVOPT_READER_ROLE"} <= _environment(services["airflow-init"]).keys(), \
        "`revopt init-db` creates the read-only role"


def test_task_runners_share_the_run_folders_and_the_artifacts_are_served(services):
    for name in AIRFLOW_SERVICES:
        home = _environment(services[name])["REVOPT_HOME"]
        assert f"revopt-home:{home}" in services[name]["volumes"], name
    mlflow = services["mlflow"]
    destination = _environment(mlflow)["MLFLOW_ARTIFACTS_DESTINATION"]
    assert f"mlflow-artifacts:{destination}" in mlflow["volumes"]
    assert "--serve-artifacts" in SERVE.read_text()
    allowed = _environment(mlflow)["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert {"mlflow:5000", "localhost:*"} <= set(allowed), "the clients reach the server as mlflow:5000"
    assert not (ROOT / "mlflow" / "__init__.py").exists()


def test_the_uis_are_published_on_the_hosts_loopback_unless_told_otherwise(raw, services):
    env = _env_example()
    for name, service in raw["services"].items():
        for port in service.get("ports", []):
            address = re.fullmatch(r"(?P<host>127\.0\.0\.1|\$\{(?P<variable>[A-Z_]+_BIND_ADDRESS):-127\.0\.0\.1\}):\$\{[A-Z_]+_PORT:-\d+\}:\d+",
                                   str(port))
            assert address, f"{name} publishes {port} on every interface (or without a port variable)"
            if address["variable"]:
                assert env.get(address["variable"]) == "127.0.0.1", f".env.example documents {address['variable']}"
    published = {name for name, service in raw["services"].items() if service.get("ports")}
    assert published == {"postgres", "clickhouse", "mlflow", "airflow-apiserver"}
    for name in published:
        assert all(str(port).startswith("127.0.0.1:") for port in services[name]["ports"]), name
    # Inside its container the server listens on every interface (the workers reach it as
    # mlflow:5000); run by hand, serve.sh listens on this host only unless told otherwise.
    assert _environment(services["mlflow"])["MLFLOW_HOST"] == "0.0.0.0"
    assert '--host "${MLFLOW_HOST:-127.0.0.1}"' in SERVE.read_text()
    assert "--app-name basic-auth" in SERVE.read_text(), "MLflow runs with authentication"


def test_celery_is_a_profile_of_its_own(services):
    for name, service in services.items():
        profiles = set(service.get("profiles", []))
        assert profiles == ({"celery"} if name in CELERY_SERVICES else set()), name
        if name not in CELERY_SERVICES:
            assert not set(service.get("depends_on") or {}) & CELERY_SERVICES, f"{name} would need --profile celery"
    assert _environment(services["airflow-scheduler"])["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert _environment(services["airflow-worker"])["AIRFLOW__CELERY__BROKER_URL"] == "redis://redis:6379/0"
    assert services["airflow-worker"]["depends_on"]["redis"] == {"condition": "service_healthy"}


def test_no_secret_is_committed_and_each_is_written_once(raw):
    env = _env_example()
    referenced = {match["name"] for match in _VARIABLE.finditer(COMPOSE_FILE.read_text().replace("$$", ""))}
    assert referenced <= env.keys(), f".env.example lacks {referenced - env.keys()}"
    for name in _secret_names(env):
        assert env[name] in {"", PLACEHOLDER}, f"{name} in .env.example must be a placeholder"
    for name, value in env.items():
        # A URL in .env that carries a password repeats a password variable (or is one of its own,
        # which belongs in an empty REVOPT_*_URL of the operator's .env, not in the template).
        assert not (value and "://" in value and urlsplit(value).password), f".env.example: {name} holds a password"
    for name, service in raw["services"].items():
        for variable, value in (service.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET|KEY$", variable) and not variable.endswith("_FILE"):
                assert str(value).startswith("${"), f"{name}: {variable} is written into the compose file"
            literal = _VARIABLE.sub("", str(value))
            assert not re.search(r"://[^/\s@]*:[^/\s@]+@", literal), f"{name}: {variable} holds a password"
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def test_a_password_changed_in_env_reaches_every_url_built_from_it(raw):
    chosen = _chosen_secrets(_env_example())
    services = _interpolate(raw["services"], chosen)
    composed = {"POSTGRES_PASSWORD": 0, "CLICKHOUSE_PASSWORD": 0}
    for name, service in services.items():
        for variable, value in _environment(service).items():
            if "://" in value and urlsplit(value).password:
                url = urlsplit(value)
                owner = {"postgres": "POSTGRES", "clickhouse": "CLICKHOUSE"}[url.hostname]
                assert (url.username, url.password) == (chosen[f"{owner}_USER"], chosen[f"{owner}_PASSWORD"]), f"{name}: {variable}"
                composed[f"{owner}_PASSWORD"] += 1
    # revopt's two connections, Airflow's metadata and Celery results, MLflow's backend and users.
    assert composed["POSTGRES_PASSWORD"] >= 4 and composed["CLICKHOUSE_PASSWORD"] >= 1, composed


def test_config_check_refuses_every_placeholder_and_names_it():
    env = _env_example()
    placeholders = {name for name, value in env.items() if value == PLACEHOLDER}
    assert placeholders >= {"POSTGRES_PASSWORD", "CLICKHOUSE_PASSWORD", "REVOPT_READER_PASSWORD", "AIRFLOW_JWT_SECRET",
                            "AIRFLOW_API_SECRET_KEY", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"}
    result = _run_check_env(env)
    assert result.returncode != 0
    for name in placeholders:
        assert f"{name} is still the placeholder" in result.stderr, name

    chosen = _chosen_secrets(env)
    accepted = _run_check_env(chosen)
    assert accepted.returncode == 0, accepted.stderr
    for name in placeholders:  # one left behind is enough to refuse
        result = _run_check_env({**chosen, name: PLACEHOLDER})
        assert result.returncode != 0 and f"{name} is still the placeholder" in result.stderr, name
    for name in ("POSTGRES_PASSWORD", "MLFLOW_AUTH_ADMIN_PASSWORD", "AIRFLOW_JWT_SECRET"):
        result = _run_check_env({key: value for key, value in chosen.items() if key != name})
        assert result.returncode != 0 and f"{name} is not set" in result.stderr, name
    for value in chosen.values():
        assert value not in accepted.stdout + accepted.stderr or value in env.values(), "a secret was printed"


def test_config_check_refuses_what_a_url_cannot_hold_as_it_is():
    chosen = _chosen_secrets(_env_example())
    for name in ("POSTGRES_PASSWORD", "CLICKHOUSE_PASSWORD", "POSTGRES_USER", "REVOPT_READER_PASSWORD"):
        for bad in ("p@ss:word/123456789", "percent%41-123456"):
            result = _run_check_env({**chosen, name: bad})
            assert result.returncode != 0 and f"{name} may hold only letters" in result.stderr, (name, bad)
            assert bad not in result.stdout + result.stderr, "a secret was printed"
    result = _run_check_env({**chosen, "MLFLOW_AUTH_ADMIN_PASSWORD": "short-1"})
    assert result.returncode != 0 and "MLFLOW_AUTH_ADMIN_PASSWORD must have at least 12" in result.stderr
    # A passphrase that is not in a URL may hold anything.
    assert _run_check_env({**chosen, "AIRFLOW_JWT_SECRET": "a/b@c:d%e f"}).returncode == 0


def test_config_check_covers_every_secret_of_env_example(services):
    env = _env_example()
    checked = _environment(services[BUILDER])
    listed = CHECK_ENV.read_text()
    for name in _secret_names(env) | {"POSTGRES_USER", "CLICKHOUSE_USER", "POSTGRES_DB"}:
        assert name in checked, f"config-check does not get {name}"
        assert re.search(rf"^(REQUIRED_SECRETS|OPTIONAL_SECRETS|IN_URLS)=\([^)]*\b{name}\b", listed, re.M | re.S), \
            f"docker/check-env.sh does not check {name}"


@pytest.mark.parametrize("variable", ["MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_BACKEND_STORE_URI"])
def test_the_mlflow_server_refuses_placeholders_too(variable, tmp_path):
    env = {
        "PATH": os.environ["PATH"], "TMPDIR": str(tmp_path),
        "MLFLOW_BACKEND_STORE_URI": "postgresql://revopt:a-real-password-123@postgres:5432/mlflow",
        "MLFLOW_AUTH_DATABASE_URI": "postgresql://revopt:a-real-password-123@postgres:5432/mlflow_auth",
        "MLFLOW_AUTH_ADMIN_PASSWORD": "a-real-password-456", "MLFLOW_FLASK_SERVER_SECRET_KEY": "a-real-key-789",
    }
    env[variable] = PLACEHOLDER if "URI" not in variable else env[variable].replace("a-real-password-123", PLACEHOLDER)
    # `mlflow` on PATH is a stand-in that would succeed: the script must stop before it.
    stand_in = tmp_path / "bin"
    stand_in.mkdir()
    (stand_in / "mlflow").write_text("#!/bin/sh\necho started\n")
    (stand_in / "mlflow").chmod(0o755)
    env["PATH"] = f"{stand_in}{os.pathsep}{env['PATH']}"
    result = subprocess.run(["bash", str(SERVE)], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and "started" not in result.stdout
    assert variable in result.stderr and PLACEHOLDER in result.stderr
    assert "a-real-password" not in result.stderr, "a secret was printed"
    env[variable] = {"MLFLOW_AUTH_ADMIN_PASSWORD": "a-real-password-456", "MLFLOW_FLASK_SERVER_SECRET_KEY": "a-real-key-789"}.get(
        variable, "postgresql://revopt:a-real-password-123@postgres:5432/mlflow")
    started = subprocess.run(["bash", str(SERVE)], env=env, capture_output=True, text=True, timeout=30)
    assert started.returncode == 0 and started.stdout == "started\n", started.stderr
    config = Path(next(tmp_path.glob("mlflow-auth.*.ini")))
    assert oct(config.stat().st_mode & 0o777) == "0o600", "the auth config holds a database password"


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
