"""The data-quality gate of every DAG as parallel tasks: ``validate_share`` mapped over :data:`VALIDATION_SHARES`
shares of the extract's datasets (``ml.pipeline.validate_extracts``, the shares balanced by size), then ``validate``,
which passes the extract's paths on once every share passed (the gate downstream tasks wait for, and the run's
note reads). Wiring only; listed in ``.airflowignore`` like its neighbours.

At a million customers one task validated the night's datasets in 97 s while the other worker waited
(docs/scale.md); two shares validate side by side, each in its own process and memory.
"""

from __future__ import annotations

from airflow.sdk import get_current_context, task

from _context import resources, run_date_of, run_params_of

#: Shares of the extract validated side by side (each a mapped ``validate_share`` task): the embedded stack's two
#: worker slots; with one slot they run one after the other, each paying a task's start (a few seconds).
VALIDATION_SHARES = 2


@task(map_index_template="{{ share_label }}")
def validate_share(extract_paths: list[dict[str, str]], purpose: str, share: int, **context) -> dict[str, str]:
    from ml.pipeline import validate_extracts
    from revopt.platform.extract import merged_extract

    get_current_context()["share_label"] = f"{share + 1} of {VALIDATION_SHARES}"
    return validate_extracts(resources(), run_date_of(context), merged_extract(extract_paths),
                             run_params_of(context).extract_days(purpose), (share, VALIDATION_SHARES))


@task(task_id="validate")
def gate(extract_paths: list[dict[str, str]], shares: list[dict[str, str]]) -> dict[str, str]:
    from revopt.platform.extract import merged_extract

    return merged_extract(extract_paths)


def validate(extracted, purpose: str):
    """Wire the gate after ``extracted`` (the mapped extract task's paths, one dict per part) for the ``purpose``
    DAG; returns the extract's paths, one dict, available once every share passed."""
    shares = validate_share.partial(extract_paths=extracted, purpose=purpose).expand(share=list(range(VALIDATION_SHARES)))
    return gate(extracted, shares)
