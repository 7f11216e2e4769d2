"""Model families, tuning, evaluation, registry and publishing. No Airflow imports."""
