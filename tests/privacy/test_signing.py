"""Signed updates: the orchestrator adds only what the named silo signed for this round."""

from __future__ import annotations

import dataclasses

import pytest

from privacy.aggregate import encode_weighted
from privacy.codec import PlainCodec
from privacy.signing import SignatureError, SignedUpdate, UpdateSigner, verify_update

CODEC = PlainCodec()


def _update(
    signer: UpdateSigner, tag: str = "round-3/a", values: tuple[float, ...] = (1.0, 2.0)
) -> SignedUpdate:
    return signer.sign("a", tag, encode_weighted(CODEC, values, 10.0, tag=tag))


def test_a_signed_update_verifies() -> None:
    signer = UpdateSigner.generate()
    update = _update(signer)
    assert verify_update(update, "a", "round-3/a", signer.public_bytes()) is update.item


def test_unsigned_is_refused() -> None:
    signer = UpdateSigner.generate()
    unsigned = dataclasses.replace(_update(signer), signature=b"")
    with pytest.raises(SignatureError, match="not signed"):
        verify_update(unsigned, "a", "round-3/a", signer.public_bytes())


def test_an_earlier_rounds_update_is_refused_as_replayed() -> None:
    signer = UpdateSigner.generate()
    with pytest.raises(SignatureError, match=r"made for 'round-2/a', expected 'round-3/a' \(replayed\?\)"):
        verify_update(_update(signer, tag="round-2/a"), "a", "round-3/a", signer.public_bytes())


def test_a_relabelled_replay_fails_the_signature() -> None:
    signer = UpdateSigner.generate()
    old = _update(signer, tag="round-2/a")
    relabelled = dataclasses.replace(old, tag="round-3/a")
    with pytest.raises(SignatureError, match="bad signature"):
        verify_update(relabelled, "a", "round-3/a", signer.public_bytes())


def test_tampered_payload_or_weight_is_refused() -> None:
    signer = UpdateSigner.generate()
    update = _update(signer)
    forged = encode_weighted(CODEC, (1.0, 2.5), 10.0, tag="round-3/a")
    with pytest.raises(SignatureError, match="bad signature"):
        verify_update(dataclasses.replace(update, item=forged), "a", "round-3/a", signer.public_bytes())
    heavier = dataclasses.replace(update.item, weight=1000.0)
    with pytest.raises(SignatureError, match="bad signature"):
        verify_update(dataclasses.replace(update, item=heavier), "a", "round-3/a", signer.public_bytes())


def test_another_silos_key_is_refused() -> None:
    ours, impostor = UpdateSigner.generate(), UpdateSigner.generate()
    with pytest.raises(SignatureError, match="bad signature"):
        verify_update(_update(impostor), "a", "round-3/a", ours.public_bytes())


def test_an_update_claiming_another_silo_is_refused() -> None:
    signer = UpdateSigner.generate()
    with pytest.raises(SignatureError, match="claims to come from silo 'a'"):
        verify_update(_update(signer), "b", "round-3/b", signer.public_bytes())
