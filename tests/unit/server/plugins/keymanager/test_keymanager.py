"""Server KeyManager plugins "memory" and "disk", and common.keys."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from spire_py.common.files import atomic_write
from spire_py.common.keys import (
    KEY_TYPES, KeyTypeError, generate_key, jwt_alg_for, key_type_of, load_private_key, private_key_to_pem,
    public_key_der, public_keys_equal,
)
from spire_py.common.plugin import PluginConfigError, PluginContext, lookup
from spire_py.server.plugins.keymanager.disk import DiskKeyManager
from spire_py.server.plugins.keymanager.memory import KeyManagerError, MemoryKeyManager

CTX = PluginContext(trust_domain="example.org", side="server")


# --- common.keys ------------------------------------------------------------------------------
@pytest.mark.parametrize("key_type,alg", [("ec-p256", "ES256"), ("ec-p384", "ES384"), ("rsa-2048", "RS256")])
def test_key_types_round_trip(key_type, alg):
    key = generate_key(key_type)
    assert key_type_of(key) == key_type and key_type_of(key.public_key()) == key_type
    assert jwt_alg_for(key) == alg
    assert public_keys_equal(load_private_key(private_key_to_pem(key)), key)
    spki = serialization.load_der_public_key(public_key_der(key))
    assert public_keys_equal(spki, key)  # type: ignore[arg-type]


def test_rsa_4096_is_supported():
    assert "rsa-4096" in KEY_TYPES
    assert key_type_of(generate_key("rsa-4096")) == "rsa-4096"


def test_unknown_key_type_is_refused():
    with pytest.raises(KeyTypeError, match='unsupported key type "ed25519"'):
        generate_key("ed25519")


@pytest.mark.parametrize("args", [
    ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],       # PKCS#8
    ["genrsa", "-traditional", "2048"],                                         # PKCS#1
    ["ecparam", "-name", "prime256v1", "-genkey"],                              # EC PARAMETERS + SEC1
    ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],     # PKCS#8 EC
])
def test_load_private_key_reads_openssl_formats(args):
    pem = subprocess.run(["openssl", *args], check=True, capture_output=True).stdout
    key = load_private_key(pem)
    assert isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey))


def test_load_private_key_refuses_two_keys_and_garbage():
    two = private_key_to_pem(generate_key()) + private_key_to_pem(generate_key())
    with pytest.raises(KeyTypeError, match="single PEM private key"):
        load_private_key(two)
    with pytest.raises(KeyTypeError):
        load_private_key(b"not a key")


def test_atomic_write_creates_private_file_and_parents(tmp_path):
    path = tmp_path / "a" / "b" / "secret.json"
    atomic_write(path, b"one")
    atomic_write(path, b"two")
    assert path.read_bytes() == b"two"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700
    assert os.listdir(path.parent) == ["secret.json"]  # no temp file left behind


# --- memory -------------------------------------------------------------------------------------
def test_memory_is_registered_and_takes_no_config():
    assert lookup("server", "KeyManager", "memory") is MemoryKeyManager
    MemoryKeyManager.configure({}, CTX)
    with pytest.raises(PluginConfigError) as err:
        MemoryKeyManager.configure({"keys_path": "x"}, CTX)
    assert err.value.key == "keys_path"


def test_memory_generate_replaces_and_lists():
    km = MemoryKeyManager()
    assert km.get_key("x509-CA-A") is None and km.get_public_key("x509-CA-A") is None
    first = km.generate_key("x509-CA-A", "ec-p256")
    second = km.generate_key("x509-CA-A", "rsa-2048")
    km.generate_key("JWT-Signer-A", "ec-p384")
    assert km.get_key("x509-CA-A") is second and not public_keys_equal(first, second)
    assert public_keys_equal(km.get_public_key("x509-CA-A"), second)  # type: ignore[arg-type]
    assert [(k.key_id, k.key_type) for k in km.list_keys()] == [("JWT-Signer-A", "ec-p384"),
                                                               ("x509-CA-A", "rsa-2048")]


def test_memory_refuses_bad_key_type():
    with pytest.raises(KeyManagerError, match="unsupported key type"):
        MemoryKeyManager().generate_key("k", "dsa")


# --- disk -----------------------------------------------------------------------------------------
def test_disk_is_registered_and_requires_keys_path(tmp_path):
    assert lookup("server", "KeyManager", "disk") is DiskKeyManager
    with pytest.raises(PluginConfigError, match="keys_path is required") as err:
        DiskKeyManager.configure({}, CTX)
    assert err.value.key == "keys_path"
    with pytest.raises(PluginConfigError) as err:
        DiskKeyManager.configure({"keys_path": str(tmp_path / "k.json"), "directory": "x"}, CTX)
    assert err.value.key == "directory"
    DiskKeyManager.check_config({"keys_path": str(tmp_path / "k.json")}, CTX)
    assert not (tmp_path / "k.json").exists()


def test_disk_keys_survive_reload_with_private_file(tmp_path):
    path = tmp_path / "data" / "keys.json"
    km = DiskKeyManager.configure({"keys_path": str(path)}, CTX)
    ca = km.generate_key("x509-CA-A", "ec-p256")
    jwt = km.generate_key("JWT-Signer-A", "rsa-2048")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    again = DiskKeyManager.configure({"keys_path": str(path)}, CTX)
    assert public_keys_equal(again.get_key("x509-CA-A"), ca)  # type: ignore[arg-type]
    assert public_keys_equal(again.get_key("JWT-Signer-A"), jwt)  # type: ignore[arg-type]
    assert [k.key_id for k in again.list_keys()] == ["JWT-Signer-A", "x509-CA-A"]


def test_disk_file_has_spire_layout(tmp_path):
    path = tmp_path / "keys.json"
    km = DiskKeyManager(str(path))
    key = km.generate_key("x509-CA-A", "ec-p256")
    doc = json.loads(path.read_text())
    der = base64.b64decode(doc["keys"]["x509-CA-A"])
    assert public_keys_equal(serialization.load_der_private_key(der, None), key)  # type: ignore[arg-type]


def test_disk_reads_pem_entries_and_rejects_corrupt_file(tmp_path):
    path = tmp_path / "keys.json"
    key = generate_key()
    path.write_text(json.dumps({"keys": {"k": private_key_to_pem(key).decode()}}))
    assert public_keys_equal(DiskKeyManager(str(path)).get_key("k"), key)  # type: ignore[arg-type]
    path.write_text("{not json")
    with pytest.raises(PluginConfigError, match="unable to decode keys JSON") as err:
        DiskKeyManager.configure({"keys_path": str(path)}, CTX)
    assert err.value.key == "keys_path"
    path.write_text(json.dumps({"keys": {"k": "bm90IGEga2V5"}}))
    with pytest.raises(PluginConfigError, match='unable to parse key "k"'):
        DiskKeyManager.configure({"keys_path": str(path)}, CTX)


def test_disk_write_failure_leaves_memory_unchanged(tmp_path):
    km = DiskKeyManager(str(tmp_path / "d" / "keys.json"))
    (tmp_path / "d").write_text("")  # the parent is now a file: writes fail
    with pytest.raises(KeyManagerError, match="unable to write"):
        km.generate_key("k", "ec-p256")
    assert km.get_key("k") is None
