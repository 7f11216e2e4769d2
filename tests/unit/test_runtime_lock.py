"""The runtime lock (requirements.lock) is what the production image installs, and nothing else: so a
fresh virtualenv of exactly that lock must be consistent (``uv pip check``), satisfy revopt's own
requirements, import what the stack runs, and load no system library the image lacks.

The virtualenv is built from uv's cache (scripts/setup has filled it with the same wheels), linked
rather than copied, so it takes seconds. ``requirements-test.lock`` is the runtime lock plus the test
tools, at the same versions; scripts/setup installs it for developers and CI.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_LOCK = ROOT / "requirements.lock"
TEST_LOCK = ROOT / "requirements-test.lock"
DOCKERFILE = ROOT / "Dockerfile"

# What the services import, in two groups run side by side (about ten seconds each on 2 cores):
# the model families' libraries, and the servers (Airflow's Celery executor needs celery + redis,
# MLflow's basic-auth app needs Flask-WTF).
IMPORTS = (
    "import lightgbm, xgboost, catboost, sklearn, optuna, chdb, psycopg, psycopg2, clickhouse_connect, implicit, econml, "
    "splink, duckdb",
    "import mlflow, mlflow.server.auth, great_expectations, evidently, redis\n"
    "import airflow.providers.celery.executors.celery_executor, airflow.providers.postgres.hooks.postgres",
)
# Every program on the image needs the C library; nothing else may be assumed of the base image.
BASE_PACKAGES = {"libc6"}


def _pins(lock: Path) -> dict[str, str]:
    return dict(re.findall(r"^([A-Za-z0-9._-]+)==(\S+)", lock.read_text(), re.M))


def _test_tools() -> set[str]:
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    return {re.match(r"[A-Za-z0-9._-]+", requirement).group(0).lower() for requirement in extra}


def _uv(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """uv as requirements-test.lock pins it (the version the Dockerfile installs)."""
    return subprocess.run([sys.executable, "-m", "uv", *args], capture_output=True, text=True, timeout=timeout)


def test_the_runtime_lock_has_no_test_tools_and_the_test_lock_adds_only_them():
    runtime, full = _pins(RUNTIME_LOCK), _pins(TEST_LOCK)
    tools = _test_tools()
    assert {"pytest", "hypothesis"} <= tools
    assert not tools & set(runtime), f"test tools in the runtime lock: {sorted(tools & set(runtime))}"
    assert tools <= set(full)
    # Developers and CI test exactly the versions the image runs.
    assert {name: full.get(name) for name in runtime} == runtime, "requirements-test.lock disagrees with requirements.lock"
    assert "-c requirements.lock" in TEST_LOCK.read_text().splitlines()[1], "the test lock is compiled against the runtime lock"
    assert re.search(rf"^ARG UV_VERSION={re.escape(full['uv'])}$", DOCKERFILE.read_text(), re.M), \
        "the image builds with the uv the tests use"


def test_the_lock_holds_what_the_stack_runs():
    runtime = _pins(RUNTIME_LOCK)
    # CeleryExecutor (profile celery), its Redis broker, MLflow's basic-auth app.
    assert {"apache-airflow-providers-celery", "celery", "redis", "flask-wtf", "apache-airflow-providers-postgres"} <= set(runtime)
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(requirement.startswith("mlflow[auth]") for requirement in declared)
    assert any(requirement.startswith("apache-airflow-providers-celery") for requirement in declared)
    assert any(requirement.startswith("redis") for requirement in declared)


@pytest.fixture(scope="module")
def runtime_venv(tmp_path_factory) -> Path:
    """A fresh virtualenv holding exactly requirements.lock, plus revopt without dependencies (as the
    image does), from wheels only."""
    venv = tmp_path_factory.mktemp("runtime") / "venv"
    python = venv / "bin" / "python"
    steps = [
        ("venv", "--quiet", "--python", sys.executable, str(venv)),
        ("pip", "sync", "--quiet", "--python", str(python), "--no-build", str(RUNTIME_LOCK)),
        ("pip", "install", "--quiet", "--python", str(python), "--no-deps", "-e", str(ROOT)),
    ]
    for step in steps:
        result = _uv(*step)
        assert result.returncode == 0, f"uv {' '.join(step[:2])} failed:\n{result.stderr[-3000:]}"
    return venv


def test_a_fresh_venv_of_the_runtime_lock_passes_uv_pip_check(runtime_venv):
    result = _uv("pip", "check", "--python", str(runtime_venv / "bin" / "python"))
    assert result.returncode == 0, f"uv pip check on requirements.lock + revopt:\n{result.stdout}{result.stderr}"
    assert "All installed packages are compatible" in result.stdout + result.stderr


def test_a_fresh_venv_of_the_runtime_lock_imports_the_stack_and_no_test_tool(runtime_venv, tmp_path):
    python = str(runtime_venv / "bin" / "python")
    env = {"PATH": f"{runtime_venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "AIRFLOW_HOME": str(tmp_path / "airflow"),
           "GX_ANALYTICS_ENABLED": "false", "GIT_PYTHON_REFRESH": "quiet"}

    def run(code: str) -> subprocess.CompletedProcess:
        return subprocess.run([python, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)

    with ThreadPoolExecutor(max_workers=len(IMPORTS)) as pool:
        for code, result in zip(IMPORTS, pool.map(run, IMPORTS)):
            assert result.returncode == 0, f"{code}\n{result.stderr[-3000:]}"
    for tool in sorted(_test_tools() - {"uv"}):  # uv also ships a binary, not only a module
        assert run(f"import {tool}").returncode != 0, f"{tool} is importable from the runtime lock"


def _debian_package(path: str) -> str:
    """The package that ships ``path``, under any of its names (/lib is /usr/lib on merged-/usr systems)."""
    resolved = str(Path(path).resolve())
    candidates = dict.fromkeys([path, resolved, *(re.sub(r"^/usr/", "/", name) for name in (path, resolved)),
                                *(re.sub(r"^/(?!usr/)", "/usr/", name) for name in (path, resolved))])
    for candidate in candidates:
        result = subprocess.run(["dpkg-query", "-S", candidate], capture_output=True, text=True)
        if result.returncode == 0:
            return result.stdout.split(":", 1)[0]
    raise AssertionError(f"no Debian package ships {path}")


def test_the_image_installs_every_system_library_the_locked_wheels_load(runtime_venv):
    """Each shared object in the runtime virtualenv (extension modules and the libraries wheels
    bundle) links against system libraries; the Debian packages that ship them must be in the
    Dockerfile's apt-get install (LightGBM's libgomp1 was missing once)."""
    if not (shutil.which("ldd") and shutil.which("dpkg-query")):
        pytest.skip("needs ldd and dpkg-query (a Debian machine, as the image is)")
    # implicit's CUDA module (implicit/gpu/_cuda.so) is imported only when RAPIDS rmm is installed, which it
    # is not (revopt fits on the CPU): its CUDA libraries are never loaded.
    objects = sorted(str(path) for path in runtime_venv.rglob("*.so*") if path.is_file() and "/implicit/gpu/" not in str(path))
    assert len(objects) > 100, "no extension modules found"
    output = subprocess.run(["ldd", *objects], capture_output=True, text=True, timeout=120).stdout
    bundled = {path.name for path in runtime_venv.rglob("*.so*")}
    system, missing = set(), set()
    for library, target in re.findall(r"^\s+(\S+) => (.+?) \(0x", output, re.M) + \
            [(name, "not found") for name in re.findall(r"^\s+(\S+) => not found$", output, re.M)]:
        if target == "not found":
            missing.add(library)
        elif not target.startswith(str(runtime_venv)):
            system.add(target)
    # Optional back ends that load only if present: numba's TBB threading layer (numba falls back to
    # OpenMP or its own workqueue).
    optional = {"libtbb.so.12"}
    assert missing - bundled - optional == set(), f"libraries no package here provides: {sorted(missing - bundled - optional)}"
    needed = {_debian_package(path) for path in system}
    dockerfile = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    installed = set(re.search(r"apt-get install -y --no-install-recommends ([^&]+)", dockerfile).group(1).split())
    assert needed - BASE_PACKAGES <= installed, f"the image lacks {sorted(needed - BASE_PACKAGES - installed)} (Dockerfile apt-get install)"
    assert "libgomp1" in needed, "LightGBM's OpenMP runtime should be among them"
