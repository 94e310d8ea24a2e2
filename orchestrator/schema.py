"""Agree on one schema from every silo's description, or say which silo differs and how."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from orchestrator.errors import SchemaMismatch
from silo.data import SiloDescription
from silo.preprocess import AgreedSchema


def _sorted_codes(codes: Iterable[str]) -> tuple[str, ...]:
    unique = set(codes)
    try:
        return tuple(sorted(unique, key=float))
    except ValueError:
        return tuple(sorted(unique))


def agree(descriptions: Sequence[SiloDescription]) -> AgreedSchema:
    """The shared schema; raises `SchemaMismatch` listing every problem of every silo."""
    problems = [error for d in descriptions for error in d.errors]
    if problems:
        raise SchemaMismatch(problems)
    feature_sets = Counter(frozenset(d.features) for d in descriptions)
    majority = feature_sets.most_common(1)[0][0]
    for d in descriptions:
        mine = frozenset(d.features)
        if mine != majority:
            if extra := sorted(mine - majority):
                problems.append(f"silo {d.name!r}: has column(s) {extra} that the other silos lack")
            if lacking := sorted(majority - mine):
                problems.append(f"silo {d.name!r}: lacks column(s) {lacking} that the other silos have")
    if problems:
        raise SchemaMismatch(problems)
    reference = next(d for d in descriptions if frozenset(d.features) == majority)
    classes = _sorted_codes(c for d in descriptions for c in d.classes)
    if len(classes) < 2:
        raise SchemaMismatch([f"the target has a single class {classes} across all silos"])
    categorical = tuple(reference.levels)
    levels = tuple(_sorted_codes(lv for d in descriptions for lv in d.levels[name]) for name in categorical)
    return AgreedSchema(
        features=tuple(reference.features),
        numeric=reference.numeric,
        categorical=categorical,
        levels=levels,
        classes=classes,
    )
