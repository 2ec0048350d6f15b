"""Where instances listen and the address they are advertised under.

``llmctl node serve`` calls `check_instance_host` on ``--instance-host`` (the address every
``vllm serve`` binds: an IP address of this machine, ``localhost``, or ``0.0.0.0`` / ``::`` for
every interface) and `advertised` for ``--advertise-host`` (the host put in each instance's
``base_url``, what the controller hands to the resolver and gateways on other hosts). The
default advertised host is the instance host itself, except for a wildcard, which no client can
connect to: then it is this machine's fully-qualified name (`socket.getfqdn`, or the plain host
name when that is only ``localhost``). `probed` is where the agent's own probes connect: a
wildcard is reached on loopback. `url` formats ``http://host:port``, with brackets for IPv6.
Checks only; must not keep sockets open or decide what runs.
"""

from __future__ import annotations

import errno
import ipaddress
import re
import socket
from collections.abc import Callable

WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


class AddressError(ValueError):
    """An instance or advertised host that cannot be used; the message names the fix."""


def is_wildcard(host: str) -> bool:
    """Does binding `host` listen on every interface?"""
    return host in WILDCARDS


def probed(host: str) -> str:
    """The address the agent's probes use to reach an instance bound to `host`."""
    return WILDCARDS.get(host, host)


def url(host: str, port: int) -> str:
    """``http://host:port``; an IPv6 address goes in brackets."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def check_instance_host(host: str) -> None:
    """Raises AddressError unless instances can bind `host` on this machine."""
    fix = "give an IP address of this machine, or 0.0.0.0 or :: for every interface"
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise AddressError(f"--instance-host {host!r} is not an IP address: {fix}") from None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
    except OSError as exc:
        reason = "not an address of this machine" if exc.errno == errno.EADDRNOTAVAIL else None
        raise AddressError(
            f"--instance-host {host!r} cannot be bound ({reason or exc.strerror}): {fix}"
        ) from None


def advertised(
    instance_host: str, advertise: str | None, fqdn: Callable[[], str] = socket.getfqdn
) -> str:
    """The host in each instance's base_url: `advertise`, checked, or the default above.

    Raises AddressError for an `advertise` that is not a host name or IP address, or a wildcard.
    """
    if advertise is None:
        return _machine_name(fqdn) if is_wildcard(instance_host) else instance_host
    fix = "give a host name or IP address other hosts reach this machine at (gpu-7.example.com)"
    if is_wildcard(advertise):
        raise AddressError(f"--advertise-host {advertise!r} is a wildcard, not an address: {fix}")
    try:
        ipaddress.ip_address(advertise)
        return advertise
    except ValueError:
        pass
    labels = advertise.removesuffix(".").split(".")
    if len(advertise) > 253 or not all(_LABEL.match(label) for label in labels):
        raise AddressError(f"--advertise-host {advertise!r} is not a host name: {fix}")
    return advertise


def _machine_name(fqdn: Callable[[], str]) -> str:
    name = fqdn()
    if name == "localhost" or name.startswith("localhost."):
        return socket.gethostname()
    return name
