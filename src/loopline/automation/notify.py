"""``notify``: a log line always, and a signed webhook POST when the step names a URL.

Delivery is at least once, not exactly once: the POST is an effect outside the database, so
no transaction can hold it together with the action's state. The action is marked ``done``
only after the receiver answered 2xx; a worker killed after the receiver got the POST and
before that mark sends it again. Every delivery of one action carries the same
``Idempotency-Key`` (the action's id) and the same body, so the receiver drops repeats. The
body is signed (``automation.signing``: HMAC-SHA256 over the timestamp and the raw body with
the workspace's webhook secret); a step with a URL and no secret configured fails rather
than send an unsigned body. The call goes through ``loopline.outbound`` (URL and address
checks, timeouts) with no redirect followed: a 301/302/303 would turn the signed POST into a
bodyless GET that then answers 2xx and would count as delivered, so any 3xx fails the action
at once, saying to configure the final URL. A refused URL fails it at once too; a timeout or
an error status is retried with backoff (``AutomationOptions``). Only the URL's origin is
kept in the result, the audit and the events: a webhook's path often is its secret.

Params: ``url`` (optional), ``message`` (optional text put in the body and the log line).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from loopline.automation import signing
from loopline.automation.held import Held
from loopline.automation.ports import Tools
from loopline.core.errors import ConfigurationError, InvalidArgumentError
from loopline.core.monitoring import ActionState
from loopline.outbound import TooManyRedirectsError, display_url
from loopline.store.playbook_records import ActionQueries

__all__ = ["EVENT_TYPE", "body_of", "perform"]

log = logging.getLogger(__name__)
EVENT_TYPE = "loopline.playbook.notify"
MAX_MESSAGE = 2_000


def _message(held: Held) -> str | None:
    given = held.params.get("message")
    if given is None:
        return None
    if not isinstance(given, str) or len(given) > MAX_MESSAGE:
        raise InvalidArgumentError("params.message", f"must be text of at most {MAX_MESSAGE} "
                                                     "characters")
    return given


def body_of(held: Held, tools: Tools) -> dict[str, Any]:
    """Return the JSON body: the alert, the message, and what the earlier steps did."""
    earlier = [a for a in ActionQueries(tools.ports.store.engine).list(held.action.alert_id)
               if a.step < held.action.step]
    return {"type": EVENT_TYPE, "action_id": held.action.id, "playbook": held.action.playbook,
            "step": held.action.step, "alert": held.alert.as_record(),
            "message": _message(held), "created_at": held.action.created_at.isoformat(),
            "steps": [{"step": a.step, "kind": str(a.kind), "state": str(a.state),
                       "result": {k: v for k, v in a.result.items() if k != "alert"}}
                      for a in sorted(earlier, key=lambda a: a.step)]}


def perform(held: Held, tools: Tools) -> None:
    """Log the alert, POST the signed body when a URL is set, and mark the action done.

    Raises:
        InvalidArgumentError: naming ``params.url`` or ``params.message`` (the action fails).
        ConfigurationError: when a URL is set and no webhook secret is (the action fails).
        InvalidArgumentError: also when the receiver answers a redirect (3xx).
        BackendError: when the call times out or the receiver answers an error status
            (the action is retried with backoff).
    """
    alert = held.alert
    body = body_of(held, tools)
    log.warning("alert %s (rule %s, severity %s, value %s) on deployment %s: playbook %s "
                "step %d notify%s", alert.alert_id, alert.rule, alert.severity, alert.value,
                alert.deployment, held.action.playbook, held.action.step,
                f": {body['message']}" if body["message"] else "")
    url = held.params.get("url")
    if url is None:
        held.move(ActionState.DONE, {"logged": True})
        return
    if not isinstance(url, str):
        raise InvalidArgumentError("params.url", "must be an http(s) URL")
    secret = tools.options.webhook_secret
    if secret is None:
        raise ConfigurationError("notify has a webhook URL but no webhook secret is set "
                                 "(LOOPLINE_WEBHOOK_SECRET): refusing to send an unsigned "
                                 "body")
    raw = signing.body_bytes(body)
    headers = signing.signed_headers(secret, int(time.time()), raw, held.action.id)
    try:
        status = tools.client.post_json(url, body, headers)
    except TooManyRedirectsError as exc:  # the client follows none: any 3xx lands here
        raise InvalidArgumentError("params.url", f"{display_url(url)} answered with a "
                                   "redirect, which a webhook does not follow (the signed "
                                   "POST would become a GET): give the final URL") from exc
    if not 200 <= status < 300:
        raise InvalidArgumentError("params.url", f"{display_url(url)} answered HTTP {status}, "
                                                 "not 2xx")
    held.move(ActionState.DONE, {"logged": True, "status_code": status,
                                 "url": display_url(url)})
