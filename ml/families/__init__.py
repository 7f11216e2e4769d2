"""revopt's model families, each implementing :class:`ml.family.Family`.

Every family is a module (or a subpackage split by concern) here exporting ``FAMILY``, its
:class:`ml.family.Family`, and ``MODEL_NAME``, its registered model's name.
"""

from ml.families import budget, churn, clv, pricing, propensity, recommend, send_time, uplift

#: Every family revopt trains and scores. A new family: its module here and one line in this tuple.
FAMILIES = (
    propensity.FAMILY,
    churn.FAMILY,
    clv.FAMILY,
    pricing.FAMILY,
    send_time.FAMILY,
    budget.FAMILY,
    recommend.FAMILY,
    uplift.FAMILY,
)
