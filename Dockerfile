# The revopt image: Airflow 3, MLflow and the ML libraries exactly as `requirements.lock` pins them,
# with revopt, its DAGs, models, feature code, expectations and the MLflow server script baked in.
# Every Airflow service of docker-compose.yaml and the MLflow server run it, so tasks, the DAG
# processor and the tracking server share one set of library versions: the lock CI installs and
# checks (tests/unit/test_runtime_lock.py).
#
# Built FROM plain Python rather than apache/airflow: that image ships ~80 providers pinned by
# Airflow's constraints, and installing our lock over them gives an environment nobody resolved.
# Here the virtualenv holds the lock and nothing else (docs/production.md, "The image").
# The base image's Python must equal the project's (tests/unit/test_compose.py checks it).
FROM python:3.11.14-slim-bookworm

# System libraries the wheels load but do not bundle (tests/unit/test_runtime_lock.py derives this
# list from the runtime lock's shared objects): libgomp1 (OpenMP: LightGBM, numba's OpenMP layer);
# libstdc++6, libgcc-s1, zlib1g are already in the base, named so the list is complete.
# dumb-init is PID 1 (signals reach Airflow, as in Airflow's image); curl serves the health checks.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 libstdc++6 libgcc-s1 zlib1g dumb-init curl \
 && rm -rf /var/lib/apt/lists/*

# The airflow user (UID 50000, group 0) as in Airflow's image, owning only the folders the services
# write: state, logs, the simple auth manager's passwords and MLflow's artifacts. Code and
# libraries stay root's, read-only to the services.
ENV AIRFLOW_HOME=/opt/airflow
RUN useradd --uid 50000 --gid 0 --home-dir /home/airflow --create-home --shell /bin/bash airflow \
 && mkdir -p /opt/airflow/revopt /opt/airflow/logs /opt/airflow/auth /opt/airflow/mlartifacts \
 && chown -R airflow:0 /opt/airflow \
 && chmod -R g+rwX /opt/airflow

# Dependencies first: this layer is rebuilt only when the lock changes. `uv pip sync` makes the
# virtualenv exactly the lock; --no-build refuses anything that would need a compiler;
# --compile-bytecode ships the .pyc, so no task process compiles the stack from source.
ARG UV_VERSION=0.13.9
RUN pip install --no-cache-dir --disable-pip-version-check --root-user-action=ignore "uv==${UV_VERSION}"
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1
COPY requirements.lock /opt/revopt/requirements.lock
RUN uv venv --python /usr/local/bin/python3.11 /opt/venv \
 && uv pip sync --python /opt/venv/bin/python --no-cache --no-build --compile-bytecode /opt/revopt/requirements.lock

# The project, installed in editable mode from /opt/revopt so that the DAG folder and the
# expectation suites stay next to the packages (revopt finds expectations/ relative to itself).
# `uv pip check` then fails the build if the lock does not satisfy itself or revopt's requirements.
COPY pyproject.toml README.md /opt/revopt/
COPY revopt/ /opt/revopt/revopt/
COPY features/ /opt/revopt/features/
COPY ml/ /opt/revopt/ml/
COPY expectations/ /opt/revopt/expectations/
COPY dags/ /opt/revopt/dags/
COPY mlflow/ /opt/revopt/mlflow/
COPY docker/ /opt/revopt/docker/
RUN uv pip install --python /opt/venv/bin/python --no-cache --no-deps -e /opt/revopt \
 && uv pip check --python /opt/venv/bin/python

ENV AIRFLOW__CORE__DAGS_FOLDER=/opt/revopt/dags \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    GX_ANALYTICS_ENABLED=false \
    GIT_PYTHON_REFRESH=quiet

USER airflow
WORKDIR /opt/airflow
# Compose gives each service its command (`airflow scheduler`, mlflow/serve.sh, ...).
ENTRYPOINT ["/usr/bin/dumb-init", "--"]
CMD ["airflow", "version"]
