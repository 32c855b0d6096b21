"""Every spire-server command, in one table (as SPIRE's cmd/spire-server/cli/cli.go).

A new command is a function in its group's module and one row here.
"""

from __future__ import annotations

from ...common.cli import Command
from . import agent, bundle, debug, entry, federation, healthcheck, localauthority, logger, mint, run, token
from .client import socket_flags

COMMANDS: dict[str, Command] = {
    "run": Command("Runs the server", run.flags, run.run_cmd),
    "validate": Command("Validates a SPIRE server configuration file", run.flags, run.validate_cmd),
    "healthcheck": Command("Determines server health status", healthcheck.flags, healthcheck.healthcheck),
    "token generate": Command("Generates a join token", token.generate_flags, token.generate),
    "entry create": Command("Creates registration entries", entry.create_flags, entry.create),
    "entry update": Command("Updates registration entries", entry.update_flags, entry.update),
    "entry delete": Command("Deletes registration entries", entry.delete_flags, entry.delete),
    "entry show": Command("Displays configured registration entries", entry.show_flags, entry.show),
    "entry count": Command("Count registration entries", entry.count_flags, entry.count),
    "bundle show": Command("Prints server CA bundle to stdout", bundle.show_flags, bundle.show),
    "bundle list": Command("Lists federated bundle data", bundle.list_flags, bundle.list_),
    "bundle set": Command("Creates or updates federated bundle data", bundle.set_flags, bundle.set_),
    "bundle delete": Command("Deletes federated bundle data", bundle.delete_flags, bundle.delete),
    "bundle count": Command("Count bundles", socket_flags, bundle.count),
    "agent list": Command("Lists attested agents and their SPIFFE IDs", agent.filter_flags, agent.list_),
    "agent count": Command("Count attested agents", agent.filter_flags, agent.count),
    "agent show": Command("Shows the details of an attested agent given its SPIFFE ID",
                          agent.id_flags("show"), agent.show),
    "agent evict": Command("Evicts an attested agent given its SPIFFE ID", agent.id_flags("evict"), agent.evict),
    "agent ban": Command("Ban an attested agent given its SPIFFE ID", agent.id_flags("ban"), agent.ban),
    "agent purge": Command("Purge expired agents that were attested using a non-TOFU security model based on a given time",
                           agent.purge_flags, agent.purge),
    "debug getinfo": Command("Prints debug information about the server", socket_flags, debug.getinfo),
    "federation create": Command("Creates a dynamic federation relationship with a foreign trust domain",
                                 federation.create_flags, federation.create),
    "federation update": Command("Updates a dynamic federation relationship with a foreign trust domain",
                                 federation.update_flags, federation.update),
    "federation delete": Command("Deletes a dynamic federation relationship", federation.id_flags, federation.delete),
    "federation list": Command("Lists all dynamic federation relationships", socket_flags, federation.list_),
    "federation show": Command("Shows a dynamic federation relationship", federation.show_flags, federation.show),
    "federation refresh": Command("Refreshes the bundle from the specified federated trust domain",
                                  federation.id_flags, federation.refresh),
    **{f"localauthority {kind} {verb}": Command(
        localauthority.SYNOPSES[(kind, verb)],
        localauthority.flags if verb in ("show", "prepare") else localauthority.id_flags(kind, verb),
        localauthority.show(kind) if verb == "show" else localauthority.change(kind, verb))
       for kind in ("x509", "jwt") for verb in ("show", "prepare", "activate", "taint", "revoke")},
    **{f"upstreamauthority {verb}": Command(localauthority.SYNOPSES[("upstream", verb)],
                                            localauthority.upstream_flags(verb), localauthority.upstream(verb))
       for verb in ("taint", "revoke")},
    "x509 mint": Command("Mints an X509-SVID", mint.x509_flags, mint.x509_mint),
    "jwt mint": Command("Mints a JWT-SVID", mint.jwt_flags, mint.jwt_mint),
    "logger get": Command("Gets the logger details", logger.flags, logger.get),
    "logger set": Command("Sets the logger details", logger.set_flags, logger.set_),
    "logger reset": Command("Reset the logger details to launch level", logger.flags, logger.reset),
}
