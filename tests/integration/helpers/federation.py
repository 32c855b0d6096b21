"""A whole trust domain for federation tests: a spire-server with its own trust domain name
and extra server config, and one join-token agent under it (the harness's config builders,
with the trust domain swapped)."""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from tests.integration.helpers.harness import (
    AGENT, SERVER, TD, AgentHandle, Proc, ServerHandle, agent_conf, free_port, server_conf, short_dir, wait_for,
)


@dataclass
class TrustDomainProcs:
    name: str
    server: ServerHandle
    agent: AgentHandle
    agent_id: str


def _swap(text: str, td: str) -> str:
    old = f'trust_domain = "{TD}"'
    assert old in text
    return text.replace(old, f'trust_domain = "{td}"')


@contextmanager
def trust_domain(td: str, extra_server: str = "") -> Iterator[TrustDomainProcs]:
    procs: list[Proc] = []
    dirs: list[Path] = []
    try:
        d = short_dir(Path("/tmp"), td.split(".")[0])
        dirs.append(d)
        sock, port = str(d / "api.sock"), free_port()
        conf = d / "server.conf"
        conf.write_text(_swap(server_conf(d, sock, port, extra_server), td))
        proc = Proc([SERVER, "run", "-config", str(conf)], d / "server.log").start()
        procs.append(proc)
        server = ServerHandle(d, conf, sock, port, proc)
        wait_for(lambda: server.healthy() or not proc.alive(), 60, f"{td} server healthcheck")
        assert proc.alive(), f"{td} server exited:\n" + proc.logs()

        token = server.token()
        ad = short_dir(Path("/tmp"), td.split(".")[0] + "-agent")
        dirs.append(ad)
        asock = str(ad / "public" / "api.sock")
        aconf = ad / "agent.conf"
        aconf.write_text(_swap(agent_conf(ad, server, asock, server.bundle_path()), td))
        args = [AGENT, "run", "-config", str(aconf), "-joinToken", token]
        aproc = Proc(args, ad / "agent.log").start()
        procs.append(aproc)
        agent = AgentHandle(ad, aconf, asock, aproc, args)
        wait_for(lambda: agent.healthy() or not aproc.alive(), 60, f"{td} agent healthcheck")
        assert aproc.alive(), f"{td} agent exited:\n" + aproc.logs()
        yield TrustDomainProcs(td, server, agent, f"spiffe://{td}/spire/agent/join_token/{token}")
    finally:
        for p in reversed(procs):
            p.stop()
        for x in dirs:
            shutil.rmtree(x, ignore_errors=True)
