"""Where node agent instances listen and the host their base_url carries (pure checks)."""

from __future__ import annotations

import socket

import pytest

from nodeagent import addresses


def test_the_advertised_host_defaults_to_the_instance_host() -> None:
    assert addresses.advertised("10.0.0.7", None, fqdn=lambda: "gpu-7.example.com") == "10.0.0.7"


@pytest.mark.parametrize("wildcard", ["0.0.0.0", "::"])
def test_a_wildcard_instance_host_advertises_the_machines_fully_qualified_name(
    wildcard: str,
) -> None:
    assert addresses.advertised(wildcard, None, fqdn=lambda: "gpu-7.example.com") == (
        "gpu-7.example.com"
    )


def test_a_wildcard_on_a_machine_whose_fqdn_is_localhost_advertises_its_host_name() -> None:
    assert addresses.advertised("0.0.0.0", None, fqdn=lambda: "localhost") == (socket.gethostname())


@pytest.mark.parametrize("host", ["gpu-7", "gpu-7.example.com.", "10.0.0.7", "fd00::7"])
def test_a_host_name_or_address_is_advertised_as_given(host: str) -> None:
    assert addresses.advertised("0.0.0.0", host) == host


@pytest.mark.parametrize(
    ("host", "says"),
    [
        ("0.0.0.0", "is a wildcard"),
        ("::", "is a wildcard"),
        ("http://gpu-7", "is not a host name"),
        ("gpu-7:8000", "is not a host name"),
        ("-gpu", "is not a host name"),
        ("a" * 64, "is not a host name"),
    ],
)
def test_an_advertised_host_that_no_client_can_use_is_refused(host: str, says: str) -> None:
    with pytest.raises(addresses.AddressError, match=says):
        addresses.advertised("0.0.0.0", host)


def test_an_ipv6_host_goes_in_brackets_and_a_wildcard_is_probed_on_loopback() -> None:
    assert addresses.url("fd00::7", 8000) == "http://[fd00::7]:8000"
    assert addresses.url(addresses.probed("::"), 8000) == "http://[::1]:8000"
    assert addresses.probed("0.0.0.0") == "127.0.0.1"
    assert addresses.probed("10.0.0.7") == "10.0.0.7"
