"""The task contract: a data scientist's own PyTorch workload, run inside fedsilo's loop.

A pipeline names a task module (``[task] module``: a ``.py`` file next to the pipeline, or an
importable ``pkg.module``); fedsilo owns everything around it (loaders, backward, optimizer,
FedProx/SCAFFOLD, DP-SGD, clipping, HE, metrics reduction, publishing). The names and
signatures below are a fixed contract (DESIGN.md, "Tasks"): add hooks, never rename them.

    def dataset(ctx, split)        # required; split "train" | "val"; items (inputs, target)
    def model(config)              # required; any nn.Module, built the same on every silo
    def loss(outputs, target)      # per-sample vector (fedsilo takes the mean) or a scalar
    def metrics(outputs, target)   # once per silo over its whole val split: additive sums
    def finalize(sums)             # summed sums -> {name: float}
    def predict(model, data)       # the registered pyfunc: a pandas DataFrame

``kind`` (binary | multiclass | regression) supplies loss, metrics and finalize that a module
leaves out.

    python -c "from silo.task import load_task; \
t = load_task('pipelines/examples/breast_ultrasound/breast_task.py', kind='binary'); print(t)"
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

logger = logging.getLogger(__name__)

Kind = Literal["binary", "multiclass", "regression"]
KINDS: tuple[str, ...] = ("binary", "multiclass", "regression")
REQUIRED = ("dataset", "model")
OPTIONAL = ("loss", "metrics", "finalize", "predict")


class TaskError(ValueError):
    """A task module that cannot be used; the message names the silo, the function and why."""


@dataclass(frozen=True)
class TaskContext:
    """What ``dataset(ctx, split)`` is handed on a silo."""

    path: Path  # the silo's `path`, resolved on its own node: a file or a folder
    silo: str  # the silo's name
    config: Mapping[str, Any] = field(default_factory=dict)  # [task.config]
    seed: int = 0  # [training] seed: the same on every silo


@dataclass(frozen=True)
class Task:
    """A loaded task module: its hooks, defaults filled in from ``kind``."""

    source: str  # the file, or the module name
    sha256: str  # of the file's bytes: a run tag and a version tag
    kind: Kind | None
    dataset: Callable[..., Any]
    model: Callable[..., Any]
    loss: Callable[..., Any]
    metrics: Callable[..., Any]
    finalize: Callable[..., Any]
    predict: Callable[..., Any] | None
    module: ModuleType

    def __repr__(self) -> str:
        hooks = [name for name in (*REQUIRED, *OPTIONAL) if name in vars(self.module)]
        return f"Task({self.source!r}, kind={self.kind!r}, sha256={self.sha256[:12]}, defines {hooks})"


def _module_path(module: str, base_dir: Path | None) -> Path | None:
    """The file a ``[task] module`` names, or None for an importable ``pkg.module``."""
    if module.endswith(".py") or "/" in module or "\\" in module:
        path = Path(module)
        return path if path.is_absolute() or base_dir is None else base_dir / path
    return None


def _import(module: str, base_dir: Path | None, silo: str) -> tuple[ModuleType, Path, bytes]:
    """The module, its file, and the file's bytes."""
    where = f"silo {silo!r}: " if silo else ""
    path = _module_path(module, base_dir)
    if path is None:
        try:
            loaded = importlib.import_module(module)
        except Exception as err:
            raise TaskError(f"{where}[task] module {module!r} does not import: {_where(err)}") from err
        origin = Path(loaded.__file__ or module)
        return loaded, origin, origin.read_bytes() if origin.is_file() else b""
    path = path.resolve()
    if not path.is_file():
        raise TaskError(f"{where}[task] module {str(path)!r} does not exist on this node")
    source = path.read_bytes()
    return exec_source(source, path, silo), path, source


def exec_source(source: bytes, path: Path, silo: str = "") -> ModuleType:
    """A task file's bytes as a module (named by their hash); ``path`` names it in errors and
    tracebacks, so a silo runs exactly the bytes the driver read, wherever the file is."""
    name = f"fedsilo_task_{hashlib.sha256(source).hexdigest()[:16]}"
    if name in sys.modules:
        return sys.modules[name]
    where = f"silo {silo!r}: " if silo else ""
    loaded = ModuleType(name)
    loaded.__file__ = str(path)
    sys.modules[name] = loaded  # dataclasses and pickling look modules up by name
    try:
        exec(compile(source, str(path), "exec"), loaded.__dict__)
    except Exception as err:
        sys.modules.pop(name, None)
        raise TaskError(f"{where}task file {path.name} does not import: {_where(err, path)}") from err
    return loaded


def _where(err: BaseException, path: Path | None = None) -> str:
    """``err`` with the line of ``path`` (the task file) it came from, when there is one."""
    line = err.lineno if isinstance(err, SyntaxError) else None
    tb = err.__traceback__
    while tb is not None:  # the innermost frame in the task file
        if path is not None and Path(tb.tb_frame.f_code.co_filename) == path:
            line = tb.tb_lineno
        tb = tb.tb_next
    text = f"{type(err).__name__}: {err}"
    return f"{text} (line {line})" if line is not None else text


@dataclass(frozen=True)
class TaskSpec:
    """``[task]`` as a silo is constructed with it: the task file's bytes travel with it, so every
    silo runs what the driver read (an importable module is imported by name on the silo)."""

    module: str  # the file's path as the pipeline resolved it, or "pkg.module"
    source: bytes | None  # the file's bytes; None for an importable module
    kind: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    buffers: Literal["federated", "local"] = "federated"

    @classmethod
    def read(
        cls,
        module: str,
        base_dir: Path | None,
        kind: str | None = None,
        config: Mapping[str, Any] | None = None,
        buffers: Literal["federated", "local"] = "federated",
    ) -> TaskSpec:
        path = _module_path(module, base_dir)
        if path is None:
            return cls(module, None, kind, dict(config or {}), buffers)
        path = path.resolve()
        if not path.is_file():
            raise TaskError(f"[task] module {str(path)!r} does not exist")
        return cls(str(path), path.read_bytes(), kind, dict(config or {}), buffers)

    def load(self, silo: str = "") -> Task:
        if self.source is None:
            return load_task(self.module, None, self.kind, silo)
        return _checked(exec_source(self.source, Path(self.module), silo), Path(self.module), self.source,
                        self.kind, silo)  # fmt: skip


def load_task(module: str, base_dir: Path | None = None, kind: str | None = None, silo: str = "") -> Task:
    """Import a task module and check its hooks; ``silo`` names the silo in every error."""
    loaded, path, source = _import(module, base_dir, silo)
    return _checked(loaded, path, source, kind, silo)


def _checked(loaded: ModuleType, path: Path, source: bytes, kind: str | None, silo: str) -> Task:
    from silo import task_kinds

    where = f"silo {silo!r}: " if silo else ""
    missing = [name for name in REQUIRED if not callable(getattr(loaded, name, None))]
    if missing:
        raise TaskError(f"{where}task {path.name} lacks {', '.join(f'{m}()' for m in missing)}")
    if kind is not None and kind not in KINDS:
        raise TaskError(f"{where}[task] kind {kind!r}: use one of {', '.join(KINDS)}")
    hooks = {name: getattr(loaded, name, None) for name in OPTIONAL}
    not_callable = [name for name, hook in hooks.items() if hook is not None and not callable(hook)]
    if not_callable:
        raise TaskError(f"{where}task {path.name}: {', '.join(not_callable)} must be functions")
    defaults = task_kinds.defaults(kind)
    for name in ("loss", "metrics", "finalize"):
        if hooks[name] is None:
            hooks[name] = defaults.get(name)
    if hooks["loss"] is None:
        raise TaskError(f"{where}task {path.name} defines no loss() and no [task] kind to take one from")
    if hooks["metrics"] is not None and hooks["finalize"] is None:
        raise TaskError(f"{where}task {path.name} defines metrics() but no finalize() (and no [task] kind)")
    if hooks["metrics"] is None:  # the loss alone, as sums
        hooks["metrics"], hooks["finalize"] = task_kinds.loss_metrics(hooks["loss"]), task_kinds.loss_finalize
    return Task(
        source=str(path), sha256=hashlib.sha256(source).hexdigest() if source else "",
        kind=kind,  # type: ignore[arg-type]
        dataset=loaded.dataset, model=loaded.model, loss=hooks["loss"],  # type: ignore[arg-type]
        metrics=hooks["metrics"], finalize=hooks["finalize"],  # type: ignore[arg-type]
        predict=hooks["predict"], module=loaded,
    )  # fmt: skip
