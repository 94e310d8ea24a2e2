"""What a run reports of figures a silo's rows leave undefined: NaN in the summary and tables,
never a number in MLflow, and the reason wherever the figure would be."""

from __future__ import annotations

import io
import json
import math

from rich.console import Console

from orchestrator.metrics import combine
from pipelines.console import summary_table, undefined_notes
from pipelines.report import RunSummary
from pipelines.tracking import eval_metrics, undefined_tags
from silo.messages import Evaluation


def _hist(bins: dict[int, int]) -> tuple[int, ...]:
    return tuple(bins.get(i, 0) for i in range(100))


RESULT = combine(
    5,
    [
        Evaluation("cleveland", 10, 4.0, 8, _hist({80: 5}), _hist({20: 4, 90: 1})),
        Evaluation("switzerland", 6, 3.0, 5, _hist({70: 5, 40: 1}), _hist({})),  # one class
        Evaluation("clinic", 0, 0.0, 0, _hist({}), _hist({})),  # no validation rows
    ],
)


def test_undefined_figures_are_not_logged_as_numbers_and_tags_say_why() -> None:
    metrics = eval_metrics(RESULT)
    assert metrics["silo/switzerland/val_accuracy"] == 5 / 6 and "silo/switzerland/val_auc" not in metrics
    assert metrics["silo/cleveland/val_auc"] == 0.8 and not any(k.startswith("silo/clinic/") for k in metrics)
    assert all(math.isfinite(v) for v in metrics.values())
    assert metrics["global/val_accuracy"] == 13 / 16 and metrics["global/val_auc"] == RESULT.auc
    assert metrics["global/val_accuracy_mean_of_silos"] == (0.8 + 5 / 6) / 2
    tags = undefined_tags(RESULT)
    assert tags["fedsilo.undefined.silo/switzerland/val_auc"] == "a single class in its validation rows"
    assert tags["fedsilo.undefined.silo/clinic/val_accuracy"] == "no validation rows"
    assert not any("cleveland" in k for k in tags)


def test_the_summary_and_its_table_show_nan_for_undefined_figures() -> None:
    summary = RunSummary("r1", "sqlite:///x.db", "heart", 5, ["cleveland", "switzerland", "clinic"], "packed")
    summary.finish(RESULT)
    data = json.loads(json.dumps(summary.to_dict()))  # NaN survives the JSON round trip as NaN
    swiss = data["per_silo"]["switzerland"]
    assert math.isnan(swiss["val_auc"]) and swiss["val_accuracy"] == 5 / 6 and swiss["val_rows"] == 6
    assert swiss["undefined"] == {"auc": "a single class in its validation rows"}
    assert math.isnan(data["final"]["silos"]["switzerland"]["auc"])
    assert data["final"]["metrics"]["accuracy"] == 13 / 16 and data["final"]["global_val_auc"] == RESULT.auc
    out = io.StringIO()
    Console(file=out, width=200).print(summary_table(summary))
    text = out.getvalue()
    row = next(line for line in text.splitlines() if "│ switzerland" in line)
    assert "0.833" in row and row.rstrip(" │").endswith("NaN")
    assert undefined_notes(summary) == [
        "NaN: silo switzerland's auc is undefined (a single class in its validation rows)",
        "NaN: silo clinic's loss is undefined (no validation rows)",
        "NaN: silo clinic's accuracy is undefined (no validation rows)",
        "NaN: silo clinic's auc is undefined (no validation rows)",
    ]
