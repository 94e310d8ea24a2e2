"""Sealing secrets to a peer's X25519 key (ECIES: X25519 + HKDF-SHA256 + ChaCha20-Poly1305).

The HE key-generating silo seals its secret context to every other silo's public
key; the orchestrator relays the sealed bytes and cannot open them.

    python -c "from privacy.sealing import SealingKey, seal; k = SealingKey.generate(); \
print(k.open(seal(b'secret', k.public_bytes(), b'ctx')[0:], b'ctx'))"
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_INFO = b"fedsilo-seal-v1"
_RAW = serialization.Encoding.Raw, serialization.PublicFormat.Raw


class SealError(ValueError):
    """Sealed bytes that do not open with this key (wrong recipient or tampered)."""


def _derive(shared: bytes, ephemeral_pub: bytes, recipient_pub: bytes) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=ephemeral_pub + recipient_pub, info=_INFO)
    return hkdf.derive(shared)


def seal(secret: bytes, recipient_public: bytes, associated_data: bytes) -> bytes:
    """Encrypt ``secret`` so that only the holder of ``recipient_public``'s key opens it."""
    ephemeral = X25519PrivateKey.generate()
    ephemeral_pub = ephemeral.public_key().public_bytes(*_RAW)
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient_public))
    key = _derive(shared, ephemeral_pub, recipient_public)
    nonce = os.urandom(12)
    return ephemeral_pub + nonce + ChaCha20Poly1305(key).encrypt(nonce, secret, associated_data)


class SealingKey:
    """A silo's X25519 key pair for receiving sealed secrets. Never leaves the silo."""

    def __init__(self, private: X25519PrivateKey) -> None:
        self._private = private

    @classmethod
    def generate(cls) -> SealingKey:
        return cls(X25519PrivateKey.generate())

    def public_bytes(self) -> bytes:
        return self._private.public_key().public_bytes(*_RAW)

    def agree(self, peer_public: bytes) -> bytes:
        """The raw X25519 shared secret with a peer (secure aggregation derives pair keys from it)."""
        return self._private.exchange(X25519PublicKey.from_public_bytes(peer_public))

    def open(self, sealed: bytes, associated_data: bytes) -> bytes:
        if len(sealed) < 32 + 12 + 16:
            raise SealError("sealed message is too short")
        ephemeral_pub, nonce, body = sealed[:32], sealed[32:44], sealed[44:]
        shared = self._private.exchange(X25519PublicKey.from_public_bytes(ephemeral_pub))
        key = _derive(shared, ephemeral_pub, self.public_bytes())
        try:
            return ChaCha20Poly1305(key).decrypt(nonce, body, associated_data)
        except InvalidTag as err:
            raise SealError("sealed key does not open: wrong recipient or tampered bytes") from err

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("SealingKey holds a private key and must never be pickled")
