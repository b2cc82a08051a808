"""Where a git URL leads: its host checked against the operator's allow- and deny-lists, and
every address it resolves to refused when it is not a public one (no cloning from inside the
network: loopback, private ranges, link-local cloud metadata at 169.254.169.254, ...).

The check runs twice: when an analysis is submitted (a clear 4xx for the web and API user) and
again just before the clone, whose connection is then pinned to the address that was checked
(``analyses.git``), so a name that resolves to a public address first and a private one later
(DNS rebinding) gets nowhere. A name that does not resolve at submission is accepted there
(resolving may fail for a moment; nothing is fetched) and refused at clone time if it still
does not.

Nothing here reads Django settings: the policy arrives as a ``HostPolicy``; the resolver is a
plain function ``(host, port) -> addresses`` that tests replace.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from analyses.sources import SourceError, quoted

Resolver = Callable[[str, int], Sequence[str]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Scheme = Literal["https", "http", "ssh"]

DEFAULT_RESOLVE_TIMEOUT_S = 5.0
_DEFAULT_PORTS: dict[str, int] = {"https": 443, "http": 80, "ssh": 22}
_NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")


@dataclass(frozen=True, slots=True)
class HostPolicy:
    """Which hosts a clone may reach.

    ``allowed_hosts`` empty means any host; entries (in both lists) are host names, matching
    the name and its subdomains, or networks (``10.0.0.0/8``) matching the resolved addresses.
    ``trusted_networks`` are addresses allowed although private (an internal git server);
    ``allow_private_addresses`` turns the private-address refusal off (the terminal's opt-out).
    """

    allowed_hosts: tuple[str, ...] = ()
    denied_hosts: tuple[str, ...] = ()
    trusted_networks: tuple[IPNetwork, ...] = ()
    allow_private_addresses: bool = False
    resolve_timeout_s: float = DEFAULT_RESOLVE_TIMEOUT_S


@dataclass(frozen=True, slots=True)
class Destination:
    """A git URL's host, as git will connect to it, and the addresses that were checked."""

    scheme: Scheme
    host: str  # lower-case, without IPv6 brackets or a trailing dot
    port: int
    addresses: tuple[str, ...]  # empty when the name did not resolve (submission only)

    @property
    def pinned_address(self) -> str | None:
        return self.addresses[0] if self.addresses else None


def parse_trusted_networks(entries: Iterable[str]) -> tuple[IPNetwork, ...]:
    """``EIDOLON_GIT_TRUSTED_NETWORKS``'s entries as networks; raises ``ValueError`` on a typo."""
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries if entry)


def url_destination(url: str) -> tuple[Scheme, str, int]:
    """``(scheme, host, port)`` of a URL ``validate_git_url`` accepted (scp-like is ssh)."""
    if "://" in url:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        host, port = parts.hostname or "", parts.port
    else:  # user@host:path
        scheme, host, port = "ssh", url.partition(":")[0].rpartition("@")[2], None
    if scheme not in _DEFAULT_PORTS:
        raise SourceError("unsupported_url", f"'{scheme}://' URLs are not allowed.")
    normalised = host.lower().rstrip(".")
    return scheme, normalised, port or _DEFAULT_PORTS[scheme]  # type: ignore[return-value]


def check_destination(
    url: str, *, policy: HostPolicy, resolver: Resolver | None = None, at_clone: bool
) -> Destination:
    """Refuse ``url`` (``SourceError``) when its host or any address it resolves to is not
    allowed; return what was checked. ``at_clone`` makes a name that does not resolve an
    error (at submission it passes: see the module doc)."""
    scheme, host, port = url_destination(url)
    if not host:
        raise SourceError("unsupported_url", "The git URL has no host.")
    if any(_name_matches(host, entry) for entry in policy.denied_hosts):
        raise _not_allowed(host)
    allowed_by_name = any(_name_matches(host, entry) for entry in policy.allowed_hosts)
    allowed_networks = _networks(policy.allowed_hosts)
    if policy.allowed_hosts and not allowed_by_name and not allowed_networks:
        raise _not_allowed(host)  # decided by the name alone: no lookup needed
    literal = _ip_literal(host)
    if literal is not None:
        addresses: tuple[str, ...] = (str(literal),)
    else:
        addresses = _resolve(host, port, resolver or resolve_host, policy.resolve_timeout_s)
    if not addresses:
        if at_clone:
            raise SourceError("unresolvable_host", f"The host {quoted(host)} does not resolve.")
        return Destination(scheme=scheme, host=host, port=port, addresses=())
    checked = [ipaddress.ip_address(address) for address in addresses]
    denied_networks = _networks(policy.denied_hosts)
    if any(address in network for address in checked for network in denied_networks):
        raise _not_allowed(host)
    if policy.allowed_hosts and not allowed_by_name:
        if not all(any(a in network for network in allowed_networks) for a in checked):
            raise _not_allowed(host)
    for address in checked:
        _refuse_private(host, address, policy)
    return Destination(scheme=scheme, host=host, port=port, addresses=addresses)


def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (the system resolver, as git's own lookup would)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]).partition("%")[0] for info in infos))


def is_public_address(address: IPAddress) -> bool:
    """Globally routable unicast: not private, loopback, link-local, unspecified, multicast,
    reserved or shared, including IPv4 hidden in IPv6 (mapped, 6to4, Teredo, NAT64)."""
    for embedded in _embedded_ipv4(address):
        if not is_public_address(embedded):
            return False
    return address.is_global and not (
        address.is_multicast
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_reserved
        or address.is_unspecified
        or (isinstance(address, ipaddress.IPv6Address) and address.is_site_local)
    )


def _embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    embedded = [address.ipv4_mapped, address.sixtofour, *(address.teredo or ())]
    if address in _NAT64_PREFIX:
        embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return [item for item in embedded if item is not None]


def _refuse_private(host: str, address: IPAddress, policy: HostPolicy) -> None:
    if policy.allow_private_addresses or is_public_address(address):
        return
    if any(address in network for network in policy.trusted_networks):
        return
    raise SourceError(
        "private_address",
        f"The host {quoted(host)} leads to a private, loopback, link-local or reserved "
        "address; git URLs must lead to a public host.",
    )


def _name_matches(host: str, entry: str) -> bool:
    pattern = entry.strip().lower().rstrip(".").removeprefix("*.").removeprefix(".")
    if not pattern or _as_network(pattern) is not None:
        return False
    return host == pattern or host.endswith("." + pattern)


def _networks(entries: Iterable[str]) -> list[IPNetwork]:
    return [network for entry in entries if (network := _as_network(entry)) is not None]


def _as_network(entry: str) -> IPNetwork | None:
    try:
        return ipaddress.ip_network(entry.strip(), strict=False)
    except ValueError:
        return None


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return None


def _not_allowed(host: str) -> SourceError:
    return SourceError(
        "host_not_allowed", f"Cloning from {quoted(host)} is not allowed on this server."
    )


def _resolve(host: str, port: int, resolver: Resolver, timeout_s: float) -> tuple[str, ...]:
    """The resolver's answer within ``timeout_s`` (empty when it fails or takes longer).

    On a daemon thread: ``getaddrinfo`` cannot be interrupted, and a lookup stuck on a dead
    name server must neither hold the caller nor the process's exit."""
    answer: list[Sequence[str]] = []
    done = threading.Event()

    def lookup() -> None:
        try:
            answer.append(resolver(host, port))
        except (OSError, UnicodeError, ValueError):
            pass
        finally:
            done.set()

    threading.Thread(target=lookup, name="eidolon-resolve", daemon=True).start()
    if not done.wait(timeout_s) or not answer:
        return ()
    addresses = []
    for address in answer[0]:
        try:
            addresses.append(str(ipaddress.ip_address(address.partition("%")[0])))
        except ValueError:
            continue
    return tuple(dict.fromkeys(addresses))
