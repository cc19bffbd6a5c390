"""The RAG methods through the runner: every method arm logs the same metric names as rag
(retrieval measures NaN where nothing was retrieved), its extra model calls in the cell's
cost, its queries and generated passages in the predictions; a second run predicts nothing."""

from __future__ import annotations

import math

import mlflow
import pytest
from tests.integration.test_runner import TASK, _runs, task_index  # noqa: F401  (a fixture)

from biorag.experiment.runner import run_experiment

ARMS = "rag,rag-hyde,rag-multi,rag-filter,rag-iterative,genread,rag-genread"


def test_every_method_is_a_cell_with_the_rag_names_and_its_cost(task_index, tmp_path):  # noqa: F811
    over = [f"arm={ARMS}", "model=fake", *TASK, f"arm.retriever.index={task_index}", f"cache_dir={tmp_path / 'c'}",
            "experiment=m", "model.options.answer='{hash}'"]  # every method's text: 8 hex characters
    result = run_experiment(over)
    _, children = _runs("m")
    runs = {r.data.tags["arm"]: r.data for r in children}
    assert set(runs) == set(ARMS.split(","))
    assert all(r.metrics.keys() >= runs["rag"].metrics.keys() for r in runs.values())
    t = "hpo-term-mcq/"
    assert runs["rag"].metrics[t + "method_calls"] == 0
    assert runs["rag-hyde"].metrics[t + "method_calls"] == 1 and runs["rag-hyde"].metrics[t + "method_tokens"] > 0
    assert runs["rag-multi"].metrics[t + "queries_per_item"] == 2  # the question and one written line
    assert runs["rag-iterative"].metrics[t + "method_calls"] == 1
    assert runs["genread"].metrics[t + "method_calls"] == 3
    assert 0 <= runs["rag-filter"].metrics[t + "filter_kept"] <= 1
    assert not math.isnan(runs["rag-filter"].metrics[t + "evidence_before_filter"])
    # nothing retrieved: the retrieval measures are NaN under the same names
    assert math.isnan(runs["genread"].metrics[t + "retrieval_recall_at_5"])
    assert not math.isnan(runs["rag-genread"].metrics[t + "retrieval_recall_at_5"])
    assert runs["genread"].metrics[t + "generated_passages"] == 3
    table = mlflow.load_table("predictions.json", run_ids=[next(c.run_id for c in result.cells if c.arm == "rag-hyde")])
    assert table["queries"].str.len().min() > 0
    # generated passages are shown with their text, marked, and the report lists the methods
    from biorag.report.compare import build_report
    from biorag.report.predictions import cell_items
    from biorag.report.render import methods_table
    from biorag.report.study import read_study

    item = cell_items("genread/fake/hpo-term-mcq", "m").items[0]
    assert len(item.passages) == 3 and all(p.generated and p.text for p in item.passages)
    mixed = cell_items("rag-genread/fake/hpo-term-mcq", "m").items[0]
    assert [p.generated for p in mixed.passages][:2] == [False, True]
    methods = methods_table(build_report(read_study("m")))
    assert methods is not None and {r[0] for r in methods.rows} >= {"rag-hyde", "genread", "rag-filter"}
    # a second run: every item from the cache, the methods' calls included
    again = run_experiment(over)
    assert all(c.resumed == c.n for c in again.cells)


def test_the_factorial_places_a_method_as_a_retrieval_level():
    from biorag.report.factorial import effects, place
    from biorag.report.study import Cell
    from biorag.types import Prediction

    def cell(arm, retriever, adapter, scores):
        preds = [Prediction(str(i), "", "A", "A", scores={"accuracy": v}) for i, v in enumerate(scores)]
        return Cell(arm, arm, "m", "t", "general", None, 0, {"t/accuracy": sum(scores) / len(scores)}, preds,
                    retriever=retriever, adapter=adapter)

    cells = [cell("base", None, None, [0, 0, 1, 0]), cell("rag", "plain", None, [1, 0, 1, 0]),
             cell("rag-hyde", "hyde", None, [1, 1, 1, 0]), cell("lora", None, "a", [0, 1, 1, 0]),
             cell("lora_rag", "plain", "a", [1, 1, 1, 0]), cell("lora_rag-hyde", "hyde", "a", [1, 1, 1, 1])]
    designs = {f.rag.arm: f for f in place(cells, {"t": "accuracy"})}
    assert set(designs) == {"rag", "rag-hyde"}
    got = {e.effect: e.value for e in effects(designs["rag-hyde"])}
    # ((rag-hyde - base) + (lora_rag-hyde - lora)) / 2 over items, by hand: (2/4 + 2/4) / 2
    assert got["retrieval"] == pytest.approx(0.5)
    assert got["fine-tune a"] == pytest.approx(((1 / 4) + (1 / 4)) / 2)
    assert got["interaction a"] == pytest.approx((2 / 4) - (2 / 4))
