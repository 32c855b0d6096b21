"""Who may call which server API method: SPIRE's authorization policy, in one table.

Each method names the callers it admits (SPIRE's ``policy_data.json`` flags):
``any`` (no identity needed), ``local`` (the admin Unix socket), ``admin`` (an entry with
``admin = true``, or ``admin_ids``), ``agent`` (an attested, unbanned agent presenting its
current SVID) and ``downstream`` (an entry with ``downstream = true``). The server refuses
to start if a service it serves has a method missing here (``rpc.GuardedServer``).
"""

from __future__ import annotations

from types import MappingProxyType

ANY = "any"
LOCAL = "local"
ADMIN = "admin"
AGENT = "agent"
DOWNSTREAM = "downstream"

_ADMIN = frozenset({ADMIN, LOCAL})

_AGENT_API = "/spire.api.server.agent.v1.Agent/"
_BUNDLE_API = "/spire.api.server.bundle.v1.Bundle/"
_ENTRY_API = "/spire.api.server.entry.v1.Entry/"
_LOGGER_API = "/spire.api.server.logger.v1.Logger/"
_SVID_API = "/spire.api.server.svid.v1.SVID/"
_TD_API = "/spire.api.server.trustdomain.v1.TrustDomain/"
_LA_API = "/spire.api.server.localauthority.v1.LocalAuthority/"
_LA_METHODS = (
    "GetJWTAuthorityState", "PrepareJWTAuthority", "ActivateJWTAuthority", "TaintJWTAuthority",
    "RevokeJWTAuthority", "GetX509AuthorityState", "PrepareX509Authority", "ActivateX509Authority",
    "TaintX509Authority", "TaintX509UpstreamAuthority", "RevokeX509Authority", "RevokeX509UpstreamAuthority",
    "GetWITAuthorityState", "PrepareWITAuthority", "ActivateWITAuthority", "TaintWITAuthority",
    "RevokeWITAuthority",
)

POLICY: "MappingProxyType[str, frozenset[str]]" = MappingProxyType({
    # Agent
    _AGENT_API + "CountAgents": _ADMIN,
    _AGENT_API + "ListAgents": _ADMIN,
    _AGENT_API + "GetAgent": _ADMIN,
    _AGENT_API + "DeleteAgent": _ADMIN,
    _AGENT_API + "BanAgent": _ADMIN,
    _AGENT_API + "AttestAgent": frozenset({ANY}),
    _AGENT_API + "RenewAgent": frozenset({AGENT}),
    _AGENT_API + "CreateJoinToken": _ADMIN,
    _AGENT_API + "PostStatus": frozenset({AGENT}),
    # Bundle
    _BUNDLE_API + "GetBundle": frozenset({ANY}),
    _BUNDLE_API + "AppendBundle": _ADMIN,
    _BUNDLE_API + "PublishJWTAuthority": frozenset({DOWNSTREAM}),
    _BUNDLE_API + "PublishWITAuthority": frozenset({DOWNSTREAM}),
    _BUNDLE_API + "CountBundles": _ADMIN,
    _BUNDLE_API + "ListFederatedBundles": _ADMIN,
    _BUNDLE_API + "GetFederatedBundle": frozenset({ADMIN, LOCAL, AGENT}),
    _BUNDLE_API + "BatchCreateFederatedBundle": _ADMIN,
    _BUNDLE_API + "BatchUpdateFederatedBundle": _ADMIN,
    _BUNDLE_API + "BatchSetFederatedBundle": _ADMIN,
    _BUNDLE_API + "BatchDeleteFederatedBundle": _ADMIN,
    # Debug
    "/spire.api.server.debug.v1.Debug/GetInfo": frozenset({LOCAL}),
    # Logger: the admin socket only
    _LOGGER_API + "GetLogger": frozenset({LOCAL}),
    _LOGGER_API + "SetLogLevel": frozenset({LOCAL}),
    _LOGGER_API + "ResetLogLevel": frozenset({LOCAL}),
    # Entry
    _ENTRY_API + "CountEntries": _ADMIN,
    _ENTRY_API + "ListEntries": _ADMIN,
    _ENTRY_API + "GetEntry": _ADMIN,
    _ENTRY_API + "BatchCreateEntry": _ADMIN,
    _ENTRY_API + "BatchUpdateEntry": _ADMIN,
    _ENTRY_API + "BatchDeleteEntry": _ADMIN,
    _ENTRY_API + "GetAuthorizedEntries": frozenset({AGENT, DOWNSTREAM}),
    _ENTRY_API + "SyncAuthorizedEntries": frozenset({AGENT, DOWNSTREAM}),
    # SVID
    _SVID_API + "MintX509SVID": _ADMIN,
    _SVID_API + "MintJWTSVID": _ADMIN,
    _SVID_API + "MintWITSVID": _ADMIN,
    _SVID_API + "BatchNewX509SVID": frozenset({AGENT}),
    _SVID_API + "BatchNewWITSVID": frozenset({AGENT}),
    _SVID_API + "NewJWTSVID": frozenset({AGENT}),
    _SVID_API + "NewDownstreamX509CA": frozenset({DOWNSTREAM}),
    # TrustDomain
    _TD_API + "ListFederationRelationships": _ADMIN,
    _TD_API + "GetFederationRelationship": _ADMIN,
    _TD_API + "BatchCreateFederationRelationship": _ADMIN,
    _TD_API + "BatchUpdateFederationRelationship": _ADMIN,
    _TD_API + "BatchDeleteFederationRelationship": _ADMIN,
    _TD_API + "RefreshBundle": _ADMIN,
    # LocalAuthority
    **{_LA_API + m: _ADMIN for m in _LA_METHODS},
    # Health
    "/grpc.health.v1.Health/Check": frozenset({LOCAL}),
    "/grpc.health.v1.Health/Watch": frozenset({LOCAL}),
})

# Methods refused when ``disable_jwt_svids`` is set (SPIRE: Unimplemented, "JWT functionality is disabled").
JWT_METHODS = frozenset({
    _SVID_API + "MintJWTSVID",
    _SVID_API + "NewJWTSVID",
    _BUNDLE_API + "PublishJWTAuthority",
    *(_LA_API + m for m in _LA_METHODS if "JWT" in m),
})

# ratelimit { attestation, signing }: per caller IP, SPIRE's limits (calls, or SVIDs requested, per second).
ATTESTATION_LIMIT = 1
SIGNING_LIMIT = 500
ATTESTATION_METHODS = frozenset({_AGENT_API + "AttestAgent"})
SIGNING_METHODS = frozenset({
    _SVID_API + "BatchNewX509SVID",
    _SVID_API + "NewJWTSVID",
    _SVID_API + "NewDownstreamX509CA",
    _BUNDLE_API + "PublishJWTAuthority",
})
