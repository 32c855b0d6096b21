"""NodeAttestor "sshpop" (server): an SSH host certificate signed by a trusted CA, plus proof
of possession of the host key by a signature over a fresh nonce.

Agent ID: ``spiffe://<td>/spire/agent/sshpop/<fingerprint>`` by default, the fingerprint
being unpadded URL-safe base64 of SHA-256 over the certificate. SPIRE's sshpop
reports no selectors, and neither do we.
"""

from __future__ import annotations

import asyncio
from typing import Any

from grpclib.const import Status

from ....common.plugin import PluginConfigError, PluginContext, register
from ....common.plugins import sshpop as pop
from ....common.plugins.agentpathtemplate import AgentPathTemplate, TemplateError, make_agent_id
from ....common.spiffeid import TrustDomain
from .base import AttestationError, AttestResult, Challenge, NodeAttestor

_KEYS = ("cert_authorities", "cert_authorities_path", "canonical_domain", "agent_path_template")


def _error(exc: pop.SshPopError) -> AttestationError:
    return AttestationError(str(exc), Status.INVALID_ARGUMENT if exc.malformed else Status.PERMISSION_DENIED)


@register("server")
class SshPopAttestor(NodeAttestor):
    NAME = pop.PLUGIN_NAME

    def __init__(self, trust_domain: TrustDomain, authorities: set[bytes], canonical_domain: str,
                 template: AgentPathTemplate) -> None:
        self.trust_domain = trust_domain
        self.authorities = authorities
        self.canonical_domain = canonical_domain
        self.template = template

    @classmethod
    def configure(cls, data: dict[str, Any], ctx: PluginContext) -> "SshPopAttestor":
        for key in sorted(data):
            if key not in _KEYS:
                raise PluginConfigError(f'unknown configuration key "{key}"', key)
        for key in ("cert_authorities_path", "canonical_domain", "agent_path_template"):
            if not isinstance(data.get(key, ""), str):
                raise PluginConfigError(f"{key} must be a string", key)
        listed = data.get("cert_authorities")
        path = data.get("cert_authorities_path", "")
        if listed is None and not path:
            raise PluginConfigError(
                'missing required config value for "cert_authorities" or "cert_authorities_path"', "cert_authorities")
        if listed is not None and (not isinstance(listed, list) or not all(isinstance(a, str) for a in listed)):
            raise PluginConfigError("cert_authorities must be a list of strings", "cert_authorities")
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

        text = data.get("agent_path_template") or pop.DEFAULT_AGENT_PATH_TEMPLATE
        try:
            template = AgentPathTemplate.parse(text)
        except TemplateError as exc:
            raise PluginConfigError(
                f'failed to parse agent svid template "{text}": {exc}', "agent_path_template") from None
        return cls(TrustDomain(ctx.trust_domain), authorities, data.get("canonical_domain", ""), template)

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
