"""A joined node's fleet membership, opened once at start-up: the identity on disk, the
TLS contexts built from it (shared by the node's server, its tier clients and its agent,
so a renewed certificate reaches all three), the deny list, and the verifier of the
control plane's access tokens."""

from __future__ import annotations

import dataclasses
import ssl
from dataclasses import dataclass
from typing import Any

from edgewise.config import EdgewiseConfig, parse_config
from edgewise.errors import ConfigError
from edgewise.fleet.state import FleetState, Membership
from edgewise.node import engine_config
from edgewise.security.peers import DenyList, PeerTLS
from edgewise.security.pki import client_context, server_context
from edgewise.security.tokens import AccessTokenVerifier, fleet_audience, node_audience

__all__ = ["CENTRAL_SECTIONS", "FleetMember", "with_central"]


@dataclass
class FleetMember:
    state: FleetState
    membership: Membership
    deny: DenyList
    client_tls: ssl.SSLContext
    server_tls: ssl.SSLContext | None
    verifier: AccessTokenVerifier | None

    @classmethod
    def open(cls, cfg: EdgewiseConfig) -> FleetMember | None:
        """The membership in ``fleet.state_dir``, or ``None`` for a node that never
        joined (it then runs exactly as a lone node)."""
        state = FleetState(cfg.fleet.state_dir)
        if not state.joined:
            return None
        m = state.membership()
        state.identity()  # a missing or unreadable certificate fails here, in one line
        deny = DenyList()
        state.load_deny_list(deny)
        client = client_context(state.ca_file, cert_chain=state.cert_file, key=state.key_file)
        server = None
        if cfg.serving.tls.enabled:
            server = server_context(state.cert_file, state.key_file, state.ca_file,
                                    client_certs=cfg.serving.tls.client_certs)
        verifier = None
        if cfg.auth.access_tokens:
            verifier = AccessTokenVerifier.from_pem(
                state.token_key_file.read_bytes(), issuer=m.token_issuer,
                audiences=[fleet_audience(m.fleet), node_audience(m.fleet, m.node)])
        return cls(state=state, membership=m, deny=deny, client_tls=client,
                   server_tls=server, verifier=verifier)

    @property
    def peer_tls(self) -> PeerTLS:
        return PeerTLS(self.client_tls, fleet=self.membership.fleet, deny=self.deny)


#: The sections of a node's config the control plane holds centrally.
CENTRAL_SECTIONS = ("tiers", "routing", "privacy")


def with_central(base: EdgewiseConfig, body: dict[str, Any], *, source: str) -> EdgewiseConfig:
    """``base`` with the central sections of ``body`` in place of its own, validated as the
    node's config would be (``ConfigError`` with key paths). A config that would change
    the model this node serves is refused: models change with rollouts, not routing."""
    data = dataclasses.asdict(base)
    for section in CENTRAL_SECTIONS:
        if section in body:
            data[section] = body[section]
    extra = sorted(set(body) - set(CENTRAL_SECTIONS))
    if extra:
        raise ConfigError(f"{source}: {', '.join(extra)}: not held centrally")
    new = parse_config(data, source=source)
    before, after = engine_config(base), engine_config(new)
    if (before.kind, before.model) != (after.kind, after.model):
        raise ConfigError(f"{source}: the local endpoint would serve {after.kind}:"
                          f"{after.model}, but this node serves {before.kind}:{before.model}; "
                          "a central config may not change the served model")
    return new
