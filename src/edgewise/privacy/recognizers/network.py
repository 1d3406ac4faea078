"""The organisation's own infrastructure: internal host names and private IP addresses.

* ``INTERNAL_HOSTNAME``: a dotted name ending in one of ``privacy.internal_domains``
  (``db1.corp``, ``build-07.eu.factory.internal``, ``printer.home.arpa``), with or
  without a URL around it.
* ``PRIVATE_IP``: IPv4 in RFC 1918 (10/8, 172.16/12, 192.168/16), loopback 127/8,
  link-local 169.254/16 and carrier-grade NAT 100.64/10; IPv6 unique-local fc00::/7 and
  link-local fe80::/10. Presidio's ``IP_ADDRESS`` (``pii``: a public address can identify
  a subscriber) also fires on these; the detector drops that duplicate, so a private
  address is ``internal``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

from edgewise.privacy.recognizers.base import RegexRecognizer, Rule

__all__ = ["NetworkRecognizer", "is_private_ip"]

_PRIVATE_V4 = tuple(ipaddress.IPv4Network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "169.254.0.0/16",
    "100.64.0.0/10"))
_PRIVATE_V6 = tuple(ipaddress.IPv6Network(n) for n in ("fc00::/7", "fe80::/10", "::1/128"))


def is_private_ip(value: str) -> bool:
    """Whether ``value`` is a non-routable IPv4/IPv6 address (see module docstring)."""
    try:
        ip = ipaddress.ip_address(value.split("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv4Address):
        return any(ip in net for net in _PRIVATE_V4)
    return any(ip in net for net in _PRIVATE_V6)


def _rules(domains: Sequence[str]) -> list[Rule]:
    rules = [
        Rule("PRIVATE_IP", "private ipv4",
             re.compile(r"(?<![0-9.])(?:\d{1,3}\.){3}\d{1,3}(?![0-9]|\.\d)"), 0.9,
             validate=is_private_ip),
        Rule("PRIVATE_IP", "private ipv6",
             re.compile(r"(?<![0-9A-Fa-f:])(?:f[cd][0-9a-f]{2}|fe[89ab][0-9a-f])"
                        r":[0-9a-f:]{2,36}(?:%[A-Za-z0-9]+)?(?![0-9A-Fa-f:])", re.IGNORECASE),
             0.9, validate=is_private_ip),
    ]
    if domains:
        suffix = "|".join(re.escape(d.strip(".")) for d in
                          sorted(domains, key=len, reverse=True))
        rules.append(Rule(
            "INTERNAL_HOSTNAME", "internal host name",
            re.compile(r"(?<![A-Za-z0-9\-.])(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+"
                       r"(?:" + suffix + r")(?![A-Za-z0-9\-]|\.[A-Za-z0-9])", re.IGNORECASE),
            0.85))
    return rules


class NetworkRecognizer(RegexRecognizer):
    """``INTERNAL_HOSTNAME`` (suffixes from ``privacy.internal_domains``) and ``PRIVATE_IP``."""

    def __init__(self, internal_domains: Sequence[str]) -> None:
        super().__init__("EdgewiseNetworkRecognizer", _rules(internal_domains))
