"""A workload process for the integration tests: optionally drops to another uid,
then uses py-spiffe (unmodified) against the agent's Workload API.

    workload.py UID SOCKET fetch                  -> JSON: spiffe_id, chain, bundle, jwt
    workload.py UID SOCKET serve PORT PEER_ID     -> mTLS server with its SVID, one connection
    workload.py UID SOCKET connect PORT PEER_ID   -> mTLS client with its SVID
"""

import json
import os
import socket
import ssl
import sys
import tempfile

# Import everything before dropping privileges: the interpreter's own files may not be
# readable by the target uid.
import spiffe  # noqa: F401
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from spiffe import SpiffeId, WorkloadApiClient

import encodings.idna  # noqa: F401


def drop(uid: int) -> None:
    if uid != os.getuid():
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)


def pem(certs) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


def context(svid, bundle, server: bool, peer_id: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    d = tempfile.mkdtemp()
    cert_path, key_path = os.path.join(d, "svid.pem"), os.path.join(d, "key.pem")
    with open(cert_path, "w") as f:
        f.write(pem(svid.cert_chain))
    with open(key_path, "wb") as f:
        f.write(svid.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    ctx.load_cert_chain(cert_path, key_path)
    ctx.load_verify_locations(cadata=pem(bundle.x509_authorities))
    return ctx


def peer_spiffe_id(sslsock: ssl.SSLSocket) -> str:
    cert = x509.load_der_x509_certificate(sslsock.getpeercert(binary_form=True))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    (uri,) = san.get_values_for_type(x509.UniformResourceIdentifier)
    return uri


def main() -> None:
    uid, sock, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    drop(uid)
    client = WorkloadApiClient(f"unix://{sock}", default_timeout=20)
    ctx = client.fetch_x509_context()
    svid = ctx.default_svid
    bundle = ctx.x509_bundle_set.get_bundle_for_trust_domain(svid.spiffe_id.trust_domain)
    if mode == "fetch":
        jwt = client.fetch_jwt_svid({"test-audience"})
        print(json.dumps({
            "uid": os.getuid(),
            "spiffe_id": str(svid.spiffe_id),
            "chain": pem(svid.cert_chain),
            "bundle": pem(bundle.x509_authorities),
            "jwt": jwt.token,
        }))
        return
    port, peer = int(sys.argv[4]), sys.argv[5]
    if mode == "serve":
        with socket.create_server(("127.0.0.1", port)) as srv:
            print("listening", flush=True)
            srv.settimeout(30)
            conn, _ = srv.accept()
            with context(svid, bundle, True, peer).wrap_socket(conn, server_side=True) as tls:
                got = peer_spiffe_id(tls)
                assert got == peer, f"peer is {got}, expected {peer}"
                tls.sendall(f"hello {got} from {svid.spiffe_id}".encode())
        return
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
        with context(svid, bundle, False, peer).wrap_socket(raw) as tls:
            got = peer_spiffe_id(tls)
            assert got == peer, f"peer is {got}, expected {peer}"
            print(tls.recv(4096).decode())
    _ = SpiffeId


if __name__ == "__main__":
    main()
