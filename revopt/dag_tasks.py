"""Tasks and settings shared by the revopt DAGs: wiring only, and the one revopt module that
imports Airflow (only DAG files import it; business code never does).

Each task imports one function from ``ml`` / ``revopt`` inside its body, calls it with the run
date and the run's params, and returns a small reference for XCom.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Asset, ExceptionRetryPolicy, Param, RetryAction, RetryRule, task
from airflow.sdk.exceptions import AirflowSkipException

# Retry what can heal by itself (a database restarting, a network blip); fail at once on bad
# data or bad settings, where a retry would only repeat the same answer later.
RETRY_POLICY = ExceptionRetryPolicy(
    rules=[
        RetryRule(
            exception=["revopt.validation.DataValidationError", "builtins.ValueError", "builtins.LookupError"],
            action=RetryAction.FAIL,
            reason="bad input data or settings: retrying cannot fix it",
        )
    ]
)

DEFAULT_ARGS = {
    "retries": 2,
    "retry_delay": timedelta(minutes=1),
    "retry_exponential_backoff": True,
    "retry_policy": RETRY_POLICY,
}

LOOKBACK_PARAM = Param(730, type="integer", minimum=30, description="History read before the run date (days).")
PRICE_PARAMS = {
    "price_min_margin": Param(0.10, type="number", minimum=0, description="Recommended price >= cost x (1 + this)."),
    "price_max_change": Param(0.10, type="number", minimum=0, maximum=0.99, description="Largest price move per run, as a share of the current price."),
    "price_ending": Param(None, type=["null", "number"], minimum=0, maximum=0.99, description="Price ending, e.g. 0.99; empty for whole cents."),
    "price_horizon_days": Param(7, type="integer", minimum=1, description="Days the expected units / revenue / profit cover."),
    "price_exclude_categories": Param(["postage", "fee", "adjustment", "gift_voucher"], type="array", items={"type": "string"},
                                      description="Product categories never priced (services, fees, vouchers)."),
}
SEND_TIME_PARAMS = {
    "send_quiet_start": Param(23, type="integer", minimum=0, maximum=23, description="Quiet hours start (local hour): nothing is recommended from here ..."),
    "send_quiet_end": Param(6, type="integer", minimum=0, maximum=23, description="... up to (not including) this local hour. Equal start and end: no quiet hours."),
    "default_send_hour": Param(10, type="integer", minimum=0, maximum=23, description="The store's default send hour (local), the baseline the lift is measured against."),
}
BUDGET_PARAMS = {
    "budget_total": Param(None, type=["null", "number"], minimum=0, description="Total daily marketing budget to allocate; empty for the current total."),
    "budget_max_change": Param(0.3, type="number", minimum=0, description="Largest change per channel vs its current daily spend, as a share."),
    "budget_min_spend": Param({}, type="object", description='Minimum daily spend per channel, e.g. {"display": 100}.'),
    "budget_max_spend": Param({}, type="object", description='Maximum daily spend per channel, e.g. {"paid_search": 5000}.'),
    "budget_horizon_days": Param(28, type="integer", minimum=1, description="Days the expected revenue figures cover."),
}
DRIFT_SHARE_PARAM = Param(0.3, type="number", minimum=0, maximum=1, description="Request retraining when more than this share of the features drifted from the training reference.")
#: Updated by the nightly DAG when the drift check requests retraining; the training DAG runs on it
#: (as well as weekly).
DRIFT_DETECTED = Asset(name="revopt_drift_detected", uri="revopt://drift/detected")
ACTIVE_DAYS_PARAM = Param(365, type="integer", minimum=1, description="A customer is active (gets a churn score) with an order this recently (days).")


def skip_if_skipped(result):
    """A workflow's result, or the task ends as *skipped* (and so do the tasks after it) when the
    workflow skipped its family (``{"skipped": reason}``, e.g. budget for a store without spend)."""
    if isinstance(result, dict) and "skipped" in result:
        raise AirflowSkipException(result["skipped"])
    return result


@task
def extract(purpose: str, **context) -> dict[str, str]:
    """The datasets the ``purpose`` DAG reads (``revopt.extract.DAG_DATASETS``: training or nightly)."""
    from revopt.config import load_settings
    from revopt.extract import DAG_DATASETS, extract_sources
    from revopt.runctx import run_date_of

    return extract_sources(load_settings(), run_date_of(context), context["params"]["lookback_days"],
                           datasets=DAG_DATASETS[purpose])


@task
def validate(extract_paths: dict[str, str], **context) -> dict[str, str]:
    from ml.workflows import validate_extracts
    from revopt.config import load_settings
    from revopt.runctx import run_date_of

    return validate_extracts(load_settings(), run_date_of(context), extract_paths, context["params"]["lookback_days"])
