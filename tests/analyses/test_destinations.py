"""The host policy of git URLs: allow- and deny-lists, addresses refused after resolution, the
trusted networks and the terminal's opt-out (no network: hosts that resolve locally, and a
resolver function where a name must resolve to something chosen)."""

from __future__ import annotations

import pytest

from analyses.destinations import (
    HostPolicy,
    check_destination,
    is_public_address,
    parse_trusted_networks,
)
from analyses.git import configured_host_policy, private_addresses_allowed
from analyses.sources import SourceError


def answering(*addresses: str):
    def resolver(host: str, port: int) -> list[str]:
        return list(addresses)

    return resolver


PUBLIC = answering("93.184.216.34")


def refusal(url: str, policy: HostPolicy, resolver=PUBLIC, *, at_clone: bool = True) -> str:
    with pytest.raises(SourceError) as refused:
        check_destination(url, policy=policy, resolver=resolver, at_clone=at_clone)
    return refused.value.code


class TestAddresses:
    @pytest.mark.parametrize(
        "address",
        [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "ff02::1",
            "::ffff:10.0.0.1",
            "2002:a9fe:a9fe::",  # 6to4 around 169.254.169.254
            "64:ff9b::7f00:1",  # NAT64 around 127.0.0.1
        ],
    )
    def test_not_public(self, address: str) -> None:
        import ipaddress

        assert not is_public_address(ipaddress.ip_address(address))
        assert refusal("https://git.example.test/r.git", HostPolicy(), answering(address)) == (
            "private_address"
        )

    def test_one_private_address_among_public_ones__refused(self) -> None:
        both = answering("93.184.216.34", "10.0.0.5")
        assert refusal("https://git.example.test/r.git", HostPolicy(), both) == "private_address"

    def test_public__accepted_and_every_address_kept_for_pinning(self) -> None:
        checked = check_destination(
            "ssh://git@git.example.test:2222/r.git",
            policy=HostPolicy(),
            resolver=answering("93.184.216.34", "2606:2800:220:1::"),
            at_clone=True,
        )
        assert (checked.scheme, checked.host, checked.port) == ("ssh", "git.example.test", 2222)
        assert checked.pinned_address == "93.184.216.34"


class TestLists:
    def test_denied_name__refused_with_its_subdomains(self) -> None:
        policy = HostPolicy(denied_hosts=("evil.example",))
        assert refusal("https://evil.example/r.git", policy) == "host_not_allowed"
        assert refusal("https://git.EVIL.example./r.git", policy) == "host_not_allowed"
        assert check_destination(
            "https://notevil.example/r.git", policy=policy, resolver=PUBLIC, at_clone=True
        )

    def test_denied_network__refused_by_the_resolved_address(self) -> None:
        policy = HostPolicy(denied_hosts=("93.184.216.0/24",))
        assert refusal("https://git.example.test/r.git", policy) == "host_not_allowed"

    def test_allow_list__other_hosts_refused_without_a_lookup(self) -> None:
        looked_up: list[str] = []

        def resolver(host: str, port: int) -> list[str]:
            looked_up.append(host)
            return ["93.184.216.34"]

        policy = HostPolicy(allowed_hosts=("github.com", "*.gitlab.example"))
        assert refusal("https://bitbucket.org/r.git", policy, resolver) == "host_not_allowed"
        assert looked_up == []
        for url in ("https://github.com/o/r.git", "git@ci.gitlab.example:o/r.git"):
            check_destination(url, policy=policy, resolver=resolver, at_clone=True)

    def test_allowed_name__still_refused_when_it_resolves_to_a_private_address(self) -> None:
        policy = HostPolicy(allowed_hosts=("github.com",))
        assert refusal("https://github.com/r.git", policy, answering("10.0.0.1")) == (
            "private_address"
        )

    def test_trusted_network__private_address_accepted_there_only(self) -> None:
        policy = HostPolicy(trusted_networks=parse_trusted_networks(["10.20.0.0/16"]))
        check_destination(
            "https://git.corp/r.git", policy=policy, resolver=answering("10.20.3.4"), at_clone=True
        )
        assert refusal("https://git.corp/r.git", policy, answering("10.21.0.1")) == (
            "private_address"
        )


class TestResolution:
    def test_unresolvable__accepted_at_submission__refused_at_clone(self) -> None:
        def fails(host: str, port: int) -> list[str]:
            raise OSError("Name or service not known")

        submitted = check_destination(
            "https://nowhere.invalid/r.git", policy=HostPolicy(), resolver=fails, at_clone=False
        )
        assert submitted.addresses == ()
        assert refusal("https://nowhere.invalid/r.git", HostPolicy(), fails) == (
            "unresolvable_host"
        )


class TestConfiguredPolicy:
    def test_settings_and_the_terminal_opt_out(self, settings) -> None:
        settings.EIDOLON_GIT_ALLOWED_HOSTS = ["github.com"]
        settings.EIDOLON_GIT_DENIED_HOSTS = ["evil.example"]
        settings.EIDOLON_GIT_TRUSTED_NETWORKS = ["10.0.0.0/8"]
        policy = configured_host_policy()
        assert policy.allowed_hosts == ("github.com",)
        assert policy.denied_hosts == ("evil.example",)
        assert [str(network) for network in policy.trusted_networks] == ["10.0.0.0/8"]
        assert not policy.allow_private_addresses
        with private_addresses_allowed():
            assert configured_host_policy().allow_private_addresses
        assert not configured_host_policy().allow_private_addresses
