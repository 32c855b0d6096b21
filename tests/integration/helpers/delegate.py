"""A caller of the agent's Delegated Identity API for the integration tests, as another uid/gid.

    delegate.py UID GID SOCKET PID   -> JSON: {"status": <grpc status name or "OK">, "message": ..., "ids": [...]}

It drops to ``UID``/``GID`` (no supplementary groups) and asks FetchJWTSVIDs for ``PID``; a
socket it may not connect to reports {"status": "OSError", "message": strerror}.
"""

import asyncio
import json
import os
import sys

# Import everything before dropping privileges: the interpreter's files may not be readable afterwards.
from grpclib.client import Channel
from grpclib.exceptions import GRPCError

from spire_py.proto.spire.api.agent.delegatedidentity.v1 import delegatedidentity_grpc
from spire_py.proto.spire.api.agent.delegatedidentity.v1 import delegatedidentity_pb2 as pb

import encodings.idna  # noqa: F401


async def call(sock: str, pid: int) -> dict:
    ch = Channel(path=sock)
    try:
        resp = await delegatedidentity_grpc.DelegatedIdentityStub(ch).FetchJWTSVIDs(
            pb.FetchJWTSVIDsRequest(audience=["a"], pid=pid), timeout=20)
        return {"status": "OK", "message": "", "ids": [s.id.path for s in resp.svids]}
    except GRPCError as exc:
        return {"status": exc.status.name, "message": exc.message, "ids": []}
    except OSError as exc:
        return {"status": "OSError", "message": exc.strerror, "ids": []}
    finally:
        ch.close()


def main() -> None:
    uid, gid, sock, pid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    print(json.dumps(asyncio.run(call(sock, pid))))


if __name__ == "__main__":
    main()
