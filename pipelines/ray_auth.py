"""Ray's token authentication, chosen before Ray is imported (every command that joins a cluster)."""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

__all__ = ["prepare_ray_auth"]


def prepare_ray_auth(environ: MutableMapping[str, str] = os.environ) -> None:
    """Before Ray is imported: heads started by Ray >= 2.59 require a token that a client sends
    only with RAY_AUTH_MODE=token, read once when Ray loads. A token-mode client also joins a
    head without authentication, so choose token mode whenever a token is at hand."""
    if "RAY_AUTH_MODE" in environ:
        return
    token_file = Path(environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if environ.get("RAY_AUTH_TOKEN") or token_file.is_file():
        environ["RAY_AUTH_MODE"] = "token"
