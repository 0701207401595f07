"""The SSRF address policy (typecase.server.infra.ssrf), table-driven: which addresses count as public, what an
IPv6 address embeds, and the operator's exceptions."""

from __future__ import annotations

import ipaddress

import pytest

from typecase.server.infra.ssrf import AddressPolicy, Blocked, embedded_ipv4, is_public

NOT_PUBLIC = [
    ("127.0.0.1", "IPv4 loopback"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("192.168.0.1", "private"),
    ("169.254.169.254", "link-local (cloud metadata)"),
    ("100.64.0.1", "shared address space (CGNAT)"),
    ("0.0.0.0", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("198.18.0.1", "benchmarking"),
    ("::1", "IPv6 loopback"),
    ("::", "IPv6 unspecified"),
    ("fe80::1", "link-local"),
    ("fc00::1", "unique local"),
    ("ff02::1", "IPv6 multicast"),
    ("::ffff:127.0.0.1", "IPv4-mapped loopback"),
    ("::ffff:10.0.0.1", "IPv4-mapped private"),
    ("::127.0.0.1", "IPv4-compatible loopback"),
    ("::10.0.0.1", "IPv4-compatible private"),
    ("::169.254.169.254", "IPv4-compatible metadata"),
    ("64:ff9b::127.0.0.1", "NAT64 (well-known prefix) of loopback"),
    ("64:ff9b::a9fe:a9fe", "NAT64 (well-known prefix) of 169.254.169.254"),
    ("64:ff9b:1::7f00:1", "NAT64 local-use prefix: where the IPv4 sits is not fixed"),
    ("64:ff9b:1:ffff::808:808", "NAT64 local-use prefix, even around a public IPv4"),
    ("2002:7f00:1::1", "6to4 of loopback"),
    ("2002:a00:1::", "6to4 of 10.0.0.1"),
    ("2002:a9fe:a9fe::1", "6to4 of 169.254.169.254"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
    ("2001::1", "Teredo"),
    ("fec0::1", "site-local"),
    ("fed0:1::1", "site-local"),
]
PUBLIC = [
    ("93.184.216.34", "public IPv4"),
    ("8.8.8.8", "public IPv4"),
    ("2606:4700:4700::1111", "public IPv6"),
    ("::ffff:8.8.8.8", "IPv4-mapped public"),
    ("64:ff9b::8.8.8.8", "NAT64 of a public IPv4"),
    ("2002:808:808::1", "6to4 of a public IPv4"),
]


@pytest.mark.parametrize(("address", "what"), NOT_PUBLIC)
def test_non_public_addresses_and_their_ipv6_forms_are_refused(address, what):
    assert not is_public(ipaddress.ip_address(address)), what
    assert not AddressPolicy().address_allowed(ipaddress.ip_address(address)), what


@pytest.mark.parametrize(("address", "what"), PUBLIC)
def test_public_addresses_and_their_ipv6_forms_are_allowed(address, what):
    assert is_public(ipaddress.ip_address(address)), what


@pytest.mark.parametrize(
    ("address", "inner"),
    [
        ("::ffff:127.0.0.1", "127.0.0.1"),
        ("::127.0.0.1", "127.0.0.1"),
        ("64:ff9b::c0a8:1", "192.168.0.1"),
        ("2002:c0a8:1::", "192.168.0.1"),
        ("2606:4700:4700::1111", None),
        ("10.0.0.1", None),
        ("64:ff9b:1::c0a8:1", None),
    ],
)
def test_the_ipv4_address_an_ipv6_address_embeds(address, inner):
    found = embedded_ipv4(ipaddress.ip_address(address))
    assert (str(found) if found else None) == inner


def test_operator_exceptions_allow_networks_hosts_and_suffixes_and_nothing_more():
    policy = AddressPolicy(["10.0.0.0/8", "internal.example", "*.svc.local", ""])
    assert policy.address_allowed(ipaddress.ip_address("10.9.9.9"))
    assert policy.address_allowed(ipaddress.ip_address("::ffff:10.9.9.9"))  # the same address, mapped
    assert policy.address_allowed(ipaddress.ip_address("64:ff9b::a09:909"))  # and through NAT64
    assert not policy.address_allowed(ipaddress.ip_address("192.168.0.1"))
    assert not policy.address_allowed(ipaddress.ip_address("2002:c0a8:1::"))
    assert policy.host_allowed("internal.example") and policy.host_allowed("INTERNAL.example.")
    assert policy.host_allowed("api.svc.local")
    assert not policy.host_allowed("svc.local.evil.com") and not policy.host_allowed("evil-internal.example")


@pytest.mark.parametrize(
    "host", ["localhost", "127.0.0.1", "[::1]", "::ffff:7f00:1", "64:ff9b::7f00:1", "2002:7f00:1::1", "fec0::1"]
)
async def test_resolving_a_host_refuses_any_non_public_answer(host):
    with pytest.raises(Blocked, match="non-public address; add it to flow_http_allowed_hosts"):
        await AddressPolicy([], "flow_http_allowed_hosts").resolve(host, 80)


async def test_an_allowed_host_resolves_to_the_address_to_connect_to():
    assert await AddressPolicy(["localhost"]).resolve("localhost", 80) in ("127.0.0.1", "::1")
    assert await AddressPolicy(["127.0.0.0/8"]).resolve("127.0.0.1", 80) == "127.0.0.1"
