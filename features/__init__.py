"""Feature pipelines: pure functions over DataFrames and SQL builders. No I/O, no Airflow."""
