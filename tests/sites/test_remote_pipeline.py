"""The coordinator's side of a pipeline file: [federation], remote silos, pinned certificates.

pytest tests/sites/test_remote_pipeline.py
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.federated import local as local_sites
from pipelines.federated.coordinator import terms
from pipelines.spec import PipelineError, load_pipeline

CERTS = 'certificate = "c.crt"\nkey = "c.key"\nca = "ca.crt"\n'


def write(tmp_path: Path, federation: str, silos: str) -> Path:
    text = (local_sites.EXAMPLE / "pipeline.toml").read_text()
    text = text[: text.index("[[silos]]")] + silos + text[text.index("[training]") :]
    path = tmp_path / "pipeline.toml"
    path.write_text(text + federation)
    return path


def test_a_federation_section_makes_silos_remote_unless_they_say_otherwise(tmp_path: Path) -> None:
    # Prepare
    silos = '[[silos]]\nname = "a"\n[[silos]]\nname = "b"\n'
    silos += '[[silos]]\nname = "c"\npath = "x.csv"\nremote = false\n'
    pin = "AB:" * 31 + "AB"
    silos += f'[[silos]]\nname = "d"\ncertificate_sha256 = "{pin}"\n'
    # Execute
    loaded = load_pipeline(write(tmp_path, "[federation]\n" + CERTS, silos))
    run = terms(loaded, "run-1")
    # Assert
    assert loaded.spec.remote_silos == ["a", "b", "d"]
    assert loaded.spec.silos[3].certificate_sha256 == "ab" * 32
    assert (run.task, run.model, run.he, run.secagg, run.silos, run.min_silos) == (
        "tabular", "logistic", "packed", True, 4, 3,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("federation", "silos", "message"),
    [
        ("", '[[silos]]\nname = "a"\nremote = true\n', r"add a \[federation\] section"),
        ("", '[[silos]]\nname = "a"\n', "needs a path"),
        ("[federation]\n" + CERTS, '[[silos]]\nname = "a"\ncertificate_sha256 = "xyz"\n', "fingerprint"),
        ('[federation]\nlisten = "7443"\n' + CERTS, '[[silos]]\nname = "a"\n', "listen"),
    ],
)
def test_a_remote_silo_without_its_federation_or_a_bad_pin_is_refused(
    tmp_path: Path, federation: str, silos: str, message: str
) -> None:
    with pytest.raises(PipelineError, match=message):
        load_pipeline(write(tmp_path, federation, silos))
