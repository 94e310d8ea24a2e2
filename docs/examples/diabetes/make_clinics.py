"""Write scikit-learn's bundled diabetes data as three clinics' CSV files (no download).

    python docs/examples/diabetes/make_clinics.py [FOLDER]

Patients go to the clinic of their age tercile (north: youngest, south: oldest), so the
clinics differ as real ones do.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

CLINICS = ("north", "central", "south")


def write_clinics(folder: Path) -> dict[str, Path]:
    from sklearn.datasets import load_diabetes

    data = load_diabetes(as_frame=True)
    frame = data.frame.rename(columns={"target": "progression"})
    terciles = np.quantile(frame["age"], [1 / 3, 2 / 3])
    group = np.digitize(frame["age"], terciles)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for index, clinic in enumerate(CLINICS):
        paths[clinic] = folder / f"{clinic}.csv"
        frame[group == index].to_csv(paths[clinic], index=False)
    return paths


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent
    for clinic, path in write_clinics(out).items():
        print(f"{clinic}: {len(pd.read_csv(path))} rows -> {path}")
