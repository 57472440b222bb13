"""A throwaway PKI made at test time with ``cryptography``: a test CA, a second CA nobody trusts,
broker certificates (for 127.0.0.1, or for a name that does not match it) and client
certificates, written as PEM files into a tmp folder for mosquitto and paho to read.

Keys are EC P-256: making one takes well under a millisecond, where RSA-2048 takes ~50 ms, and
both mosquitto (OpenSSL) and Python's ssl accept them.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: Long enough for any test run, short enough that a leaked test key is worthless soon.
VALID_DAYS = 2
#: Backdated so a clock a little behind (a VM just resumed) still accepts the certificates.
BACKDATE = dt.timedelta(hours=1)
#: The address the test brokers listen on (tests/helpers/mqtt.py Broker).
BROKER_IP = "127.0.0.1"


@dataclass(frozen=True)
class Issuer:
    """A CA: its key signs, its certificate file is what a peer trusts (``ca_file``)."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    cert_file: Path


@dataclass(frozen=True)
class KeyPair:
    """A leaf certificate and its private key, as PEM files."""

    cert_file: Path
    key_file: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgesight tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.write_bytes(pem)
    path.chmod(0o600)


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
    )


def make_ca(folder: Path, name: str) -> Issuer:
    """A self-signed CA certificate ``<folder>/<name>.crt``."""
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(f"{name} test CA")
    cert = (
        _builder(subject, subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file = folder / f"{name}.crt"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Issuer(key, cert, cert_file)


def issue(
    ca: Issuer, folder: Path, name: str, *, server: bool, hosts: tuple[str, ...] = ()
) -> KeyPair:
    """A leaf certificate signed by ``ca``: ``<folder>/<name>.crt`` and ``<name>.key``.

    A server certificate names ``hosts`` (IP addresses or DNS names) in its subjectAltName,
    which is all Python's ssl matches a host name against; a client certificate's common
    name is ``name`` (mosquitto's ``use_identity_as_username`` would make it the user name).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        _builder(_name(name), ca.cert.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    )
    if hosts:
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca.key, hashes.SHA256())
    pair = KeyPair(folder / f"{name}.crt", folder / f"{name}.key")
    pair.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, pair.key_file)
    return pair


@dataclass(frozen=True)
class Pki:
    """Everything the TLS tests need, made once into one folder."""

    ca: Issuer  # the CA the broker's and clients' certificates come from
    other_ca: Issuer  # a CA that signed nothing here: trusting it must fail
    server: KeyPair  # the broker's certificate, for 127.0.0.1 and localhost
    mismatched_server: KeyPair  # signed by ``ca`` but for broker.example.net only
    client: KeyPair  # a device's client certificate (common name devA)


def make_pki(folder: Path) -> Pki:
    """A CA, a second untrusted CA, two broker certificates and one client certificate."""
    folder.mkdir(parents=True, exist_ok=True)
    ca = make_ca(folder, "ca")
    return Pki(
        ca=ca,
        other_ca=make_ca(folder, "other-ca"),
        server=issue(ca, folder, "broker", server=True, hosts=(BROKER_IP, "localhost")),
        mismatched_server=issue(
            ca, folder, "broker-elsewhere", server=True, hosts=("broker.example.net",)
        ),
        client=issue(ca, folder, "devA", server=False),
    )
