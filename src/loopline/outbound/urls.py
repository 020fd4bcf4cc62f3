"""Which URLs loopline may call out to, and how a URL is shown in messages.

Pure: no I/O, no DNS. A target must be ``http`` or ``https``, carry no credentials, and not
name a link-local address or a cloud metadata service by a literal IP or a well-known name:
those would turn an outbound call (a webhook, a lineage endpoint) into a way to read the
host's instance credentials. Names are not resolved, so a name that resolves to such an
address is not caught here; loopback and private addresses stay allowed, because a local
Marquez or a webhook receiver on the same network is a normal target.
"""

from __future__ import annotations

import ipaddress

import httpx

from loopline.core.errors import InvalidArgumentError

ALLOWED_SCHEMES = frozenset({"http", "https"})
# Names the cloud providers' instance metadata services answer to.
METADATA_HOSTS = frozenset({
    "metadata.google.internal", "metadata.goog", "metadata",
    "instance-data", "instance-data.ec2.internal", "metadata.azure.internal",
})
FORBIDDEN_NETWORKS = (
    ipaddress.ip_network("169.254.0.0/16"),  # IPv4 link-local: AWS, GCP, Azure metadata
    ipaddress.ip_network("fe80::/10"),  # IPv6 link-local
    ipaddress.ip_network("fd00:ec2::254/128"),  # AWS metadata over IPv6
    ipaddress.ip_network("100.100.100.200/32"),  # Alibaba Cloud metadata
)


def display_url(url: httpx.URL | str) -> str:
    """Return ``url`` without credentials, query string or fragment, for messages.

    A query string often carries tokens (``?token=...``), so no message shows one.
    """
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return "<unparseable URL>"
    port = f":{parsed.port}" if parsed.port is not None else ""
    host = f"[{parsed.host}]" if ":" in parsed.host else parsed.host
    return f"{parsed.scheme}://{host}{port}{parsed.path}"


def _forbidden_host(host: str) -> str | None:
    """Return why ``host`` may not be called, or None when it may."""
    name = host.lower().rstrip(".")
    if name in METADATA_HOSTS:
        return f"host {name!r} is a cloud metadata service"
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return None  # a name: not resolved here (see the module docstring)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:169.254.169.254 is the same host
    for network in FORBIDDEN_NETWORKS:
        if address.version == network.version and address in network:
            return f"address {name} is link-local or a cloud metadata service"
    return None


def check_url(url: str | httpx.URL, field: str = "url") -> httpx.URL:
    """Return ``url`` parsed when loopline may call it.

    Raises:
        InvalidArgumentError: naming ``field`` when the URL does not parse, is not http or
            https, has no host, carries a user name or password, or names a link-local
            address or a cloud metadata host. The message never shows the query string.
    """
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(str(url))
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise InvalidArgumentError(field, "is not a valid URL") from exc
    shown = display_url(parsed)
    if parsed.scheme not in ALLOWED_SCHEMES:
        raise InvalidArgumentError(
            field, f"{shown!r} must be an http:// or https:// URL")
    if not parsed.host:
        raise InvalidArgumentError(field, f"{shown!r} names no host")
    if parsed.userinfo:
        raise InvalidArgumentError(
            field, f"{shown!r} must not carry a user name or password; "
                   "pass credentials as a header (an API key) instead")
    reason = _forbidden_host(parsed.host)
    if reason is not None:
        raise InvalidArgumentError(field, f"{shown!r} is not allowed: {reason}")
    return parsed
