"""What a failure notification says and how it is sent: a JSON message posted to a webhook (Slack-, Teams- or
any HTTP receiver) and, when configured, an e-mail. The Airflow side (``dags/_notify.py``) is a thin
``BaseNotifier`` that reads the connection and calls :func:`failure_message` and :func:`post_json`.

A message names the DAG, the run date, the failed task, the error's first lines and, when a data-quality gate
stopped the run, the dataset, columns and expectations that failed, plus the task's log URL. It never carries
secrets: URLs with credentials and ``password=...``-like settings are masked (:func:`redact`), and so is any
secret the caller knows (the connection's password).

Written with the standard library (``urllib``): one JSON POST does not justify a client dependency.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterable, Mapping
from typing import Any

#: Lines of the error kept in a message.
ERROR_LINES = 12
#: The exception a failed expectation suite raises (``revopt.platform.validation``), by name: the notifier must not
#: import Great Expectations to recognise it.
DATA_QUALITY_ERROR = "DataValidationError"

_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/@\s:]*(?::[^/@\s]*)?)@")
_SECRET_SETTING = re.compile(r"(?i)\b(password|passwd|pwd|secret|token|api[_-]?key)(\s*[=:]\s*)(['\"]?)[^\s'\",;&]+")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with credentials in URLs, ``password=...``-like settings and every one of ``secrets`` masked."""
    text = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}***@", text)
    text = _SECRET_SETTING.sub(lambda m: f"{m[1]}{m[2]}{m[3]}***", text)
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def failure_message(*, dag_id: str, run_id: str, run_date: str, task_id: str, try_number: int | None,
                    error: BaseException | str | None, log_url: str | None,
                    secrets: Iterable[str] = ()) -> dict[str, Any]:
    """The JSON message for a failed task. ``kind`` is ``data_quality`` when a data-quality gate failed (then
    ``data_quality`` lists the failed datasets and expectations) and ``task_failure`` otherwise; ``text`` is a
    one-paragraph summary for chat webhooks."""
    secrets = [s for s in secrets if s]
    error_type = type(error).__name__ if isinstance(error, BaseException) else None
    error_text = redact(str(error or "no error recorded"), secrets)
    lines = [line for line in error_text.splitlines() if line.strip()]
    quality = _data_quality_error(error)
    message: dict[str, Any] = {
        "kind": "task_failure" if quality is None else "data_quality",
        "dag_id": dag_id, "run_id": run_id, "run_date": run_date, "task_id": task_id, "try_number": try_number,
        "error_type": error_type, "error": "\n".join(lines[:ERROR_LINES]),
        "log_url": log_url,
    }
    if quality is not None:
        failed = [line.strip() for line in redact(str(quality), secrets).splitlines() if line.strip()]
        message["data_quality"] = [line.removeprefix("- ").strip() for line in failed[:ERROR_LINES]]
    stop = "task failed in" if quality is None else "data-quality gate stopped"
    first = lines[0] if lines else ""
    message["text"] = (f"revopt: {stop} {dag_id} for run date {run_date}: task {task_id} "
                       f"({error_type or 'error'}: {first[:300]})" + (f" - log: {log_url}" if log_url else ""))
    return message


def _data_quality_error(error: BaseException | str | None) -> BaseException | None:
    """The data-quality error ``error`` is or was raised from, if any."""
    seen = set()
    while isinstance(error, BaseException) and id(error) not in seen:
        seen.add(id(error))
        if any(cls.__name__ == DATA_QUALITY_ERROR for cls in type(error).__mro__):
            return error
        error = error.__cause__ or error.__context__
    return None


def webhook_url(conn_type: str | None, host: str | None, port: int | None, schema: str | None,
                extra: Mapping[str, Any]) -> str | None:
    """The URL an Airflow connection names: its extra's ``url``, a ``host`` that is a whole URL, or
    ``{conn_type}://{host}[:{port}]/{schema}`` (``AIRFLOW_CONN_REVOPT_NOTIFY='http://127.0.0.1:9000/hook'``)."""
    if extra.get("url"):
        return str(extra["url"])
    if not host:
        return None
    if "://" in host:
        return host.rstrip("/") + (f"/{schema}" if schema else "")
    scheme = conn_type if conn_type in ("http", "https") else "https"
    return f"{scheme}://{host}" + (f":{port}" if port else "") + (f"/{schema}" if schema else "")


def post_json(url: str, message: Mapping[str, Any], headers: Mapping[str, str] | None = None,
              timeout: float = 10.0) -> int:
    """POST ``message`` as JSON to ``url``; the HTTP status. Raises ``OSError`` (``urllib.error.URLError``) when
    the receiver cannot be reached or answers with an error."""
    request = urllib.request.Request(url, data=json.dumps(message, default=str).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (URL from a connection)
        return response.status


def email_html(message: Mapping[str, Any]) -> str:
    """The message as a small HTML e-mail body."""
    from html import escape

    rows = "".join(f"<tr><th align='left'>{escape(str(key))}</th><td><pre>{escape(str(value))}</pre></td></tr>"
                   for key, value in message.items() if key != "text" and value not in (None, ""))
    return f"<p>{escape(str(message.get('text', '')))}</p><table>{rows}</table>"
