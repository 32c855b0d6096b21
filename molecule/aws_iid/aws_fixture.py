"""The AWS side of the aws_iid fleet scenario, run on the controller by its prepare step.

moto in server mode (EC2 and IAM, as the SPIRE server's boto3 calls them through
AWS_ENDPOINT_URL) and an instance metadata service (IMDSv2) on the scenario network's
gateway address, so the fleet hosts reach both and nothing else does. Each agent host is one
EC2 instance launched here with its tags; the metadata service answers a host (by its address
on the network) with that instance's identity document, signed by a test CA whose certificate
the server trusts through aws_ca_certificates. Under /forged it serves the same document signed
by another key (the scenario's negative case). The state the playbooks and tests need (URLs,
the CA certificate, instance IDs) is written to --state as JSON once everything listens.

Runs from the project's venv (moto, boto3) with the repository on PYTHONPATH; exits on SIGTERM
(the cleanup step) or after --lifetime seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import secrets
import signal
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.hazmat.primitives import serialization

from tests.unit.helpers.aws import REGION, IIDSigner, document, launch_instance

PATHS = ("document", "signature", "rsa2048")


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def imds_handler(by_address: dict[str, dict[str, dict[str, str]]]) -> type[BaseHTTPRequestHandler]:
    tokens: set[str] = set()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt: str, *args: Any) -> None:
            sys.stderr.write("imds %s %s\n" % (self.client_address[0], fmt % args))

        def _send(self, code: int, body: str = "") -> None:
            raw = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _split(self) -> tuple[str, str]:
            if self.path.startswith("/forged/"):
                return "forged", self.path[len("/forged"):]
            return "signed", self.path

        def do_PUT(self) -> None:
            path = self._split()[1]
            if path != "/latest/api/token" or not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                return self._send(400)
            token = secrets.token_urlsafe(16)
            tokens.add(token)
            self._send(200, token)

        def do_GET(self) -> None:
            if self.headers.get("X-aws-ec2-metadata-token") not in tokens:
                return self._send(401)
            kind, path = self._split()
            docs = by_address.get(self.client_address[0])
            prefix = "/latest/dynamic/instance-identity/"
            if docs is None or not path.startswith(prefix) or path[len(prefix):] not in PATHS:
                return self._send(404)
            self._send(200, docs[kind][path[len(prefix):]])

    return Handler


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bind", required=True, help="the scenario network's gateway address")
    ap.add_argument("--state", required=True, help="where to write the JSON state")
    ap.add_argument("--addresses", required=True, help='JSON: {"host": "its address on the network"}')
    ap.add_argument("--tags", default="{}", help='JSON: {"host": {"tag key": "value"}}')
    ap.add_argument("--lifetime", type=float, default=3600)
    args = ap.parse_args()
    addresses: dict[str, str] = json.loads(args.addresses)
    tags: dict[str, dict[str, str]] = json.loads(args.tags)

    # boto3 here talks to moto only.
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION=REGION,
                      AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE="/dev/null",
                      AWS_SHARED_CREDENTIALS_FILE="/dev/null")
    os.environ.pop("AWS_SESSION_TOKEN", None)
    import boto3
    from moto.server import ThreadedMotoServer

    moto_port = free_port(args.bind)
    moto = ThreadedMotoServer(ip_address=args.bind, port=moto_port, verbose=False)
    moto.start()
    moto_url = f"http://{args.bind}:{moto_port}"
    ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=moto_url)
    iam = boto3.client("iam", region_name=REGION, endpoint_url=moto_url)

    signer, impostor = IIDSigner(), IIDSigner("Impostor")
    instances: dict[str, str] = {}
    by_address: dict[str, dict[str, dict[str, str]]] = {}
    for name, address in sorted(addresses.items()):
        inst = launch_instance(ec2, iam, {"Name": name, **tags.get(name, {})}, profile=f"spire-{name}")
        instances[name] = inst["InstanceId"]
        doc = document(inst["InstanceId"])
        by_address[address] = {kind: dataclasses.asdict(s.sign(doc)) for kind, s in (("signed", signer), ("forged", impostor))}

    imds = ThreadingHTTPServer((args.bind, free_port(args.bind)), imds_handler(by_address))
    imds.daemon_threads = True
    threading.Thread(target=imds.serve_forever, name="imds", daemon=True).start()

    state = {
        "moto_url": moto_url,
        "imds_url": f"http://{args.bind}:{imds.server_address[1]}",
        "ca_pem": signer.cert.public_bytes(serialization.Encoding.PEM).decode(),
        "region": REGION,
        "instances": instances,
    }
    tmp = args.state + ".tmp"
    with open(tmp, "w") as f:
        json.dump(state, f, indent=2)
    os.replace(tmp, args.state)
    sys.stderr.write(f"aws fixture ready: {json.dumps({k: v for k, v in state.items() if k != 'ca_pem'})}\n")
    sys.stderr.flush()

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait(args.lifetime)
    imds.shutdown()
    moto.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
