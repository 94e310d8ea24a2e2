"""The ``fedsilo`` command.

fedsilo run                                  # bundled example: 4 hospitals, local Ray, ./mlruns.db
fedsilo run --example breast-ultrasound      # the imaging example (a task module); --example lists them
fedsilo run PIPELINE --summary-json out.json --rounds 5
fedsilo run PIPELINE --address 127.0.0.1:6379
fedsilo validate PIPELINE                    # schema and every silo's data, no training
fedsilo evaluate|promote|review ...          # the model lifecycle (pipelines/lifecycle_cli.py)
fedsilo schedule | export kuberay | submit   # see pipelines/ops_cli.py
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from orchestrator.errors import FederationError, SchemaMismatch
from orchestrator.schema import agree
from pipelines import build, lifecycle_cli, ops_cli
from pipelines.checkpoint import CheckpointError
from pipelines.federated import site_cli
from pipelines.privacy_report import delta_problems, privacy_line, training_rows_estimate
from pipelines.ray_auth import prepare_ray_auth
from pipelines.registry import RegistryError
from pipelines.spec import LoadedPipeline, PipelineError, bundled_example, bundled_examples, load_pipeline
from privacy.codec import CodecError
from silo.data import inspect_table

EXIT_FEDERATION = 1
EXIT_INPUT = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedsilo", description="Cross-silo federated learning on Ray.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and actor logs")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run a federation (default: the bundled heart-disease example)")
    run.add_argument("pipeline", nargs="?", type=Path, help="pipeline TOML file")
    run.add_argument(
        "--example", nargs="?", const="", metavar="NAME",
        help="run a bundled example (heart-disease, breast-ultrasound); without NAME, list them",
    )  # fmt: skip
    run.add_argument("--summary-json", type=Path, help="write a machine-readable summary here")
    run.add_argument("--address", help="join an existing Ray cluster (e.g. 127.0.0.1:6379)")
    run.add_argument("--rounds", type=int, help="override the pipeline's number of rounds")
    run.add_argument("--resume", metavar="RUN_ID", help="continue a run from its last checkpoint")
    run.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE", help="extra MLflow run tag")
    run.add_argument(
        "--from-champion",
        action="store_true",
        help="warm-start from @champion when it exists (scheduled runs)",
    )

    validate = commands.add_parser("validate", help="check a pipeline and every silo's data")
    validate.add_argument("pipeline", type=Path)
    validate.add_argument(
        "--against-sites", action="store_true",
        help="ask every remote site whether it would accept this run (no data is opened)",
    )  # fmt: skip

    lifecycle_cli.add_commands(commands)  # evaluate, promote, review
    site_cli.add_parser(commands)  # site serve, site audit

    keys = commands.add_parser("keys", help="homomorphic-encryption keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    init = key_commands.add_parser("init", help="write HE keys for out-of-band provisioning")
    init.add_argument("pipeline", type=Path, help="the pipeline whose HE scheme and parameters to use")
    init.add_argument("--out", type=Path, help="folder to write (default: [privacy] keys, else ./keys)")
    ops_cli.add_commands(commands)
    return parser


def keys_init(loaded: LoadedPipeline, out: Path | None, console: Console) -> None:
    from privacy.keyfile import write_key_files

    folder = out or Path(build.keys_folder(loaded) or "keys")
    secret, public = write_key_files(build.he_config(loaded), folder)
    relative = os.path.relpath(folder.resolve(), loaded.path.parent)
    console.print(
        f"wrote {secret} (the silos' secret key, mode 0600) and {public} (the orchestrator's parameters).\n"
        f"Copy {secret.name} to this folder on every silo's node, by a channel you trust; the orchestrator "
        f"needs only {public.name}.\nThen set, in {loaded.path.name}:\n\n  [privacy]\n"
        f'  keys = "{relative}"\n\nRuns then use these keys instead of making a fresh set per run.',
        markup=False,
        highlight=False,
    )


def validate(loaded: LoadedPipeline, console: Console, against_sites: bool = False) -> int:
    """Every check that needs no training, run against the files on this machine (local silos),
    then, with ``against_sites``, each remote site's answer. 1 when a site would not take part."""
    spec = loaded.spec
    local = [s for s in spec.silos if not spec.is_remote(s)]
    if local:
        validate_local(replace(loaded, spec=spec.model_copy(update={"silos": local})), console)
    console.print(privacy_line(spec), highlight=False)  # of the whole federation, remote silos too
    if spec.remote_silos and not against_sites:
        console.print(f"remote silos {spec.remote_silos}: their sites check their own data; "
                      "ask them with --against-sites", highlight=False)  # fmt: skip
    if not against_sites:
        return 0
    if not spec.remote_silos:
        raise PipelineError(loaded.path, ["--against-sites: this pipeline has no remote silos"])
    return site_cli.ask(loaded, console)


def validate_local(loaded: LoadedPipeline, console: Console) -> None:
    if loaded.spec.task is not None:
        validate_task(loaded, console)
        return
    data = build.data_spec(loaded)
    descriptions = [inspect_table(silo.name, loaded.silo_path(silo), data) for silo in loaded.spec.silos]
    schema = agree(descriptions)
    fraction = loaded.spec.table.validation_fraction
    train_rows = {d.name: training_rows_estimate(d.rows, fraction) for d in descriptions}
    problems = delta_problems(loaded.spec, train_rows)
    if problems:
        raise PipelineError(loaded.path, problems)
    table = Table(title=f"{loaded.path.name}: pipeline {loaded.spec.name!r} is valid", title_justify="left")
    for column in ("silo", "rows", "missing cells", "classes", "path"):
        table.add_column(column)
    for silo, d in zip(loaded.spec.silos, descriptions, strict=True):
        table.add_row(d.name, str(d.rows), str(sum(d.missing.values())), ",".join(d.classes), silo.path)
    console.print(table)
    console.print(
        f"{len(schema.features)} features ({len(schema.categorical)} categorical), "
        f"{schema.n_inputs} model inputs, classes {list(schema.classes)}"
    )
    for warning in (w for d in descriptions for w in d.warnings):
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)


def validate_task(loaded: LoadedPipeline, console: Console) -> None:
    """A task pipeline: every silo opens the task on this machine (splits, model, one batch
    through model and loss) and they must exchange the same tensors over the same frozen base."""
    import torch

    from silo.exchange import manifest_problems
    from silo.task import TaskError
    from silo.task_run import OpenTask, open_task

    spec = loaded.spec
    task = build.task_spec(loaded)
    assert task is not None
    record = spec.privacy.dp == "record"
    opened: dict[str, OpenTask] = {}
    problems: list[str] = []
    for silo in spec.silos:
        try:
            opened[silo.name] = open_task(task, silo.name, loaded.silo_path(silo), spec.training.seed,
                                          torch.device("cpu"), record)  # fmt: skip
        except TaskError as err:
            problems.append(str(err))
    problems += manifest_problems({name: o.exchange.manifest for name, o in opened.items()})
    train_rows = {name: o.rows[0] for name, o in opened.items()}
    problems += delta_problems(spec, train_rows)
    if problems:
        raise PipelineError(loaded.path, problems)
    table = Table(title=f"{loaded.path.name}: pipeline {spec.name!r} is valid", title_justify="left")
    for column in ("silo", "train", "validation", "path"):
        table.add_column(column)
    for silo in spec.silos:
        train, val = opened[silo.name].rows
        table.add_row(silo.name, str(train), str(val), silo.path)
    console.print(table)
    first = next(iter(opened.values()))
    manifest = first.exchange.manifest
    frozen = (
        f", {manifest.frozen_parameters} frozen (hash {manifest.frozen_sha256[:12]})"
        if manifest.frozen_sha256
        else ""
    )
    console.print(
        f"task {Path(first.task.source).name} (sha256 {first.task.sha256[:12]}), kind {first.task.kind}: "
        f"{manifest.size} values exchanged in {len(manifest.tensors)} tensors{frozen}",
        highlight=False,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    console = Console()
    err_console = Console(stderr=True, soft_wrap=True)  # messages stay whole lines, to copy
    try:
        if args.command == "validate":
            return validate(load_pipeline(args.pipeline), console, args.against_sites)
        if args.command == "site":
            return site_cli.main(args)
        if args.command in lifecycle_cli.COMMANDS:
            return lifecycle_cli.run_command(args, console, err_console)
        if args.command == "keys":
            keys_init(load_pipeline(args.pipeline), args.out, console)
            return 0
        if getattr(args, "address", None):
            prepare_ray_auth()
        if (code := ops_cli.run_command(args, console)) is not None:
            return code
        from pipelines.runner import RunOptions, run_federation, write_summary

        if args.example is not None and args.pipeline is not None:
            raise PipelineError(args.pipeline, ["give a pipeline file or --example NAME, not both"])
        if args.example == "":
            for name, example in bundled_examples().items():
                console.print(f"{name:20} {example}", highlight=False)
            return 0
        examples = bundled_examples()
        if args.example is not None and args.example not in examples:
            raise PipelineError(Path(args.example), [f"no bundled example {args.example!r}; there are: "
                                                     + ", ".join(examples)])  # fmt: skip
        path = args.pipeline or bundled_example(args.example or "heart-disease")
        loaded = load_pipeline(path)
        if args.from_champion:
            from pipelines.warmstart import with_champion_warm_start

            loaded = with_champion_warm_start(loaded)
        if args.rounds is not None and args.rounds < 1:
            raise PipelineError(path, ["--rounds must be at least 1"])
        bad_tags = [t for t in args.tag if "=" not in t]
        if bad_tags:
            raise PipelineError(path, [f"--tag {bad_tags[0]!r}: use KEY=VALUE"])
        options = RunOptions(
            address=args.address, rounds=args.rounds, log_to_driver=args.verbose, resume=args.resume,
            tags=dict(t.split("=", 1) for t in args.tag),
        )  # fmt: skip
        summary = run_federation(loaded, options, console)
        if args.summary_json:
            write_summary(summary, args.summary_json)
            console.print(f"summary written to {args.summary_json}")
        return 0
    except PipelineError as err:
        err_console.print(f"[red]error:[/] {escape(str(err))}", highlight=False)
        return EXIT_INPUT
    except SchemaMismatch as err:
        err_console.print(f"[red]error:[/] {err}", highlight=False)
        return EXIT_INPUT
    except (CodecError, CheckpointError) as err:
        err_console.print(f"[red]error:[/] {err}", highlight=False)
        return EXIT_INPUT
    except RegistryError as err:  # `fedsilo run`: [model] from, an unreachable tracking server
        err_console.print(f"[red]error:[/] {escape(str(err))}", highlight=False)
        return err.exit_code
    except FederationError as err:
        err_console.print(f"[red]federation stopped:[/] {err}", highlight=False)
        return EXIT_FEDERATION
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130


def entry() -> None:
    """The ``fedsilo`` command: ``main``, then exit without tearing the interpreter down.

    Everything that must outlive the command is already written when ``main`` returns (the
    MLflow run ended, Ray shut down, output flushed here); the interpreter's own teardown of
    MLflow's, Ray's and pandas' modules is 1 to 2 s of nothing a user waits for.
    """
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
