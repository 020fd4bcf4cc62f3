"""Layer L1: outbound HTTP calls to other systems, made through one bounded client.

Imports only the standard library, ``loopline.core`` and httpx. Every call loopline makes
to another system (OpenLineage endpoints, webhooks) goes through ``OutboundClient``, so the
URL checks, timeouts, redirect and response limits hold everywhere.

    urls.py   check_url (which targets are allowed) and display_url (how messages show one)
    http.py   OutboundClient, OutboundLimits and TooManyRedirectsError
"""

from loopline.outbound.http import OutboundClient, OutboundLimits, TooManyRedirectsError
from loopline.outbound.urls import check_url, display_url

__all__ = ["OutboundClient", "OutboundLimits", "TooManyRedirectsError", "check_url",
           "display_url"]
