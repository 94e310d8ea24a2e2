"""Out-of-band key files: written once, checked against the pipeline's parameters when read."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from privacy.codec import CodecError
from privacy.keyfile import read_key_file, read_public_key_file, write_key_files
from privacy.params import HEConfig, PackedParams
from privacy.schemes import keys_from_secret, public_codec

CONFIG = HEConfig("packed", packed=PackedParams(max_silos=4))


def test_keys_written_and_read_back_work_together(tmp_path: Path) -> None:
    # Prepare
    secret_path, public_path = write_key_files(CONFIG, tmp_path / "keys")
    # Execute
    keys = keys_from_secret(CONFIG, read_key_file(secret_path, CONFIG, secret=True))
    public, key_id = read_public_key_file(public_path, CONFIG)
    orchestrator = public_codec(CONFIG, public, key_id)
    # Assert
    assert key_id == keys.key_id
    silo = keys.codec()
    total = orchestrator.add(silo.encode([1.0], bound=2.0, tag="a"), silo.encode([0.5], bound=2.0, tag="b"))
    assert silo.decode(total)[0] == pytest.approx(1.5, abs=1e-4)
    assert stat.S_IMODE(secret_path.stat().st_mode) == 0o600
    assert keys.secret_bytes() not in public_path.read_bytes()


def test_other_parameters_are_refused(tmp_path: Path) -> None:
    secret_path, _ = write_key_files(CONFIG, tmp_path)
    other = HEConfig("packed", packed=PackedParams(max_silos=8))
    with pytest.raises(CodecError, match="made for other packed parameters"):
        read_key_file(secret_path, other, secret=True)


def test_the_public_file_is_not_a_secret_key(tmp_path: Path) -> None:
    _, public_path = write_key_files(CONFIG, tmp_path)
    with pytest.raises(CodecError, match="holds a public key, expected the secret one"):
        read_key_file(public_path, CONFIG, secret=True)


def test_a_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(CodecError, match="cannot read key file .*nope.key.* on this node"):
        read_key_file(tmp_path / "nope.key", CONFIG, secret=True)


def test_scheme_mismatch(tmp_path: Path) -> None:
    secret_path, _ = write_key_files(HEConfig("ckks"), tmp_path)
    with pytest.raises(CodecError, match="is a ckks key; the pipeline uses packed"):
        read_key_file(secret_path, CONFIG, secret=True)
