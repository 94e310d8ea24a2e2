"""SITE.toml: a full file resolves its paths; each mistake names its field."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from sites.config import LoadedSite, SiteError, fingerprint, load_site, parse_site

REPO = Path(__file__).resolve().parents[2]
DIGEST = "ab" * 32

SITE = f"""\
[site]
name = "cleveland"
data = "data/processed.cleveland.data"
state = "state"
audit_log = "logs/audit.jsonl"
ray_address = "127.0.0.1:6380"
num_cpus = 2.0
num_gpus = 0.5
he_secret_key = "keys/he.secret"

[coordinator]
address = "fed.example.org:7443"
certificate = "certs/coordinator.crt"
reconnect_max_s = 10.0

[tls]
certificate = "certs/cleveland.crt"
key = "certs/cleveland.key"

[policy]
approved_tasks = ["tabular", "{DIGEST}"]
require_he = true
require_secagg = true
max_epsilon = 8.0
max_delta = 1e-5
min_silos = 3
max_rounds = 100
allowed_metrics = ["loss_sum", "count", "correct", "train_loss"]
publish = false
coordinators = []
pipelines = ["heart"]
"""

MINIMAL = """\
[site]
name = "cleveland"
data = "data/processed.cleveland.data"

[coordinator]
address = "fed.example.org:7443"
certificate = "certs/coordinator.crt"

[tls]
certificate = "certs/cleveland.crt"
key = "certs/cleveland.key"
"""


def make_certs_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_certs", REPO / "infra" / "tls" / "make_certs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_site(folder: Path, text: str = SITE) -> Path:
    """SITE.toml in ``folder`` with every file it names: data, certificates (a real CA), HE key."""
    make_certs = make_certs_module()
    certs = folder / "certs"
    certs.mkdir(parents=True, exist_ok=True)
    ca_key, ca = make_certs.make_ca(certs, "federation CA")
    for node in ("coordinator", "cleveland"):
        make_certs.make_node(certs, node, "127.0.0.1", ca_key, ca)
    (folder / "data").mkdir(exist_ok=True)
    (folder / "data" / "processed.cleveland.data").write_text("63,1,1,145,233,1,2,150,0,2.3,3,0,6,0\n")
    (folder / "keys").mkdir(exist_ok=True)
    (folder / "keys" / "he.secret").write_bytes(b"secret")
    path = folder / "SITE.toml"
    path.write_text(text)
    return path


def load(folder: Path, text: str = SITE) -> LoadedSite:
    return load_site(write_site(folder, text))


def problems(folder: Path, text: str) -> list[str]:
    path = write_site(folder, SITE)
    with pytest.raises(SiteError) as caught:
        parse_site(text, path)
    return caught.value.problems


def test_full_site_resolves_paths(tmp_path: Path) -> None:
    # Prepare
    path = write_site(tmp_path)
    # Execute
    site = load_site(path)
    # Assert
    root = tmp_path.resolve()
    assert site.path == root / "SITE.toml" and site.name == "cleveland"
    assert site.data_path == root / "data" / "processed.cleveland.data"
    assert site.state_dir == root / "state"
    assert site.audit_path == root / "logs" / "audit.jsonl"
    assert site.coordinator_certificate == root / "certs" / "coordinator.crt"
    assert (site.tls_certificate, site.tls_key) == (
        root / "certs" / "cleveland.crt",
        root / "certs" / "cleveland.key",
    )
    assert site.he_secret_key == root / "keys" / "he.secret"
    config = site.config
    assert config.site.ray_address == "127.0.0.1:6380" and config.site.num_cpus == 2.0
    assert config.coordinator.reconnect_max_s == 10.0
    assert config.policy.approved_tasks == ["tabular", DIGEST] and config.policy.min_silos == 3
    assert config.policy.max_delta == 1e-5 and config.policy.publish is False


def test_defaults(tmp_path: Path) -> None:
    # Prepare / Execute
    site = load(tmp_path, MINIMAL)
    # Assert
    root = tmp_path.resolve()
    assert site.state_dir == root / ".fedsilo-site"
    assert site.audit_path == root / "data" / "fedsilo-audit-cleveland.jsonl"  # next to the data
    assert site.he_secret_key is None and site.config.site.ray_address is None
    policy = site.config.policy
    assert policy.approved_tasks == ["tabular"] and policy.require_he and not policy.require_secagg
    assert policy.min_silos == 2 and policy.max_epsilon is None and policy.allowed_metrics is None
    assert policy.publish and policy.coordinators == [] and policy.pipelines == []


def test_pinned_sha256_is_the_certificates_fingerprint(tmp_path: Path) -> None:
    # Prepare
    site = load(tmp_path)
    pem = (tmp_path / "certs" / "coordinator.crt").read_bytes()
    # Execute
    pinned = site.pinned_sha256
    # Assert
    assert pinned == x509.load_pem_x509_certificate(pem).fingerprint(hashes.SHA256()).hex()
    assert fingerprint(pem) == pinned and len(pinned) == 64


def test_coordinator_fingerprints_are_normalized(tmp_path: Path) -> None:
    # Prepare
    openssl = ":".join(DIGEST[i : i + 2] for i in range(0, 64, 2)).upper()
    # Execute
    site = load(tmp_path, SITE.replace("coordinators = []", f'coordinators = ["{openssl}"]'))
    # Assert
    assert site.config.policy.coordinators == [DIGEST]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("num_gpus = 0.5", "num_gpu = 0.5", "SITE.toml:8: site.num_gpu: unknown field (a typo?)"),
        (f'"{DIGEST}"]', '"ABC123"]', "SITE.toml:21: policy.approved_tasks.1: 'ABC123' is neither"),
        ("min_silos = 3", "min_silos = 0", "SITE.toml:26: policy.min_silos: Input should be greater than"),
        (
            "max_epsilon = 8.0",
            "max_epsilon = -1",
            "SITE.toml:24: policy.max_epsilon: Input should be greater",
        ),
        ('address = "fed.example.org:7443"', 'address = "fed"', "SITE.toml:12: coordinator.address: use"),
        ("require_he = true", 'require_he = "yes"', "SITE.toml:22: policy.require_he: Input should be"),
        ('name = "cleveland"', 'name = "../x"', "SITE.toml:2: site.name: String should match"),
    ],
)
def test_malformed_value_names_its_field(tmp_path: Path, old: str, new: str, expected: str) -> None:
    # Prepare / Execute
    (problem,) = problems(tmp_path, SITE.replace(old, new))
    # Assert
    assert problem.startswith(expected)


def test_missing_section_names_it(tmp_path: Path) -> None:
    # Prepare
    text = SITE.replace('[tls]\ncertificate = "certs/cleveland.crt"\nkey = "certs/cleveland.key"\n', "")
    # Execute
    (problem,) = problems(tmp_path, text)
    # Assert
    assert problem == "SITE.toml: tls: required field is missing"


def test_missing_files_name_their_fields(tmp_path: Path) -> None:
    # Prepare
    path = write_site(tmp_path)
    (tmp_path / "certs" / "coordinator.crt").unlink()
    (tmp_path / "data" / "processed.cleveland.data").unlink()
    # Execute
    with pytest.raises(SiteError) as caught:
        load_site(path)
    # Assert
    data, coordinator = caught.value.problems
    assert data.startswith("SITE.toml:3: site.data: no such file:") and data.endswith(
        "processed.cleveland.data"
    )
    assert coordinator.startswith("SITE.toml:13: coordinator.certificate: no such file:")
    assert str(path) in str(caught.value)


def test_unreadable_coordinator_certificate(tmp_path: Path) -> None:
    # Prepare
    path = write_site(tmp_path)
    (tmp_path / "certs" / "coordinator.crt").write_text("not a certificate")
    # Execute
    with pytest.raises(SiteError) as caught:
        load_site(path)
    # Assert
    (problem,) = caught.value.problems
    assert problem.startswith("SITE.toml:13: coordinator.certificate: not a certificate")


def test_pinned_certificate_removed_after_loading(tmp_path: Path) -> None:
    # Prepare
    site = load(tmp_path)
    (tmp_path / "certs" / "coordinator.crt").unlink()
    # Execute
    with pytest.raises(SiteError) as caught:
        _ = site.pinned_sha256
    # Assert
    assert "coordinator.certificate: cannot read a certificate" in str(caught.value)


def test_tls_certificate_must_name_the_site(tmp_path: Path) -> None:
    # Prepare
    path = write_site(tmp_path)
    text = SITE.replace('certificate = "certs/cleveland.crt"', 'certificate = "certs/coordinator.crt"')
    # Execute
    with pytest.raises(SiteError) as caught:
        parse_site(text, path)
    # Assert
    (problem,) = caught.value.problems
    assert problem.startswith("SITE.toml:17: tls.certificate: its common name is ['coordinator']")


def test_toml_syntax_error(tmp_path: Path) -> None:
    # Prepare / Execute
    (problem,) = problems(tmp_path, SITE.replace("min_silos = 3", "min_silos = "))
    # Assert
    assert problem.startswith("SITE.toml: not valid TOML:") and "line 26" in problem


def test_unreadable_site_file(tmp_path: Path) -> None:
    # Prepare / Execute
    with pytest.raises(SiteError) as caught:
        load_site(tmp_path / "absent.toml")
    # Assert
    assert "cannot read the site file" in str(caught.value)
