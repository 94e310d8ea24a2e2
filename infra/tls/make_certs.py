"""Make a CA and a certificate per Ray node for Ray's mutual TLS (``RAY_USE_TLS=1``).

    python infra/tls/make_certs.py --out certs/ --node head=127.0.0.1 --node cleveland=10.0.0.12
    # writes certs/ca.crt, certs/ca.key (keep it offline), and certs/<node>.crt + .key per node,
    # each valid for its IP, "localhost" and 127.0.0.1. Then on each node (infra/ray-secure.sh):
    export RAY_USE_TLS=1 RAY_TLS_CA_CERT=certs/ca.crt \\
           RAY_TLS_SERVER_CERT=certs/<node>.crt RAY_TLS_SERVER_KEY=certs/<node>.key

Ray uses the node certificate both to serve and as the client certificate, so every process
of the cluster, and every driver that joins it, needs a certificate signed by this CA.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID = datetime.timedelta(days=365)


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)


def _write_cert(cert: x509.Certificate, path: Path) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def make_ca(out: Path, name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALID)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # key_cert_sign, crl_sign
        .sign(key, hashes.SHA256())
    )
    _write_key(key, out / "ca.key")
    _write_cert(cert, out / "ca.crt")
    return key, cert


def make_node(
    out: Path, node: str, ip: str, ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    addresses = {ipaddress.ip_address(ip), ipaddress.ip_address("127.0.0.1")}
    names = [
        x509.DNSName("localhost"),
        x509.DNSName(node),
        *(x509.IPAddress(a) for a in sorted(addresses, key=str)),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALID)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(key, out / f"{node}.key")
    _write_cert(cert, out / f"{node}.crt")


def main() -> None:
    parser = argparse.ArgumentParser(description="CA and node certificates for Ray's TLS")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--node", action="append", required=True, metavar="NAME=IP", help="repeat per node")
    parser.add_argument("--ca-name", default="fedsilo cluster CA")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    ca_key, ca = make_ca(args.out, args.ca_name)
    for spec in args.node:
        name, _, ip = spec.partition("=")
        make_node(args.out, name, ip or "127.0.0.1", ca_key, ca)
    nodes = ", ".join(n.partition("=")[0] for n in args.node)
    print(f"wrote {args.out}/ca.crt, ca.key and a certificate per node: {nodes}")


if __name__ == "__main__":
    main()
