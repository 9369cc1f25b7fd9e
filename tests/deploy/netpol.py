"""What a NetworkPolicy lets through, port by port, as the NetworkPolicy API defines it:
a rule without `ports` admits every port, one without `from` (`to`) every peer, pods and
addresses outside the cluster alike (the API server, which is no pod, among them); a
named port is the selected pod's container port of that name (for ingress)."""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]
EVERY_PORT = "every port"
ANYONE = "anyone"


def admitted(policy: Obj, direction: str, named: dict[str, int]) -> dict[int | str, list[Any]]:
    """{port number (or EVERY_PORT): the peers admitted on it (ANYONE, or the rules'
    `from`/`to` entries)} for `direction` "ingress" or "egress"; `named` resolves named
    ports. A direction the policy does not restrict (not in policyTypes) admits every
    port; one it restricts without rules, none."""
    spec = policy["spec"]
    kind = direction.capitalize()
    if kind not in spec.get("policyTypes", ["Ingress"]):
        return {EVERY_PORT: [ANYONE]}
    peers_key = "from" if direction == "ingress" else "to"
    out: dict[int | str, list[Any]] = {}
    for rule in spec.get(direction) or ():
        peers = rule.get(peers_key) or [ANYONE]
        ports = rule.get("ports")
        if not ports:
            out.setdefault(EVERY_PORT, []).extend(peers)
            continue
        for port in ports:
            assert port.get("protocol", "TCP") == "TCP", port
            assert "endPort" not in port, port
            number = named[port["port"]] if isinstance(port["port"], str) else port["port"]
            out.setdefault(number, []).extend(peers)
    return out
