"""The data-quality gate of every DAG as parallel tasks: each part of the extract is validated as soon as it ends
(``ml.pipeline.validate_extracts``), the tables part by ``validate_tables``, the events part by ``validate_events``
mapped over :data:`EVENT_VALIDATION_SHARES` shares of its datasets (balanced by size); then ``validate`` passes the
extract's paths on once every one passed (the gate downstream tasks wait for, and the run's note reads). Wiring only;
listed in ``.airflowignore`` like its neighbours.

The events part takes longest (at a million customers 320 s against the tables part's 180 s, docs/scale.md): the
tables' datasets are validated in that time, and a task that reads only them may start on the tables' gate
(:attr:`Validated.tables`: training's pricing family); the events' shares then have both worker slots.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from airflow.sdk import get_current_context, task

from _context import resources, run_date_of, run_params_of

#: Shares of the events part validated side by side (each a mapped ``validate_events`` task): the embedded stack's
#: two worker slots; with one slot they run one after the other, each paying a task's start (a few seconds).
EVENT_VALIDATION_SHARES = 2


def _validator(part: str):
    @task(task_id=f"validate_{part}", map_index_template="{{ share_label }}")
    def validate_part(extract_paths: list[dict[str, str]], purpose: str, share: int, shares: int,
                      **context) -> dict[str, str]:
        """Validate the ``share``-th of ``shares`` shares of ``extract_paths[-1]`` (this part's datasets; the parts
        before it are read to know the store's kind, e.g. one that keeps aggregated sales only)."""
        from ml.pipeline import validate_extracts
        from revopt.platform.extract import merged_extract

        get_current_context()["share_label"] = f"{share + 1} of {shares}"
        return validate_extracts(resources(), run_date_of(context), merged_extract(extract_paths),
                                 run_params_of(context).extract_days(purpose), (share, shares),
                                 only=extract_paths[-1])

    return validate_part


@task(task_id="validate")
def gate(extract_paths: list[dict[str, str]], passed: list[Any]) -> dict[str, str]:
    from revopt.platform.extract import merged_extract

    return merged_extract(extract_paths)


@dataclass(frozen=True)
class Validated:
    """The gate's outputs: ``all`` the extract's paths once every dataset passed (what the tasks after the gate
    read), ``tables`` the tables part's paths once its datasets passed."""

    all: Any
    tables: Any


def validate(extracted: dict[str, Any], purpose: str) -> Validated:
    """Wire the gate after ``extracted`` (the extract's tasks by part, ``_support.extract``) for the ``purpose``
    DAG."""
    tables, events = extracted["tables"], extracted["events"]
    tables_passed = _validator("tables")(extract_paths=[tables], purpose=purpose, share=0, shares=1)
    events_passed = _validator("events").partial(
        extract_paths=[tables, events], purpose=purpose, shares=EVENT_VALIDATION_SHARES,
    ).expand(share=list(range(EVENT_VALIDATION_SHARES)))
    return Validated(all=gate([tables, events], [tables_passed, events_passed]), tables=tables_passed)
