"""Mutual TLS between a coordinator and its sites: the site connects out and pins the
coordinator's certificate; the coordinator requires a client certificate its CA signed whose
common name is the site's name (certificates from infra/tls/make_certs.py; a site with its own
CA gives the coordinator that CA's certificate to add to its bundle)."""

from __future__ import annotations

import hashlib
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID


class TLSError(ValueError):
    """A certificate or key that cannot be used, or a peer that is not the one expected."""


def server_context(certificate: Path, key: Path, ca: Path) -> ssl.SSLContext:
    """The coordinator's side: a client certificate signed by ``ca`` is required (a PEM file of
    one or more CAs: the federation's, and those of sites that bring their own)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(context, certificate, key)
    try:
        context.load_verify_locations(cafile=str(ca))
    except (OSError, ssl.SSLError) as err:
        raise TLSError(f"cannot read the CA certificate {ca}: {err}") from None
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(certificate: Path, key: Path) -> ssl.SSLContext:
    """The site's side: it presents its certificate, and checks the coordinator's against the pin
    itself (``peer_sha256`` after the handshake), so no CA or host name is trusted."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the pinned fingerprint is the check (see module doc)
    _load_chain(context, certificate, key)
    return context


def _load_chain(context: ssl.SSLContext, certificate: Path, key: Path) -> None:
    try:
        context.load_cert_chain(certfile=str(certificate), keyfile=str(key))
    except (OSError, ssl.SSLError) as err:
        raise TLSError(f"cannot use the certificate {certificate} with key {key}: {err}") from None


def peer_sha256(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str:
    """The sha256 fingerprint (hex) of the peer's certificate, "" when it sent none."""
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    return hashlib.sha256(der).hexdigest() if der else ""


def peer_name(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str:
    """The common name of the peer's certificate ("" when it sent none)."""
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        return ""
    names = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""
