"""The Flower side of ``benchmarks/vs_flower.py``: FedAvg on the four heart-disease silos.

Runs under the separate ``.venv-flower`` (Flower pins its own Ray) and prints one JSON line
with its timings; ``vs_flower.py`` starts it as a subprocess. On its own:

    .venv-flower/bin/python benchmarks/flower_app.py --rounds 15

Same data, preprocessing, model and training as fedsilo, through fedsilo's own code:
the driver adds every silo's local statistics vectors in plaintext (what fedsilo's
orchestrator does under CKKS) to make the shared `Preprocessor`; each Flower client
(one per silo, ``partition-id`` = silo index) then reads its own raw file, splits it
train/validation exactly like ``SiloWorker.stats_sums``, and trains with
``silo.train.local_train`` using fedsilo's per-round shuffling seed. Flower's
``FedAvg`` weights updates by ``num-examples`` (training rows) and evaluates the
global model on every client's validation rows after each round.

Ray is started here with the arguments Flower's Ray backend would use (its backend
reuses a running Ray), so that Ray start-up can be timed apart from the rounds.
Run with flwr 1.41.0 and the Ray it brings, 2.55.1 (flwr 1.42.0 needs a newer certifi
than PyPI had at the time).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import sys
import tempfile
import time
import zlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import flwr
import numpy as np
import ray
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation
from torch.utils.data import TensorDataset

from orchestrator.schema import agree
from pipelines import build
from pipelines.spec import LoadedPipeline, bundled_example, load_pipeline
from silo.config import DataSpec, ModelSpec
from silo.data import describe_frame, labels, prepare_frame, read_table, split_indices
from silo.messages import FitConfig
from silo.models import build_model
from silo.preprocess import (
    AgreedSchema,
    Preprocessor,
    apply_missing_policy,
    global_means,
    local_squares,
    local_sums,
)
from silo.task_kinds import defaults
from silo.train import evaluate, local_train

SETUP_ENV = "FEDSILO_BENCH_FLOWER_SETUP"  # path of the JSON the driver hands every client
CPU = torch.device("cpu")


# -- shared settings (the pipeline file) -----------------------------------------------


def split_silo(name: str, path: str, spec: DataSpec, schema: AgreedSchema | None) -> tuple[Any, Any, Any]:
    """Read one silo's raw file; return (description, train rows, validation rows).

    The same steps as ``SiloWorker.describe`` and ``SiloWorker.stats_sums``.
    """
    raw = read_table(name, path, spec)
    description = describe_frame(name, raw, spec)
    frame = prepare_frame(name, raw, description, spec)
    if schema is None:
        return description, None, None
    frame = apply_missing_policy(frame, schema, spec.missing)
    y = labels(spec, frame[spec.target]).to_numpy()
    train, val = split_indices(y, spec.validation_fraction, spec.seed)
    return description, frame.iloc[train].reset_index(drop=True), frame.iloc[val].reset_index(drop=True)


def federated_setup(loaded: LoadedPipeline) -> dict[str, Any]:
    """Schema and preprocessor from the silos' summed local vectors (plaintext sums)."""
    spec = build.data_spec(loaded)
    silos = [(s.name, loaded.silo_path(s)) for s in loaded.spec.silos]
    schema = agree([split_silo(name, path, spec, None)[0] for name, path in silos])
    trains = [split_silo(name, path, spec, schema)[1] for name, path in silos]
    sums = np.sum([local_sums(frame, schema) for frame in trains], axis=0)
    means = global_means(schema, sums)
    squares = np.sum([local_squares(frame, schema, means) for frame in trains], axis=0)
    pre = Preprocessor.from_sums(schema, spec.target, spec.positive, sums, squares, na_values=spec.na_values)
    return {
        "pipeline": str(loaded.path),
        "silos": [{"name": name, "path": path} for name, path in silos],
        "schema": asdict(schema),
        "preprocessor": pre.to_json(),
        "model": loaded.spec.model.kind,
        "hidden": list(loaded.spec.model.hidden),
        "seed": loaded.spec.training.seed,
    }


# -- ClientApp: one silo per partition ---------------------------------------------------


@dataclass(frozen=True)
class SiloData:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    binary: bool
    n_inputs: int
    n_outputs: int
    model: ModelSpec
    seed: int


@functools.cache
def _setup() -> dict[str, Any]:
    return json.loads(Path(os.environ[SETUP_ENV]).read_text())


@functools.cache
def silo_data(partition_id: int) -> SiloData:
    """This silo's rows, transformed once per worker process (Flower's usual data cache)."""
    setup = _setup()
    loaded = load_pipeline(setup["pipeline"])
    spec = build.data_spec(loaded)
    raw_schema = setup["schema"]
    schema = AgreedSchema(
        features=tuple(raw_schema["features"]),
        numeric=tuple(raw_schema["numeric"]),
        categorical=tuple(raw_schema["categorical"]),
        levels=tuple(tuple(lv) for lv in raw_schema["levels"]),
        classes=tuple(raw_schema["classes"]),
    )
    silo = setup["silos"][partition_id]
    _, train, val = split_silo(silo["name"], silo["path"], spec, schema)
    pre = Preprocessor.from_json(setup["preprocessor"])
    return SiloData(
        name=silo["name"],
        x_train=pre.transform(train),
        y_train=pre.encode_target(train[spec.target]),
        x_val=pre.transform(val),
        y_val=pre.encode_target(val[spec.target]),
        binary=pre.binary,
        n_inputs=schema.n_inputs,
        n_outputs=schema.n_outputs,
        model=ModelSpec(kind=setup["model"], hidden=tuple(setup["hidden"])),
        seed=setup["seed"],
    )


def _model_from(msg: Message, data: SiloData) -> torch.nn.Module:
    model = build_model(data.model, data.n_inputs, data.n_outputs, data.seed)
    arrays = msg.content["arrays"]
    assert isinstance(arrays, ArrayRecord)
    model.load_state_dict(arrays.to_torch_state_dict())
    return model


client_app = ClientApp()


@client_app.train()
def client_train(msg: Message, context: Context) -> Message:
    data = silo_data(int(context.node_config["partition-id"]))
    model = _model_from(msg, data)
    config = msg.content["config"]
    assert isinstance(config, ConfigRecord)
    fit = FitConfig(
        local_epochs=int(config["local_epochs"]),  # type: ignore[arg-type]
        batch_size=int(config["batch_size"]),  # type: ignore[arg-type]
        lr=float(config["lr"]),  # type: ignore[arg-type]
        optimizer=str(config["optimizer"]),
        momentum=float(config["momentum"]),  # type: ignore[arg-type]
        seed=int(config["seed"]),  # type: ignore[arg-type]
    )
    server_round = int(config["server-round"])  # type: ignore[arg-type]
    round_seed = zlib.crc32(f"{fit.seed}/{server_round}/{data.name}".encode())  # as SiloWorker.fit
    train = TensorDataset(torch.from_numpy(data.x_train), torch.from_numpy(data.y_train))
    loss = local_train(
        model, train, defaults("binary" if data.binary else "multiclass")["loss"], fit, CPU, round_seed
    )
    content = RecordDict(
        {
            "arrays": ArrayRecord(model.state_dict()),
            "metrics": MetricRecord({"train_loss": loss, "num-examples": len(data.y_train)}),
        }
    )
    return Message(content=content, reply_to=msg)


@client_app.evaluate()
def client_evaluate(msg: Message, context: Context) -> Message:
    data = silo_data(int(context.node_config["partition-id"]))
    model = _model_from(msg, data)
    val = TensorDataset(torch.from_numpy(data.x_val), torch.from_numpy(data.y_val))
    result = evaluate(model, val, data.binary, CPU, data.name)
    metrics = MetricRecord(
        {
            "accuracy": result.accuracy,
            "loss": result.loss,
            "correct": result.correct,
            "num-examples": result.examples,
        }
    )
    return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)


# -- ServerApp: FedAvg with per-round timing ----------------------------------------------


class TimedFedAvg(FedAvg):
    """Flower's FedAvg, unchanged, plus a clock and a byte count per round."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rounds: dict[int, dict[str, Any]] = {}

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.rounds[server_round] = {"round": server_round, "start": time.time()}
        messages = list(super().configure_train(server_round, arrays, config, grid))
        self.rounds[server_round]["bytes_down"] = len(messages) * arrays.count_bytes()
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        up = 0
        for msg in replies:
            if not msg.has_error():
                arrays = msg.content["arrays"]
                assert isinstance(arrays, ArrayRecord)
                up += arrays.count_bytes()
        self.rounds[server_round]["bytes_up"] = up
        self.rounds[server_round]["participants"] = sum(not m.has_error() for m in replies)
        self.rounds[server_round]["failures"] = [m.error.reason for m in replies if m.has_error()]
        return super().aggregate_train(server_round, replies)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        replies = list(replies)
        metrics = super().aggregate_evaluate(server_round, replies)
        row = self.rounds[server_round]
        row["end"] = time.time()
        row["seconds"] = row["end"] - row["start"]
        scored = [m.content["metrics"] for m in replies if not m.has_error()]
        examples = sum(int(m["num-examples"]) for m in scored)  # type: ignore[index, arg-type]
        correct = sum(int(m["correct"]) for m in scored)  # type: ignore[index, arg-type]
        row["global_val_accuracy"] = correct / max(examples, 1)
        row["val_rows"] = examples
        return metrics


RUN: dict[str, Any] = {}  # settings in, results out: the ServerApp runs in this process
server_app = ServerApp()


@server_app.main()
def server_main(grid: Grid, context: Context) -> None:
    setup = RUN["setup"]
    n_silos = len(setup["silos"])
    schema = setup["schema"]
    n_inputs = len(schema["numeric"]) + sum(len(lv) for lv in schema["levels"])
    n_outputs = 1 if len(schema["classes"]) == 2 else len(schema["classes"])
    model = build_model(ModelSpec(setup["model"], tuple(setup["hidden"])), n_inputs, n_outputs, setup["seed"])
    strategy = TimedFedAvg(
        fraction_train=1.0,
        fraction_evaluate=1.0,
        min_train_nodes=n_silos,
        min_evaluate_nodes=n_silos,
        min_available_nodes=n_silos,
    )
    fit: FitConfig = RUN["fit"]
    RUN["strategy_start"] = time.time()
    strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(model.state_dict()),
        num_rounds=RUN["rounds"],
        train_config=ConfigRecord(
            {
                "local_epochs": fit.local_epochs,
                "batch_size": fit.batch_size,
                "lr": fit.lr,
                "optimizer": fit.optimizer,
                "momentum": fit.momentum,
                "seed": fit.seed,
            }
        ),
    )
    RUN["strategy_end"] = time.time()
    RUN["rounds_done"] = [strategy.rounds[r] for r in sorted(strategy.rounds)]


# -- driver ---------------------------------------------------------------------------------


def ray_init_args(num_cpus: int) -> dict[str, Any]:
    """What Flower's Ray backend passes to ``ray.init`` (its defaults plus ours)."""
    return {
        "num_cpus": num_cpus,
        "_node_ip_address": "127.0.0.1",
        "include_dashboard": False,
        "logging_level": "WARNING",  # Flower's DEFAULT_SIMULATION_CONFIG
        "log_to_driver": True,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", type=Path, default=bundled_example())
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--num-cpus", type=int, default=2, help="Ray's CPUs")
    parser.add_argument("--client-cpus", type=float, default=0.25, help="num_cpus per Flower client")
    parser.add_argument("--out", type=Path, help="also write the JSON result here")
    args = parser.parse_args(argv)
    t_imported = time.time()

    # Ray as Flower's backend starts it (RayBackend.init_ray): driver sys.path as PYTHONPATH.
    pythonpath = os.pathsep.join([str(Path(__file__).resolve().parent), *sys.path])
    os.environ["PYTHONPATH"] = pythonpath
    workdir = Path(tempfile.mkdtemp(prefix="flower-bench-"))
    try:
        return _run(args, pythonpath, workdir / "setup.json", t_imported)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run(args: argparse.Namespace, pythonpath: str, setup_file: Path, t_imported: float) -> int:
    init_args = ray_init_args(args.num_cpus)
    start = time.perf_counter()
    ray.init(
        runtime_env={"env_vars": {"PYTHONPATH": pythonpath, SETUP_ENV: str(setup_file)}},
        **init_args,
    )
    ray_init_s = time.perf_counter() - start
    t_ray_up = time.time()

    start = time.perf_counter()
    loaded = load_pipeline(args.pipeline)
    setup = federated_setup(loaded)
    setup_file.write_text(json.dumps(setup))
    os.environ[SETUP_ENV] = str(setup_file)
    setup_s = time.perf_counter() - start

    RUN.update(setup=setup, fit=build.strategy(loaded).configure_fit(1), rounds=args.rounds)
    start = time.perf_counter()
    t_sim_start = time.time()
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=len(setup["silos"]),
        backend_name="ray",
        backend_config={
            "client_resources": {"num_cpus": args.client_cpus, "num_gpus": 0.0},
            "init_args": init_args,
        },
    )
    simulation_s = time.perf_counter() - start
    start = time.perf_counter()
    ray.shutdown()
    shutdown_s = time.perf_counter() - start
    rounds = RUN.get("rounds_done", [])
    result = {
        "system": "flower",
        "flwr_version": flwr.__version__,
        "ray_version": ray.__version__,
        "torch_version": torch.__version__,
        "t_imported": t_imported,
        "t_ray_up": t_ray_up,
        "t_sim_start": t_sim_start,
        "t_strategy_start": RUN.get("strategy_start"),
        "t_end": time.time(),
        "ray_init_s": ray_init_s,
        "setup_s": setup_s,
        "simulation_s": simulation_s,
        "shutdown_s": shutdown_s,
        "silos": len(setup["silos"]),
        "client_cpus": args.client_cpus,
        "per_round": rounds,
        "final_accuracy": rounds[-1]["global_val_accuracy"] if rounds else None,
    }
    line = json.dumps(result)
    if args.out:
        args.out.write_text(line)
    print(line, flush=True)
    complete = all(r.get("participants") == len(setup["silos"]) for r in rounds)
    return 0 if len(rounds) == args.rounds and complete else 1


if __name__ == "__main__":
    # Run through the importable module, not __main__, so Ray workers (which get this
    # folder on PYTHONPATH) load the ClientApp's functions by reference and keep the
    # per-process data cache between rounds.
    import flower_app

    sys.exit(flower_app.main())
