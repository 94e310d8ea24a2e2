"""Key files for out-of-band provisioning (``fedsilo keys init``).

    fedsilo keys init --out keys/ [--pipeline pipeline.toml]
    # copy keys/he-secret.key to every silo's node (mode 0600), keep keys/he-public.key
    # for the orchestrator, and point the pipeline at the folder: [privacy] keys = "keys"

A file is a magic line, one JSON header line (scheme, kind, key id, parameters) and the
key bytes. Reading checks the header against the pipeline's parameters.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from privacy.codec import CodecError
from privacy.params import HEConfig
from privacy.schemes import SecretKeys, generate_keys

MAGIC = b"FEDSILO-KEY-1\n"
SECRET_NAME = "he-secret.key"
PUBLIC_NAME = "he-public.key"


def _params(config: HEConfig) -> dict[str, Any]:
    return asdict(config.packed if config.scheme == "packed" else config.ckks)


def _write(path: Path, header: dict[str, Any], body: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + body)
    os.chmod(path, mode)


def write_key_files(config: HEConfig, folder: Path) -> tuple[Path, Path]:
    """Generate one key set; write the silos' secret file (0600) and the orchestrator's public one."""
    if config.scheme == "off":
        raise CodecError("privacy.he = 'off' uses no keys")
    folder.mkdir(parents=True, exist_ok=True)
    keys = generate_keys(config)
    header = {"scheme": config.scheme, "key_id": keys.key_id, "params": _params(config)}
    secret, public = folder / SECRET_NAME, folder / PUBLIC_NAME
    _write(secret, {**header, "kind": "secret"}, keys.secret_bytes(), 0o600)
    _write(public, {**header, "kind": "public"}, keys.public_bytes(), 0o644)
    return secret, public


def write_secret_key_file(path: str | Path, config: HEConfig, keys: SecretKeys) -> None:
    """A silo's own copy of its HE secret key (mode 0600), so a resumed run can decrypt the
    checkpointed model. Written on the silo's node only."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {"scheme": config.scheme, "key_id": keys.key_id, "params": _params(config), "kind": "secret"}
    _write(path, header, keys.secret_bytes(), 0o600)


def _read(path: str | Path, config: HEConfig, kind: str) -> tuple[dict[str, Any], bytes]:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CodecError(f"cannot read key file {str(path)!r} on this node: {err.strerror}") from err
    if not data.startswith(MAGIC):
        raise CodecError(f"{str(path)!r} is not a fedsilo key file")
    header_line, _, body = data[len(MAGIC) :].partition(b"\n")
    header = json.loads(header_line)
    if header.get("kind") != kind:
        raise CodecError(f"{str(path)!r} holds a {header.get('kind')} key, expected the {kind} one")
    if header.get("scheme") != config.scheme:
        raise CodecError(f"{str(path)!r} is a {header.get('scheme')} key; the pipeline uses {config.scheme}")
    if header.get("params") != _params(config):
        raise CodecError(f"{str(path)!r} was made for other {config.scheme} parameters than the pipeline's")
    return header, body


def read_key_file(path: str | Path, config: HEConfig, *, secret: bool) -> bytes:
    return _read(path, config, "secret" if secret else "public")[1]


def read_public_key_file(path: str | Path, config: HEConfig) -> tuple[bytes, str]:
    """(public context bytes, key id) for the orchestrator."""
    header, body = _read(path, config, "public")
    return body, str(header["key_id"])
