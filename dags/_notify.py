"""revopt's failure notifier, attached to every task as ``on_failure_callback`` (``_support.DEFAULT_ARGS``).
Listed in ``.airflowignore`` (helpers, no DAG).

A task callback, not a DAG callback: it runs in the failed task's own process (under the scheduler and under
``airflow dags test`` alike), after the last retry, with the exception at hand, so the message can say what
went wrong and which data-quality expectation failed; a DAG callback runs in the DAG processor and only knows
the run failed. Tasks that never ran (upstream failed) send nothing, so one failure sends one message.

Where it goes: the ``revopt_notify`` connection's URL gets the JSON message (revopt.platform.notify); the
``revopt_notify_smtp`` connection (an SMTP connection, recipients in its extra ``{"to": [...]}``) gets an e-mail
through the SMTP provider. Neither set: one log line, nothing sent. A notification that cannot be delivered is
logged and never hides the task's own error.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk.bases.notifier import BaseNotifier

from _context import run_date_of

logger = logging.getLogger(__name__)


def _connection(conn_id: str):
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return Connection.get(conn_id)
    except AirflowNotFoundException:
        return None


class RevoptNotifier(BaseNotifier):
    """Posts a failed task's message to the webhook of ``conn_id`` and e-mails it through ``smtp_conn_id``."""

    def __init__(self, conn_id: str = "revopt_notify", smtp_conn_id: str = "revopt_notify_smtp"):
        super().__init__()
        self.conn_id = conn_id
        self.smtp_conn_id = smtp_conn_id

    def notify(self, context: dict[str, Any]) -> None:
        from revopt.platform.notify import email_html, failure_message, post_json, webhook_url

        webhook, smtp = _connection(self.conn_id), _connection(self.smtp_conn_id)
        if webhook is None and smtp is None:
            logger.info("no %s or %s connection: failure not notified", self.conn_id, self.smtp_conn_id)
            return
        ti = context["ti"]
        secrets = [c.password for c in (webhook, smtp) if c is not None and c.password]
        message = failure_message(
            dag_id=ti.dag_id, run_id=ti.run_id, run_date=run_date_of(context).isoformat(), task_id=ti.task_id,
            try_number=ti.try_number, error=context.get("exception"),
            log_url=ti.log_url, secrets=secrets)
        if webhook is not None:
            url = webhook_url(webhook.conn_type, webhook.host, webhook.port, webhook.schema, webhook.extra_dejson)
            try:
                post_json(url, message)
                logger.info("failure of %s notified to the %s webhook", ti.task_id, self.conn_id)
            except OSError as error:
                logger.warning("could not notify the %s webhook: %s", self.conn_id, type(error).__name__)
        if smtp is not None:
            self._email(smtp, message, email_html(message))

    def _email(self, smtp, message: dict[str, Any], html: str) -> None:
        from airflow.providers.smtp.hooks.smtp import SmtpHook

        recipients = smtp.extra_dejson.get("to")
        if not recipients:
            logger.warning("the %s connection has no recipients (extra 'to'): no e-mail sent", self.smtp_conn_id)
            return
        try:
            with SmtpHook(smtp_conn_id=self.smtp_conn_id) as hook:
                hook.send_email_smtp(to=recipients, subject=message["text"][:150], html_content=html,
                                     from_email=smtp.extra_dejson.get("from_email"))
        except Exception as error:  # never hide the task's own failure behind the mail server's
            logger.warning("could not e-mail through %s: %s", self.smtp_conn_id, type(error).__name__)
