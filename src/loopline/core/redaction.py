"""Hiding secrets in text shown to people: credentials inside URLs.

Pure: no I/O. Used wherever a URL given by a user may be echoed (errors, status, logs).
"""

from __future__ import annotations

import re

_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*:)?//(?P<user>[^/:@\s]*):[^/@\s]*@")


def redact_text(text: str) -> str:
    """Hide ``user:password@`` in any URL inside ``text``, even one that does not parse."""
    return _CREDENTIALS.sub(lambda m: f"{m['scheme'] or ''}//{m['user']}:***@", text)
