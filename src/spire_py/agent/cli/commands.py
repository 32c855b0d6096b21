"""Every spire-agent command, in one table (as SPIRE's cmd/spire-agent/cli/cli.go).

A new command is a function in its group's module and one row here.
"""

from __future__ import annotations

from ...common.cli import Command
from . import admin, api, healthcheck, run

_FETCH_X509 = Command("Fetches X509 SVIDs from the Workload API", api.x509_flags, api.fetch_x509)

COMMANDS: dict[str, Command] = {
    "run": Command("Runs the agent", run.flags, run.run_cmd),
    "validate": Command("Validates a SPIRE agent configuration file", run.flags, run.validate_cmd),
    "healthcheck": Command("Determines agent health status", healthcheck.flags, healthcheck.healthcheck),
    "api fetch": _FETCH_X509,
    "api fetch x509": _FETCH_X509,
    "api fetch jwt": Command("Fetches a JWT SVID from the Workload API", api.jwt_flags, api.fetch_jwt),
    "api validate jwt": Command("Validates a JWT SVID", api.validate_flags, api.validate_jwt),
    "debug getinfo": Command("Prints debug information about the agent", admin.flags, admin.getinfo),
    "logger get": Command("Gets the logger details", admin.flags, admin.logger_get),
    "logger set": Command("Sets the logger details", admin.set_flags, admin.logger_set),
    "logger reset": Command("Reset the logger details to launch level", admin.flags, admin.logger_reset),
    "api watch": Command("Attaches to the Workload API and prints updates as they're received",
                         api.socket_flag, api.watch),
}
