"""tls.load_cert_chain hands the SVID and its key to ssl without writing them to a file
system: a server on a read-only root with no writable temp directory still starts."""

from __future__ import annotations

import datetime as dt
import os
import ssl
import tempfile
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from spire_py.common import tls


def _self_signed() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "svid")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(hours=1))
            .sign(key, hashes.SHA256()))
    return cert, key


@pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="memfd is Linux's")
def test_no_temporary_files_and_no_fds_left(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cert, key = _self_signed()
    # Every temp directory points at a path that does not exist: any file written there fails.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    before = set(os.listdir("/proc/self/fd"))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(ctx, [cert], key)
    assert set(os.listdir("/proc/self/fd")) == before  # the memory files are closed
    assert not (tmp_path / "missing").exists()


def test_a_key_that_does_not_match_the_certificate_is_refused() -> None:
    cert, _ = _self_signed()
    _, other = _self_signed()
    with pytest.raises(ssl.SSLError):
        tls.load_cert_chain(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), [cert], other)
