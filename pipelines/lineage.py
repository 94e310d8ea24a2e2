"""What a registered version came from: each silo's data version and the warm-start source.

Version tags (read back by `fedsilo review`):

    fedsilo.data.<silo>   = "sha256:<hex>;rows:<n>"   (silo.fingerprint.DataVersion)
    fedsilo.warm_start    = "models:/NAME@champion = version 3"   (absent on a cold start)
"""

from __future__ import annotations

from orchestrator.records import SetupReport
from pipelines.registry import ResolvedModel
from silo.fingerprint import DataVersion

DATA_TAG = "fedsilo.data."
WARM_TAG = "fedsilo.warm_start"


def data_versions(setup: SetupReport) -> dict[str, DataVersion]:
    return {r.silo: DataVersion(r.data_sha256, r.data_rows) for r in setup.ready}


def lifecycle_version_tags(setup: SetupReport, warm: ResolvedModel | None) -> dict[str, str]:
    tags = {f"{DATA_TAG}{silo}": version.tag() for silo, version in data_versions(setup).items()}
    if warm is not None:
        tags[WARM_TAG] = warm.describe()
    return tags


def lifecycle_card(setup: SetupReport, warm: ResolvedModel | None) -> str:
    """The model card's lineage section: data versions and where round 1 started."""
    rows = "\n".join(f"| {s} | `{v.sha256[:16]}` | {v.rows} |" for s, v in data_versions(setup).items())
    notes = {r.silo: r.warm_start for r in setup.ready if r.warm_start}
    start = "the seeded initial model (a cold start)"
    if warm is not None:
        how = next(iter(notes.values()), "").split(": ", 1)[-1]
        start = f"{warm.describe()} (warm start; weights {how or 'as registered'})"
    return f"""
## Lineage
- round 1 started from {start}

| silo | data version (SHA-256 of the rows used) | rows |
|---|---|---|
{rows}
"""
