"""Domain errors: what went wrong, in words that name the silo or round at fault."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SiloFailure:
    """A silo that did not contribute: failures are data, recorded and logged."""

    silo: str
    reason: str

    def __str__(self) -> str:
        return f"{self.silo}: {self.reason}"


class FederationError(RuntimeError):
    """Base class: the federation cannot go on."""


class SchemaMismatch(FederationError):
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("the silos' data do not fit the pipeline:\n  - " + "\n  - ".join(problems))

    def __reduce__(self) -> tuple[object, ...]:  # crosses Ray process boundaries intact
        return (type(self), (self.problems,))


class SetupFailed(FederationError):
    def __init__(self, step: str, failures: list[SiloFailure]) -> None:
        self.step = step
        self.failures = failures
        lines = "\n  - ".join(str(f) for f in failures)
        super().__init__(f"{step} failed at {len(failures)} silo(s):\n  - {lines}")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.step, self.failures))


class RoundFailed(FederationError):
    def __init__(self, round_: int, answered: int, min_silos: int, failures: list[SiloFailure]) -> None:
        self.round = round_
        self.answered = answered
        self.min_silos = min_silos
        self.failures = failures
        lines = "\n  - ".join(str(f) for f in failures)
        super().__init__(
            f"round {round_}: only {answered} silo(s) answered, min_silos is {min_silos}:\n  - {lines}"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.round, self.answered, self.min_silos, self.failures))


class BudgetSpent(FederationError):
    """Too few silos may train another round without exceeding their privacy budget: the run
    stops cleanly after ``last_round`` (its model is the one published)."""

    def __init__(self, last_round: int, silos: list[str], failures: list[SiloFailure]) -> None:
        self.last_round = last_round
        self.silos = silos
        self.failures = failures
        lines = "\n  - ".join(str(f) for f in failures)
        who = ", ".join(silos)
        super().__init__(
            f"stopped after round {last_round}: privacy budget of silo(s) {who} spent:\n  - {lines}"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.last_round, self.silos, self.failures))
