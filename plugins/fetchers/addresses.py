"""Where a download may connect: the checks of ``block_private_addresses``.

With the setting on, a URL's host is resolved once (:func:`pinned_address`); every address
it resolves to must be public (no loopback, private, link-local, shared, reserved, multicast
or unspecified address, IPv4 inside IPv6 included), and the download then connects to the
address that was checked, so a DNS server answering differently a second time (rebinding)
changes nothing. TorchServe has no such check; the setting is off by default, as there.
"""

from __future__ import annotations

import ipaddress
import socket

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class AddressRefused(Exception):
    """The host resolves to an address downloads may not reach, or does not resolve."""


def is_public(address: IPAddress) -> bool:
    """True for a globally routable unicast address (also seen through IPv4-in-IPv6)."""
    if isinstance(address, ipaddress.IPv6Address):
        for embedded in (address.ipv4_mapped, address.sixtofour,
                         address.teredo[1] if address.teredo else None):
            if embedded is not None and not is_public(embedded):
                return False
    return address.is_global and not address.is_multicast


def pinned_address(host: str, port: int) -> str:
    """Resolve ``host`` once and return the address to connect to.

    :raises AddressRefused: the name does not resolve, or any of its addresses is not
        public (a name that answers with one public and one private address is refused).
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise AddressRefused(f"{host} does not resolve ({exc})") from None
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    if not addresses:
        raise AddressRefused(f"{host} does not resolve")
    for address in addresses:
        if not is_public(address):
            raise AddressRefused(f"{host} resolves to {address}, which is not a public address "
                                 "(block_private_addresses is on)")
    return str(addresses[0])
