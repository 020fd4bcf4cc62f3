"""Which URLs and addresses loopline may call out to, and how a URL is shown in messages.

Pure: no I/O, no DNS. A target must be ``http`` or ``https``, carry no credentials, and not
name a link-local address, a cloud metadata service or an unspecified address (``0.0.0.0/8``,
``::``, which reach this host): those would turn an outbound call (a webhook, a lineage
endpoint) into a way to read the host's instance credentials.

The rules, in order:

- A host made only of numbers, dots and ``0x`` parts is an IPv4 literal. Only the dotted
  decimal form (``169.254.169.254``) is accepted; the legacy spellings the C resolver also
  takes (``2852039166``, ``0xa9fea9fe``, ``0251.0376.0251.0376``, ``169.254.43518``) are
  refused outright, loopback included, with a message naming the dotted form they mean:
  they have no honest use and exist to slip past filters like this one.
- An IPv6 literal that embeds an IPv4 address (IPv4-mapped ``::ffff:a.b.c.d``,
  IPv4-compatible ``::a.b.c.d``, NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``) is judged as
  the IPv4 address it embeds.
- Loopback and private addresses stay allowed (``127.0.0.1``, ``localhost``, ``[::1]``,
  ``10.x``): a local Marquez or a webhook receiver on the same network is a normal target.

Host names are not resolved here; ``check_address`` applies the same rules to each address
a name resolves to, and the outbound client (``outbound.http``) calls it before connecting.
"""

from __future__ import annotations

import ipaddress
import re
import socket

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
# 0.0.0.0/8 and :: mean "this host" to a connect() call on Linux: loopback by another name.
UNSPECIFIED_NETWORKS = (ipaddress.ip_network("0.0.0.0/8"), ipaddress.ip_network("::/128"))
NAT64_NETWORK = ipaddress.ip_network("64:ff9b::/96")  # the low 32 bits are an IPv4 address
IPV4_COMPATIBLE_NETWORK = ipaddress.ip_network("::/96")  # deprecated ::a.b.c.d
# One label of a numeric IPv4 spelling: decimal, octal (leading 0) or hex (0x...).
_NUMERIC_LABEL = re.compile(r"0x[0-9a-f]*|[0-9]+")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def display_url(url: httpx.URL | str) -> str:
    """Return only the origin of ``url`` (``scheme://host[:port]``), for messages.

    Paths and query strings often carry secrets (a Slack-style webhook's path is its token,
    ``?token=...``), and user info is a password, so no message shows any of them.
    """
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return "<unparseable URL>"
    port = f":{parsed.port}" if parsed.port is not None else ""
    host = f"[{parsed.host}]" if ":" in parsed.host else parsed.host
    return f"{parsed.scheme}://{host}{port}"


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """Return the IPv4 address an IPv6 address carries and may be routed to, if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64_NETWORK:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in IPV4_COMPATIBLE_NETWORK and int(address) > 1:  # not :: nor ::1
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_problem(address: IPAddress) -> str | None:
    """Return why a connection to ``address`` is not allowed, or None when it is."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            reason = address_problem(embedded)
            return None if reason is None else f"{address} embeds {embedded}; {reason}"
    for network in UNSPECIFIED_NETWORKS:
        if address.version == network.version and address in network:
            return f"address {address} is unspecified (it reaches this host)"
    for network in FORBIDDEN_NETWORKS:
        if address.version == network.version and address in network:
            return f"address {address} is link-local or a cloud metadata service"
    return None


def _numeric_host_problem(name: str) -> str | None:
    """Judge a host spelled only with numbers: dotted decimal, or refused with the fix."""
    try:
        return address_problem(ipaddress.IPv4Address(name))  # dotted decimal, no leading 0
    except ValueError:
        pass
    try:
        meant = socket.inet_ntoa(socket.inet_aton(name))  # the legacy forms connect() takes
    except OSError:
        return f"host {name!r} looks like an IP address but is not a valid one"
    reason = address_problem(ipaddress.IPv4Address(meant))
    spelled = f"host {name!r} is a non-standard spelling of {meant}"
    if reason is not None:
        return f"{spelled}; {reason}"
    return f"{spelled}; write IP addresses in dotted decimal form ({meant})"


def _host_problem(host: str) -> str | None:
    """Return why ``host`` (a name or a literal address) may not be called, or None."""
    name = host.lower().rstrip(".")
    if name in METADATA_HOSTS:
        return f"host {name!r} is a cloud metadata service"
    if all(_NUMERIC_LABEL.fullmatch(label) for label in name.split(".")):
        return _numeric_host_problem(name)
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return None  # a name: the client checks what it resolves to (check_address)
    return address_problem(address)


def _refuse(field: str, url: httpx.URL, problem: str) -> InvalidArgumentError:
    return InvalidArgumentError(field, f"{display_url(url)!r} is not allowed: {problem}")


def check_url(url: str | httpx.URL, field: str = "url") -> httpx.URL:
    """Return ``url`` parsed when loopline may call it.

    Raises:
        InvalidArgumentError: naming ``field`` when the URL does not parse, is not http or
            https, has no host, carries a user name or password, or names a link-local,
            metadata or unspecified address, a cloud metadata host, or an IPv4 address in
            a spelling other than dotted decimal. The message shows only the URL's origin.
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
    problem = _host_problem(parsed.host)
    if problem is not None:
        raise _refuse(field, parsed, problem)
    return parsed


def check_address(url: httpx.URL, address: str, field: str = "url") -> IPAddress:
    """Return ``address``, one that ``url``'s host resolved to, when it may be connected to.

    Raises:
        InvalidArgumentError: naming ``field`` when the address is link-local, a cloud
            metadata service or unspecified (so a DNS name cannot point a call at one), or
            is not an IP address at all.
    """
    try:
        parsed = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError as exc:
        raise _refuse(field, url, f"{address!r} is not an IP address") from exc
    problem = address_problem(parsed)
    if problem is not None:
        raise _refuse(field, url, f"host {url.host!r} resolves to {parsed}: {problem}")
    return parsed
