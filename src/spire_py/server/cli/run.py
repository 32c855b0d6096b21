"""spire-server run | validate."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from ...common import eventloop
from ...common.cli import Context, FlagSet
from ...common.config import ConfigError
from ...common.daemon_config import load_config, start_logging, validate_config

if TYPE_CHECKING:  # load() imports it when it runs
    from ..config import ServerConfig

DEFAULT_CONFIG = "conf/server/server.conf"

# SPIRE's command-line overrides of the config file.
OVERRIDES = {
    "bindAddress": "IP address or DNS name of the SPIRE server",
    "serverPort": "Port number of the SPIRE server",
    "socketPath": "Path to bind the SPIRE Server API socket to",
    "trustDomain": "The trust domain that this server belongs to",
    "logLevel": "'debug', 'info', 'warn', or 'error'",
    "logFile": "File to write logs to",
    "logFormat": "'text' or 'json'",
    "dataDir": "Directory to store runtime data to",
}


def flags(fs: FlagSet) -> None:
    fs.string("config", DEFAULT_CONFIG, "Path to a SPIRE config file")
    fs.bool("expandEnv", False, "Expand environment variables in SPIRE config file")
    for name, usage in OVERRIDES.items():
        fs.string(name, "", usage)


def load(ctx: Context) -> ServerConfig:
    from ..config import load_server_config

    return load_config(ctx, load_server_config, OVERRIDES)


def run_cmd(ctx: Context) -> int:
    from ..server import SpireServer

    cfg = load(ctx)
    start_logging(cfg)
    try:
        eventloop.run(SpireServer(cfg).run())
    except (ConfigError, eventloop.EventLoopError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    return 0


def validate_cmd(ctx: Context) -> int:
    from ..server import SpireServer

    return validate_config("server", lambda: load(ctx), lambda cfg: SpireServer(cfg).check_plugins())
