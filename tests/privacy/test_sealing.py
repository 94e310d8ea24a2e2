"""Sealed key transport: only the intended silo opens the HE secret context."""

from __future__ import annotations

import pytest

from privacy.sealing import SealError, SealingKey, seal


def test_recipient_opens_what_was_sealed_to_it() -> None:
    recipient = SealingKey.generate()
    sealed = seal(b"secret context", recipient.public_bytes(), b"silo-a")
    assert recipient.open(sealed, b"silo-a") == b"secret context"
    assert b"secret context" not in sealed


def test_another_key_cannot_open() -> None:
    recipient, eavesdropper = SealingKey.generate(), SealingKey.generate()
    sealed = seal(b"secret", recipient.public_bytes(), b"silo-a")
    with pytest.raises(SealError, match="does not open"):
        eavesdropper.open(sealed, b"silo-a")


def test_tampered_bytes_do_not_open() -> None:
    recipient = SealingKey.generate()
    sealed = bytearray(seal(b"secret", recipient.public_bytes(), b"silo-a"))
    sealed[-1] ^= 1
    with pytest.raises(SealError):
        recipient.open(bytes(sealed), b"silo-a")


def test_bytes_sealed_for_one_silo_do_not_open_as_another() -> None:
    recipient = SealingKey.generate()
    sealed = seal(b"secret", recipient.public_bytes(), b"silo-a")
    with pytest.raises(SealError):
        recipient.open(sealed, b"silo-b")


def test_truncated_bytes_are_refused() -> None:
    with pytest.raises(SealError, match="too short"):
        SealingKey.generate().open(b"short", b"x")
