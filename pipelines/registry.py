"""The MLflow Model Registry as fedsilo uses it: model URIs, reachability, clear errors.

    python -c "from pipelines.registry import Registry; \
print(Registry('sqlite:///mlruns.db').resolve('models:/heart-disease-classifier@champion'))"

Every call is retried with exponential backoff on connection failures (`silo.retry`);
an unreachable tracking server is found in seconds by a TCP check before MLflow's own
retries (MLFLOW_HTTP_REQUEST_MAX_RETRIES, 7 by default, minutes) would start.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from pipelines.tracking import resolve_tracking_uri
from silo.retry import ATTEMPTS, FIRST_DELAY_S, RegistryUnavailable, retry_transient

logger = logging.getLogger(__name__)

T = TypeVar("T")
MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[A-Za-z0-9_-]+)|/(?P<version>\d+))$")
CHAMPION = "champion"


class RegistryError(Exception):
    """A registry problem a user must act on. ``exit_code``: 2 bad input, 1 registry down."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class ModelRef:
    name: str
    alias: str | None = None
    version: str | None = None

    @classmethod
    def parse(cls, uri: str) -> ModelRef:
        match = MODEL_URI.match(uri)
        if match is None:
            raise RegistryError(
                f"{uri!r} is not a registered model URI: use models:/NAME@ALIAS or models:/NAME/VERSION"
            )
        return cls(match["name"], match["alias"], match["version"])

    def __str__(self) -> str:
        return f"models:/{self.name}@{self.alias}" if self.alias else f"models:/{self.name}/{self.version}"


@dataclass(frozen=True)
class ResolvedModel:
    requested: str  # what the user wrote (an alias moves; a version does not)
    name: str
    version: str
    run_id: str
    tags: dict[str, str] = field(default_factory=dict)  # the version's tags (fedsilo.privacy.*, ...)

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def describe(self) -> str:
        return self.uri if self.requested == self.uri else f"{self.requested} = version {self.version}"


def default_tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else the bundled example's store ./mlruns.db."""
    return resolve_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlruns.db")


def check_reachable(uri: str, attempts: int = ATTEMPTS, first_delay_s: float = FIRST_DELAY_S) -> None:
    """An http(s) tracking server must answer MLflow's /health (with retries and backoff; seconds,
    not MLflow's own minutes of retries); a sqlite store's folder must exist. Raises
    `RegistryError` naming the URI."""
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        import requests

        delay = first_delay_s
        for attempt in range(1, attempts + 1):
            try:
                response = requests.get(uri.rstrip("/") + "/health", timeout=3)
            except requests.RequestException as err:
                reason = type(err).__name__ if not str(err) else str(err).split(":")[-1].strip(" )'\"")
                if attempt == attempts:
                    raise RegistryError(
                        f"cannot reach the MLflow tracking server at {uri} ({reason}) after {attempts} "
                        "attempts with backoff ([tracking] mlflow_uri, --tracking-uri or "
                        "MLFLOW_TRACKING_URI); start one with infra/mlflow-server.sh (infra/README.md), "
                        "or use a sqlite:/// store",
                        exit_code=1,
                    ) from None
                logger.warning("MLflow at %s unreachable (%s); retrying in %.1f s", uri, reason, delay)
                time.sleep(delay)
                delay *= 2
                continue
            if response.status_code != 200:
                raise RegistryError(
                    f"the MLflow tracking server at {uri} answered /health with HTTP "
                    f"{response.status_code}; is it an MLflow server?",
                    exit_code=1,
                )
            return
    elif uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        if not folder.is_dir():
            raise RegistryError(f"the MLflow store {uri}: folder {folder} does not exist")


class Registry:
    """An MlflowClient with retries and errors that list what does exist."""

    def __init__(self, tracking_uri: str) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = tracking_uri
        check_reachable(tracking_uri)
        self.client = MlflowClient(tracking_uri, registry_uri=tracking_uri)

    def call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return retry_transient(fn, what, self.uri)
        except RegistryUnavailable as err:
            raise RegistryError(str(err), exit_code=1) from None

    def model(self, name: str) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return self.call(f"reading model {name}", lambda: self.client.get_registered_model(name))
        except MlflowException:
            names = sorted(m.name for m in self.call("listing models", self.client.search_registered_models))
            raise RegistryError(
                f"registered model {name!r} does not exist in {self.uri}; "
                f"registered models: {', '.join(names) or '(none)'}"
            ) from None

    def versions(self, name: str) -> list[Any]:
        self.model(name)
        found = self.call(
            f"listing versions of {name}", lambda: self.client.search_model_versions(f"name='{name}'")
        )
        return sorted(found, key=lambda v: int(v.version))

    def _inventory(self, name: str) -> str:
        aliases = self.model(name).aliases or {}
        versions = [str(v.version) for v in self.versions(name)]
        alias_text = ", ".join(f"@{a} (version {v})" for a, v in sorted(aliases.items())) or "none"
        return f"its versions: {', '.join(versions) or 'none'}; its aliases: {alias_text}"

    def version(self, name: str, version: str) -> Any:
        from mlflow.exceptions import MlflowException

        self.model(name)
        try:
            return self.call(
                f"reading {name} version {version}", lambda: self.client.get_model_version(name, version)
            )
        except MlflowException:
            raise RegistryError(f"{name} has no version {version}; {self._inventory(name)}") from None

    def by_alias(self, name: str, alias: str) -> Any | None:
        """The version holding ``alias``, or None."""
        aliases = self.model(name).aliases or {}
        return self.version(name, str(aliases[alias])) if alias in aliases else None

    def resolve(self, uri: str) -> ResolvedModel:
        """``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` -> the version it is now."""
        ref = ModelRef.parse(uri)
        if ref.alias is not None:
            found = self.by_alias(ref.name, ref.alias)
            if found is None:
                raise RegistryError(
                    f"{uri}: {ref.name} has no alias @{ref.alias}; {self._inventory(ref.name)}"
                )
        else:
            assert ref.version is not None
            found = self.version(ref.name, ref.version)
        return ResolvedModel(uri, ref.name, str(found.version), found.run_id or "", dict(found.tags or {}))

    def set_tags(self, name: str, version: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.call(
                f"tagging {name} version {version}",
                lambda k=key, v=value: self.client.set_model_version_tag(name, version, k, v),  # type: ignore[misc]
            )
