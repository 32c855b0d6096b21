"""NodeAttestor "sshpop" (server): an SSH host certificate signed by a trusted CA, plus proof
of possession of the host key by a signature over a fresh nonce.

Agent ID: ``spiffe://<td>/spire/agent/sshpop/<fingerprint>`` by default, the fingerprint
being unpadded URL-safe base64 of SHA-256 over the certificate. SPIRE's sshpop
reports no selectors, and neither do we.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Optional

from grpclib.const import Status

from ....common.plugin import EXACT_STR, EXACT_STR_LIST, Field, PluginConfigError, PluginContext, Schema, register
from ....common.plugins import sshpop as pop
from ....common.plugins.agentpathtemplate import AgentPathTemplate, TemplateError, make_agent_id
from ....common.spiffeid import TrustDomain
from .base import AttestationError, AttestResult, Challenge, NodeAttestor

def _error(exc: pop.SshPopError) -> AttestationError:
    return AttestationError(str(exc), Status.INVALID_ARGUMENT if exc.malformed else Status.PERMISSION_DENIED)


@dataclass
class SshPopConfig:
    cert_authorities: Optional[list[str]]
    cert_authorities_path: str
    canonical_domain: str
    agent_path_template: str


def _load(config: SshPopConfig) -> tuple[set[bytes], AgentPathTemplate]:
    """The trusted CA keys and the agent path template; PluginConfigError naming the key."""
    listed, path = config.cert_authorities, config.cert_authorities_path
    if listed is None and not path:
        raise PluginConfigError(
            'missing required config value for "cert_authorities" or "cert_authorities_path"', "cert_authorities")
    # Both given: the union, as SPIRE.
    lines = list(listed or [])
    if path:
        try:
            lines += pop.load_authorities_file(path)
        except (OSError, UnicodeDecodeError, pop.SshPopError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise PluginConfigError(
                f'failed to get cert authorities from file "{path}": {reason}', "cert_authorities_path") from None
    try:
        authorities = pop.parse_authorities(lines)
    except pop.SshPopError as exc:
        key = "cert_authorities" if listed else "cert_authorities_path"
        raise PluginConfigError(f"failed to create cert checker: {exc}", key) from None

    text = config.agent_path_template or pop.DEFAULT_AGENT_PATH_TEMPLATE
    try:
        template = AgentPathTemplate.parse(text)
    except TemplateError as exc:
        raise PluginConfigError(
            f'failed to parse agent svid template "{text}": {exc}', "agent_path_template") from None
    return authorities, template


@register("server")
class SshPopAttestor(NodeAttestor):
    NAME = pop.PLUGIN_NAME
    CONFIG = Schema([
        Field("cert_authorities", EXACT_STR_LIST, default=None),
        Field("cert_authorities_path", EXACT_STR),
        Field("canonical_domain", EXACT_STR),
        Field("agent_path_template", EXACT_STR),
    ])
    CONFIG_TYPE = SshPopConfig

    def __init__(self, trust_domain: TrustDomain, authorities: set[bytes], canonical_domain: str,
                 template: AgentPathTemplate) -> None:
        self.trust_domain = trust_domain
        self.authorities = authorities
        self.canonical_domain = canonical_domain
        self.template = template

    @classmethod
    def validate(cls, config: SshPopConfig, ctx: PluginContext) -> None:
        _load(config)  # reads cert_authorities_path: SPIRE's validate refuses a missing file too

    @classmethod
    def from_config(cls, config: SshPopConfig, ctx: PluginContext) -> "SshPopAttestor":
        authorities, template = _load(config)
        return cls(TrustDomain(ctx.trust_domain), authorities, config.canonical_domain, template)

    async def attest(self, payload: bytes, challenge: Challenge) -> AttestResult:
        if not payload:
            raise AttestationError("missing attestation payload", Status.INVALID_ARGUMENT)
        try:
            host = await asyncio.to_thread(
                pop.verify_attestation_data, payload, self.authorities, self.canonical_domain)
        except pop.SshPopError as exc:
            raise _error(exc) from None

        nonce = pop.new_nonce()
        reply = await challenge(pop.marshal_challenge(nonce))
        try:
            await asyncio.to_thread(pop.verify_response, host, nonce, reply)
        except pop.SshPopError as exc:
            raise _error(exc) from None

        try:
            sid = make_agent_id(self.trust_domain, self.template, pop.template_data(host))
        except TemplateError as exc:
            raise AttestationError(f"failed to create AgentID: {exc}", Status.INTERNAL) from None
        return AttestResult(sid, [], can_reattest=True)
