"""One entry point per HE scheme: make keys, reload them, build the orchestrator's codec."""

from __future__ import annotations

from typing import Protocol

from privacy.codec import Codec, PlainCodec
from privacy.params import HEConfig

SCHEMES = ("packed", "ckks", "off")


class SecretKeys(Protocol):
    key_id: str

    def codec(self, workers: int = 1) -> Codec:
        """``workers`` >= 2: encrypt and decrypt in that many processes (where the scheme can)."""
        ...

    def secret_bytes(self) -> bytes: ...

    def public_bytes(self) -> bytes: ...


def generate_keys(config: HEConfig) -> SecretKeys:
    if config.scheme == "packed":
        from privacy.packed import PackedKeys

        return PackedKeys.generate(config.packed)
    if config.scheme == "ckks":
        from privacy.he import CKKSKeys

        return CKKSKeys.generate(config.ckks)
    raise ValueError(f"scheme {config.scheme!r} has no keys")


def keys_from_secret(config: HEConfig, secret: bytes) -> SecretKeys:
    if config.scheme == "packed":
        from privacy.packed import PackedKeys

        return PackedKeys.from_secret_bytes(secret, config.packed)
    if config.scheme == "ckks":
        from privacy.he import CKKSKeys

        return CKKSKeys.from_secret_bytes(secret, config.ckks)
    raise ValueError(f"scheme {config.scheme!r} has no keys")


def public_codec(config: HEConfig, public: bytes, key_id: str) -> Codec:
    """What the orchestrator holds: adds and scales, never decrypts."""
    if config.scheme == "packed":
        from privacy.packed import public_packed_codec

        return public_packed_codec(public, config.packed, key_id)
    if config.scheme == "ckks":
        from privacy.he import public_codec as ckks_public_codec

        return ckks_public_codec(public, config.ckks, key_id)
    return PlainCodec()
