"""Federated clusters on one machine: the bundled heart-disease hospitals as sites on 127.0.0.1.
Certificates from infra/tls/make_certs.py (so a checkout of this repository is needed), one
SITE.toml and one `fedsilo site serve` process (its own Ray) per site, and the bundled pipeline
with a [federation] section. The tests and benchmarks/federated_clusters.py use it; so can you, to try the
mode before the hospitals' IT does:

    python -c "from pipelines.federated.local import demo; demo('/tmp/fedsilo-sites')"
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pipelines.spec import bundled_example

ROOT = Path(__file__).resolve().parents[2]  # the checkout (an editable install)
EXAMPLE = bundled_example().parent
FILES = {
    "cleveland": "processed.cleveland.data",
    "hungary": "processed.hungarian.data",
    "switzerland": "processed.switzerland.data",
    "long-beach": "processed.va.data",
}


def free_port() -> int:
    """A port nothing listens on (yet) on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def certificates(folder: Path, names: list[str], ca_name: str = "fedsilo federation CA") -> Path:
    """A CA and a certificate per name (CN = name) in ``folder``, as infra/README.md makes them."""
    script = ROOT / "infra" / "tls" / "make_certs.py"
    if not script.is_file():
        raise FileNotFoundError(f"{script} is not here: local sites need a checkout of fedsilo")
    nodes = [arg for name in names for arg in ("--node", f"{name}=127.0.0.1")]
    subprocess.run([sys.executable, str(script), "--out", str(folder), "--ca-name", ca_name, *nodes],
                   check=True, capture_output=True)  # fmt: skip
    return folder


def site_file(
    folder: Path,
    name: str,
    port: int,
    certs: Path,
    policy: str = "",
    pinned: Path | None = None,
    site: str = "",
) -> Path:
    """SITE.toml for ``name``, its data copied next to it (the data stays in the site's folder)."""
    home = folder / name
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(EXAMPLE / FILES[name], home / FILES[name])
    text = f"""
[site]
name = "{name}"
data = "{FILES[name]}"
num_cpus = 0.5
{site}

[coordinator]
address = "127.0.0.1:{port}"
certificate = "{pinned or certs / "coordinator.crt"}"
reconnect_max_s = 1.0

[tls]
certificate = "{certs / f"{name}.crt"}"
key = "{certs / f"{name}.key"}"

[policy]
{policy or 'approved_tasks = ["tabular"]'}
"""
    path = home / "SITE.toml"
    path.write_text(text)
    return path


def pipeline_file(
    folder: Path,
    port: int,
    certs: Path,
    remote: list[str],
    rounds: int = 5,
    extra: str = "",
    he: str = "packed",
) -> Path:
    """The bundled example; ``remote`` silos served by their sites, the others local."""
    text = (EXAMPLE / "pipeline.toml").read_text()
    text = text.replace("rounds = 20", f"rounds = {rounds}").replace('he = "packed"', f'he = "{he}"')
    for name, file in FILES.items():
        local = f'path = "{EXAMPLE / file}"\nremote = false'
        text = text.replace(f'path = "{file}"', "remote = true" if name in remote else local)
    text = text.replace('mlflow_uri = "sqlite:///mlruns.db"', f'mlflow_uri = "sqlite:///{folder}/mlruns.db"')
    text = text.replace("[[silos]]", f"{extra}\n[[silos]]", 1) if extra else text
    text += f"""
checkpoints = "{folder / "checkpoints"}"

[federation]
listen = "127.0.0.1:{port}"
certificate = "{certs / "coordinator.crt"}"
key = "{certs / "coordinator.key"}"
ca = "{certs / "ca.crt"}"
connect_timeout_s = 90
"""
    path = folder / "pipeline.toml"
    path.write_text(text)
    return path


class Site:
    """One `fedsilo site serve` process; its output goes to a log file next to SITE.toml."""

    def __init__(self, site_toml: Path) -> None:
        self.site_toml = site_toml
        self.log = site_toml.parent / "serve.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Site:
        fedsilo = Path(sys.executable).parent / "fedsilo"
        env = {**os.environ, "RAY_DEDUP_LOGS": "0"}
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [str(fedsilo), "-v", "site", "serve", "--site", str(self.site_toml)],
                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )  # fmt: skip
        return self

    def kill(self) -> None:
        """As a crash: SIGKILL to the whole process group (the site's Ray included)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(30)
        self.process = None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def demo(folder: str | Path, rounds: int = 5) -> None:
    """Three hospitals as sites (each its own Ray), the fourth local; one run; the sites stopped."""
    folder = Path(folder)
    port = free_port()
    certs = certificates(folder / "certs", ["coordinator", "cleveland", "hungary", "switzerland"])
    sites = [
        Site(site_file(folder / "sites", n, port, certs)).start()
        for n in ("cleveland", "hungary", "switzerland")
    ]
    try:
        pipeline = pipeline_file(folder, port, certs, ["cleveland", "hungary", "switzerland"], rounds=rounds)
        subprocess.run([str(Path(sys.executable).parent / "fedsilo"), "run", str(pipeline)], check=True)
        for site in sites:
            print(f"audit: fedsilo site audit --site {site.site_toml}")
    finally:
        for site in sites:
            site.stop()
