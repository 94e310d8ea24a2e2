"""Signed updates: each silo signs what it sends (Ed25519); the orchestrator checks.

The signature covers the silo's tag for this encoding ("round-3/cleveland"), the
aggregation weight and every byte and field of the payload, so an unsigned, replayed
(another round's), tampered or impersonated update is refused, naming the silo.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from privacy.aggregate import WeightedPayload

_RAW = serialization.Encoding.Raw, serialization.PublicFormat.Raw


class SignatureError(ValueError):
    """An update that must not be added; the message says why."""


@dataclass(frozen=True)
class SignedUpdate:
    silo: str
    tag: str  # "<phase>/<silo>": what this encoding is for
    item: WeightedPayload
    signature: bytes = b""


def update_digest(tag: str, item: WeightedPayload) -> bytes:
    p = item.payload
    h = hashlib.sha256(b"fedsilo-update-v1")
    header = repr((tag, item.weight, p.codec, p.length, p.bound, p.layout, p.scale, p.terms, p.key_id))
    h.update(header.encode())
    for chunk in p.chunks:
        h.update(struct.pack("<Q", len(chunk)))
        h.update(chunk)
    return h.digest()


class UpdateSigner:
    """A silo's Ed25519 key. Never leaves the silo; its public half is registered at set-up."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private

    @classmethod
    def generate(cls) -> UpdateSigner:
        return cls(Ed25519PrivateKey.generate())

    def public_bytes(self) -> bytes:
        return self._private.public_key().public_bytes(*_RAW)

    def sign(self, silo: str, tag: str, item: WeightedPayload) -> SignedUpdate:
        return SignedUpdate(silo, tag, item, self._private.sign(update_digest(tag, item)))

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("UpdateSigner holds a private key and must never be pickled")


def verify_update(update: SignedUpdate, silo: str, tag: str, public_key: bytes) -> WeightedPayload:
    """The update's payload if ``silo`` signed it for ``tag``; else `SignatureError`."""
    if update.silo != silo:
        raise SignatureError(f"update claims to come from silo {update.silo!r}")
    if not update.signature:
        raise SignatureError("update is not signed")
    if update.tag != tag:
        raise SignatureError(f"update was made for {update.tag!r}, expected {tag!r} (replayed?)")
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(
            update.signature, update_digest(tag, update.item)
        )
    except InvalidSignature as err:
        raise SignatureError("bad signature: tampered in transit or signed with another key") from err
    return update.item
