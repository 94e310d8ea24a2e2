"""Server optimizers (Reddi et al. 2021, "Adaptive Federated Optimization"), as free functions.

FedAdam, FedYogi and FedAdagrad treat the round's average change of the model as a
pseudo-gradient: with Delta = mean_k(w_k) - w,

    m <- beta1 * m + (1 - beta1) * Delta
    v <- beta2 * v + (1 - beta2) * Delta^2                      (Adam)
    v <- v - (1 - beta2) * Delta^2 * sign(v - Delta^2)          (Yogi)
    v <- v + Delta^2                                            (Adagrad; m = Delta)
    w <- w + eta * m / (sqrt(v) + tau)

(the maths and default hyper-parameters of Flower's fedadam.py / fedyogi.py / fedadagrad.py,
without bias correction, as in the paper). Under HE only silos can read the average, so
one silo computes this step and re-encrypts the result (see `SiloWorker.server_step`).

    python -c "import numpy as np; from silo.server_opt import *; \
print(server_step(ServerOpt('fedadam'), np.zeros(2), np.ones(2), None))"
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OPTIMIZERS = ("fedadam", "fedyogi", "fedadagrad")


@dataclass(frozen=True)
class ServerOpt:
    """Which server optimizer, and its hyper-parameters (Flower's defaults by name)."""

    kind: str  # fedadam | fedyogi | fedadagrad
    eta: float = 0.1  # server learning rate
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-9  # adaptivity: keeps the step finite where v is ~0

    def __post_init__(self) -> None:
        if self.kind not in OPTIMIZERS:
            raise ValueError(f"unknown server optimizer {self.kind!r}; choose one of {OPTIMIZERS}")

    @property
    def state_names(self) -> tuple[str, ...]:
        return ("m", "v")


@dataclass(frozen=True)
class OptState:
    m: np.ndarray  # first moment of the pseudo-gradient
    v: np.ndarray  # second moment: non-negative, spans many orders of magnitude

    def vectors(self) -> tuple[np.ndarray, ...]:
        return (self.m, self.v)


def server_step(
    opt: ServerOpt, previous: np.ndarray, average: np.ndarray, state: OptState | None
) -> tuple[np.ndarray, OptState]:
    """(new global model, new state) after one round whose weighted average is ``average``."""
    previous = np.asarray(previous, dtype=np.float64)
    delta = np.asarray(average, dtype=np.float64) - previous
    if state is None:
        state = OptState(np.zeros_like(delta), np.zeros_like(delta))
    # Decrypted state carries encoding noise: v cannot be negative.
    v_old = np.maximum(state.v, 0.0)
    square = delta * delta
    if opt.kind == "fedadagrad":
        m = delta.copy()
        v = v_old + square
    else:
        m = opt.beta1 * state.m + (1.0 - opt.beta1) * delta
        if opt.kind == "fedadam":
            v = opt.beta2 * v_old + (1.0 - opt.beta2) * square
        else:  # fedyogi
            v = v_old - (1.0 - opt.beta2) * square * np.sign(v_old - square)
    weights = previous + opt.eta * m / (np.sqrt(v) + opt.tau)
    return weights, OptState(m, v)


def server_vectors(opt: ServerOpt | None) -> tuple[tuple[str, bool], ...]:
    """What the server-step leader sends back, in order, as (name, exact): the global model (at
    the update precision when it is only re-encrypted, exact after an optimizer step), then the
    optimizer's state. Its tags are ``round-<r>/server/<name>``; the orchestrator checks them."""
    if opt is None:
        return (("global", False),)
    return (("global", True), *((name, True) for name in opt.state_names))


def split_scaffold(vector: np.ndarray, n_parameters: int) -> tuple[np.ndarray, np.ndarray]:
    """SCAFFOLD's payload [w ; c] (length 2n) as (model weights, global control variate)."""
    if vector.size == n_parameters:  # round 1 or a plain model: no control variate yet (zeros: no pages)
        return vector, np.zeros(n_parameters)
    vector = np.asarray(vector, dtype=np.float64)
    if vector.size != 2 * n_parameters:
        raise ValueError(f"SCAFFOLD payload holds {vector.size} values, expected {2 * n_parameters}")
    return vector[:n_parameters], vector[n_parameters:]


def scaffold_control(
    c_global: np.ndarray, c_local: np.ndarray, start: np.ndarray, end: np.ndarray, steps: int, lr: float
) -> np.ndarray:
    """Karimireddy et al. 2020, option II: the silo's new control variate
    c_i+ = c_i - c + (x - y_i) / (K * lr), after K local steps from x (``start``) to y_i (``end``)."""
    if steps < 1 or lr <= 0:
        raise ValueError("SCAFFOLD needs at least one local step and a positive learning rate")
    return c_local - c_global + (start - end) / (steps * lr)
