"""When each customer was last contacted by email, from the ClickHouse events: the next-best-action step's
contact-frequency cap (:mod:`ml.personalisation.nba`) adds the actions revopt published itself."""

from __future__ import annotations

import pandas as pd

from revopt.platform.events import clickhouse_time
from revopt.platform.identity import events_source

# The email sends per customer in [since, until): how many, and the latest.
_SENDS_SQL = """
SELECT toInt64(customer_id) AS customer_id, toInt64(count()) AS contacts, max(event_time) AS last_contact_ts
FROM {events}
WHERE event_type = 'email_send' AND customer_id > 0
  AND event_time >= {{since:DateTime64(3, 'UTC')}} AND event_time < {{until:DateTime64(3, 'UTC')}}
GROUP BY customer_id
ORDER BY customer_id
"""

CONTACT_COLUMNS = ("customer_id", "contacts", "last_contact_ts")


def email_sends(store, since: pd.Timestamp, until: pd.Timestamp) -> pd.DataFrame:
    """Each customer's email sends in ``[since, until)``: how many and the latest (:data:`CONTACT_COLUMNS`,
    UTC); no rows without a clickstream (``store`` None)."""
    if store is None:
        return typed_contacts(pd.DataFrame(columns=list(CONTACT_COLUMNS)))
    frame = store.query_df(_SENDS_SQL.format(events=events_source(store, until="until")),
                           {"since": clickhouse_time(since), "until": clickhouse_time(until)})
    return typed_contacts(frame)


def typed_contacts(frame: pd.DataFrame) -> pd.DataFrame:
    """:data:`CONTACT_COLUMNS` with their types: customer_id and contacts int64, last_contact_ts UTC."""
    return pd.DataFrame({"customer_id": frame["customer_id"].astype("int64"),
                         "contacts": frame["contacts"].astype("int64"),
                         "last_contact_ts": pd.to_datetime(frame["last_contact_ts"], utc=True)})

