# The revopt image: Airflow 3 with revopt, its locked dependencies, the DAGs, models, feature
# code, expectations and the MLflow server script baked in. Every Airflow service of
# docker-compose.yaml and the MLflow server run it, so tasks, the DAG processor and the tracking
# server share one set of library versions (the ones `requirements.lock` pins for the tests).
#
# The base image's Airflow and Python must equal the lock's `apache-airflow==` pin and the
# project's Python (tests/unit/test_compose.py checks both).
FROM apache/airflow:3.3.2-python3.11

# Dependencies first: this layer is rebuilt only when the lock changes. Naming the base image's
# Airflow next to the lock makes a lock that pins another Airflow fail here, not at run time.
COPY --chown=airflow:0 requirements.lock /opt/revopt/requirements.lock
RUN uv pip install --no-cache "apache-airflow==${AIRFLOW_VERSION}" -r /opt/revopt/requirements.lock

# The project, installed in editable mode from /opt/revopt so that the DAG folder and the
# expectation suites stay next to the packages (revopt finds expectations/ relative to itself).
COPY --chown=airflow:0 pyproject.toml README.md /opt/revopt/
COPY --chown=airflow:0 revopt/ /opt/revopt/revopt/
COPY --chown=airflow:0 features/ /opt/revopt/features/
COPY --chown=airflow:0 ml/ /opt/revopt/ml/
COPY --chown=airflow:0 expectations/ /opt/revopt/expectations/
COPY --chown=airflow:0 dags/ /opt/revopt/dags/
COPY --chown=airflow:0 mlflow/ /opt/revopt/mlflow/
COPY --chown=airflow:0 docker/ /opt/revopt/docker/
RUN uv pip install --no-cache --no-deps -e /opt/revopt \
 && mkdir -p /opt/airflow/revopt /opt/airflow/auth /opt/airflow/mlartifacts \
 && chmod -R g+rwX /opt/airflow/revopt /opt/airflow/auth /opt/airflow/mlartifacts

ENV AIRFLOW__CORE__DAGS_FOLDER=/opt/revopt/dags \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    GX_ANALYTICS_ENABLED=false
