"""SITE.toml: one organization's site, validated with pydantic; errors name the file, line and field.

fedsilo site serve --site SITE.toml
fedsilo site audit --site SITE.toml

Relative paths are relative to the folder that holds SITE.toml.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from sites.terms import TABULAR
from sites.tomlfile import FileProblems, key_lines, problem, validate

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
SHA256 = re.compile(r"^[0-9a-f]{64}$")
FACTORY = re.compile(r"^[\w.]+:\w+$")  # a "package.module:factory" model: imports code on the site
DEFAULT_STATE = ".fedsilo-site"


class SiteError(ValueError):
    """A SITE.toml the site's operator must fix; each problem names the file and field."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{path}: invalid site file\n  " + "\n  ".join(problems))


def _approvable(value: str) -> str:
    if value != TABULAR and not SHA256.match(value) and not FACTORY.match(value):
        raise ValueError(
            f"{value!r} is neither {TABULAR!r}, a task file's sha256 (64 lowercase hex digits) "
            "nor a 'package.module:factory' model"
        )
    return value


def normal_fingerprint(value: str) -> str:
    """A sha256 fingerprint as fedsilo compares them: 64 lowercase hex digits, no colons."""
    normal = value.replace(":", "").lower()  # "AB:CD:..." as openssl prints it
    if not SHA256.match(normal):
        raise ValueError(f"{value!r} is not a certificate's sha256 fingerprint (64 hex digits)")
    return normal


class _Section(BaseModel):
    # strict: TOML has types; "yes" is not a bool, "2" not a number (an int is still a float)
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class SiteSection(_Section):
    name: str = Field(pattern=NAME)
    data: str = Field(min_length=1)
    state: str = DEFAULT_STATE
    audit_log: str | None = None
    ray_address: str | None = Field(None, min_length=1)
    num_cpus: float = Field(1.0, gt=0)
    num_gpus: float = Field(0.0, ge=0)
    he_secret_key: str | None = None
    max_message_mb: int = Field(512, ge=1)  # a larger message from the coordinator is refused


class CoordinatorSection(_Section):
    address: str
    certificate: str
    reconnect_max_s: float = Field(30.0, gt=0)

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("use 'host:port', e.g. 'fed.example.org:7443'")
        return value


class TlsSection(_Section):
    certificate: str
    key: str


class PolicySection(_Section):
    approved_tasks: list[Annotated[str, AfterValidator(_approvable)]] = Field(
        default_factory=lambda: [TABULAR]
    )
    require_he: bool = True
    require_secagg: bool = False
    max_epsilon: float | None = Field(None, gt=0)
    max_delta: float | None = Field(None, gt=0, lt=1)
    min_silos: int = Field(2, ge=1)
    max_rounds: int | None = Field(None, ge=1)
    allowed_metrics: list[Annotated[str, Field(min_length=1)]] | None = None
    publish: bool = True
    coordinators: list[Annotated[str, AfterValidator(normal_fingerprint)]] = Field(default_factory=list)
    pipelines: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)


class SiteConfig(_Section):
    site: SiteSection
    coordinator: CoordinatorSection
    tls: TlsSection
    policy: PolicySection = Field(default_factory=PolicySection)


def fingerprint(certificate: str | Path | bytes) -> str:
    """sha256 hex of a certificate's DER, from a PEM or DER file or its bytes."""
    raw = certificate if isinstance(certificate, bytes) else Path(certificate).read_bytes()
    if raw.lstrip().startswith(b"-----BEGIN"):
        cert = x509.load_pem_x509_certificate(raw)
    else:
        cert = x509.load_der_x509_certificate(raw)
    return cert.fingerprint(hashes.SHA256()).hex()


@dataclass(frozen=True)
class LoadedSite:
    config: SiteConfig
    path: Path  # SITE.toml, absolute

    def _resolve(self, value: str) -> Path:
        return (self.path.parent / Path(value).expanduser()).resolve()

    @property
    def name(self) -> str:
        return self.config.site.name

    @property
    def data_path(self) -> Path:
        return self._resolve(self.config.site.data)

    @property
    def state_dir(self) -> Path:
        return self._resolve(self.config.site.state)

    @property
    def audit_path(self) -> Path:
        if self.config.site.audit_log is not None:
            return self._resolve(self.config.site.audit_log)
        return self.data_path.parent / f"fedsilo-audit-{self.name}.jsonl"

    @property
    def coordinator_certificate(self) -> Path:
        return self._resolve(self.config.coordinator.certificate)

    @property
    def tls_certificate(self) -> Path:
        return self._resolve(self.config.tls.certificate)

    @property
    def tls_key(self) -> Path:
        return self._resolve(self.config.tls.key)

    @property
    def he_secret_key(self) -> Path | None:
        key = self.config.site.he_secret_key
        return None if key is None else self._resolve(key)

    @property
    def pinned_sha256(self) -> str:
        """The pinned coordinator certificate's sha256 fingerprint."""
        try:
            return fingerprint(self.coordinator_certificate)
        except (OSError, ValueError) as err:
            raise SiteError(
                self.path, [f"coordinator.certificate: cannot read a certificate: {err}"]
            ) from err


def _problem(path: Path, text: str, loc: tuple[str, ...], message: str) -> str:
    return problem(path, key_lines(text), loc, message)


def _files(site: LoadedSite, text: str) -> list[str]:
    """Files SITE.toml names that must be there: the data, certificates, keys."""
    files: list[tuple[tuple[str, str], Path | None]] = [
        (("site", "data"), site.data_path),
        (("coordinator", "certificate"), site.coordinator_certificate),
        (("tls", "certificate"), site.tls_certificate),
        (("tls", "key"), site.tls_key),
        (("site", "he_secret_key"), site.he_secret_key),
    ]
    problems = [
        _problem(site.path, text, loc, f"no such file: {p}") for loc, p in files if p and not p.exists()
    ]
    if problems:
        return problems
    try:
        fingerprint(site.coordinator_certificate)
    except (OSError, ValueError) as err:
        return [_problem(site.path, text, ("coordinator", "certificate"), f"not a certificate: {err}")]
    try:
        cert = x509.load_pem_x509_certificate(site.tls_certificate.read_bytes())
    except (OSError, ValueError) as err:
        return [_problem(site.path, text, ("tls", "certificate"), f"not a PEM certificate: {err}")]
    names = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if names != [site.name]:
        message = f"its common name is {names}, not the site's name {site.name!r}"
        return [_problem(site.path, text, ("tls", "certificate"), message)]
    return []


def parse_site(text: str, path: str | Path, check_files: bool = True) -> LoadedSite:
    """``check_files``: the data, certificates and keys it names must be there (False: only what
    the audit needs, which outlives the data)."""
    path = Path(path).resolve()
    try:
        config = validate(SiteConfig, text, path)
    except FileProblems as err:
        raise SiteError(path, err.problems) from err
    site = LoadedSite(config, path)
    if check_files and (problems := _files(site, text)):
        raise SiteError(path, problems)
    return site


def load_site(path: str | Path, check_files: bool = True) -> LoadedSite:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise SiteError(path, [f"cannot read the site file: {err}"]) from err
    return parse_site(text, path, check_files)
