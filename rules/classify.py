"""Who wrote a message: a customer, a CSR, or a machine.

A message is a CSR's only when its From: is a known CSR *and* it was
authenticated (DESIGN.md, "Who is a CSR"): a SASL login seen by the milter
that belongs to that CSR, a DKIM signature that passes for the staff domain,
or a client in a trusted network. Anything else is a customer's message,
whatever its From: says.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Role(StrEnum):
    CUSTOMER = "customer"
    CSR = "csr"
    DEPARTMENT = "department"  # a consulted department, proven as a CSR is
    AUTOMATIC = "automatic"


@dataclass(frozen=True)
class Identity:
    role: Role
    rule: str
    reason: str
    proof: str = ""  # for a CSR: how the authentication was shown


def parse_networks(values: Sequence[str]) -> tuple[Network, ...]:
    """CIDRs from the command line or config; a clear ValueError for a bad one."""
    nets: list[Network] = []
    for value in values:
        try:
            nets.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"not a network: {value!r} ({exc})") from None
    return tuple(nets)


def in_networks(addr: str | None, networks: Sequence[Network]) -> bool:
    if not addr:
        return False
    text = addr.strip()
    if text.lower().startswith("ipv6:"):
        text = text[5:]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in networks)


def classify(
    *,
    from_address: str,
    csr_known: bool,
    automatic_reason: str | None,
    client_addr: str | None,
    trusted_networks: Sequence[Network],
    sasl_login: str | None = None,
    sasl_login_is_csr: bool = False,
    dkim_staff_domain: str | None = None,
) -> Identity:
    """Decide the author's role. ``sasl_login_is_csr`` says whether the SASL
    login belongs to the CSR in From: (the caller looks it up)."""
    if automatic_reason:
        return Identity(Role.AUTOMATIC, "automatic", automatic_reason)
    if not csr_known:
        return Identity(Role.CUSTOMER, "not_a_csr", f"{from_address} is not a CSR")
    if sasl_login:
        if sasl_login_is_csr:
            return Identity(Role.CSR, "csr_sasl", "SASL login", proof=f"sasl:{sasl_login}")
        return Identity(
            Role.CUSTOMER,
            "csr_sasl_mismatch",
            f"SASL login {sasl_login} is not {from_address}",
        )
    if dkim_staff_domain:
        return Identity(Role.CSR, "csr_dkim", "DKIM", proof=f"dkim:{dkim_staff_domain}")
    if in_networks(client_addr, trusted_networks):
        return Identity(Role.CSR, "csr_trusted_network", "trusted network", proof=f"net:{client_addr}")
    return Identity(
        Role.CUSTOMER,
        "csr_unauthenticated",
        f"From: {from_address} is a CSR but the message was not authenticated "
        f"(client {client_addr or 'unknown'})",
    )
