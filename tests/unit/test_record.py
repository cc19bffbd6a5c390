"""The per-item record a cell keeps (`CellRecord`) and the predictions rows the report reads
back (`Prediction`): both round-trip through their JSONL exactly, and cache files written before
the record was typed load and score to the metrics they had.

The cache lines, metrics, TREC files and predictions.jsonl below were written by the runner as
it was before `CellRecord` (main at cdb5b5b), on a fake-model study of four hpo-term-mcq items:
a rag cell (dense retrieval, an LM rerank stage, log-likelihood and generation) and a
closed-book chain-of-thought cell with three seeded samples per item.
"""

from __future__ import annotations

import json
import math
from dataclasses import fields
from types import SimpleNamespace

import pytest

from biorag.errors import InputError
from biorag.experiment.cache import PredictionCache
from biorag.experiment.plan import plan
from biorag.experiment.runner import (
    add_retrieval_scores,
    cell_metrics,
    predictions_jsonl,
    score_records,
)
from biorag.report.strata import strata
from biorag.report.study import Cell, read_predictions
from biorag.retrieval.evidence import CELL_KEYS, EVIDENCE_IN_PROMPT
from biorag.tasks import load_examples
from biorag.types import CellRecord, Prediction, RankedChunk

nan = math.nan
TASK = "hpo-term-mcq"
RAG = ["arm=rag", "model=fake", "model.options.mode=context", f"task={TASK}", "task.n=4", "task.scoring=both",
       "arm.retriever.index=defs", "arm.retriever.k=2", "arm.retriever.rerank=lm", "arm.retriever.candidates=4"]
COT = ["arm=base", "model=fake", "model.options.mode=context", f"task={TASK}", "task.n=4", "task.protocol=cot",
       "task.samples=3", "task.temperature=1.0", "task.max_new_tokens=12"]
# the documents of the rag cell's index (its source-in-index flags), and its retriever's name
INDEX_DOCS = {"HP:0008134", "HP:6000405", "HP:X1", "HP:X2"}
RETRIEVER = ("dense+rerank", "e7635299ffa03e98")
# fields that cache files written before biorag kept them lack
LATER_FIELDS = ("ranked", "prompt_docs", "samples", "gen_tokens", "rerank_s", "query_cut")

CACHE_RAG = """\
{"id": "hpo-term-mcq-HP:0008134", "prompt_hash": "d233b48afc63ebc0", "retrieved": ["HP:0008134#0", "HP:X2#0"], "ranked": [["HP:0008134#0", "HP:0008134", 0.8253719999999998, 1], ["HP:X2#0", "HP:X2", -4.736791, 4], ["HP:6000405#0", "HP:6000405", -6.444361, 3], ["HP:X1#0", "HP:X1", -8.925156999999999, 2]], "prompt_docs": ["HP:0008134", "HP:X2"], "output": "", "ll": [[3.274407, 3, 29, false], [6.880796999999999, 3, 27, false], [18.944308, 3, 30, false], [5.6620349999999995, 2, 17, false], [8.311167, 3, 28, false]], "tokens": 87, "gen_tokens": 0, "retrieval_s": 0.2437791439999728, "rerank_s": 5.40519999958633e-05, "query_cut": false, "model_s": 7.529424999574985e-05, "truncated": false}
{"id": "hpo-term-mcq-HP:6000405", "prompt_hash": "d69e02020b864400", "retrieved": ["HP:6000405#0", "HP:X1#0"], "ranked": [["HP:6000405#0", "HP:6000405", 3.2990130000000004, 1], ["HP:X1#0", "HP:X1", -3.327022, 3], ["HP:0008134#0", "HP:0008134", -7.329655, 4], ["HP:X2#0", "HP:X2", -8.213428, 2]], "prompt_docs": ["HP:6000405", "HP:X1"], "output": "", "ll": [[11.574226, 6, 70, false], [4.682889, 8, 86, false], [2.6719109999999997, 4, 43, false], [5.601753, 4, 43, false], [0.4991310000000002, 4, 50, false]], "tokens": 91, "gen_tokens": 0, "retrieval_s": 0.2437791439999728, "rerank_s": 5.40519999958633e-05, "query_cut": false, "model_s": 7.529424999574985e-05, "truncated": false}
{"id": "hpo-term-mcq-HP:0033459", "prompt_hash": "e8683f6019a25e23", "retrieved": ["HP:X1#0", "HP:X2#0"], "ranked": [["HP:X1#0", "HP:X1", -1.355869, 3], ["HP:X2#0", "HP:X2", -3.353959, 1], ["HP:0008134#0", "HP:0008134", -9.316972, 4], ["HP:6000405#0", "HP:6000405", -9.516574, 2]], "prompt_docs": ["HP:X1", "HP:X2"], "output": "", "ll": [[7.818282, 4, 51, false], [3.842739, 4, 49, false], [3.7664099999999996, 11, 87, false], [6.397479000000001, 5, 49, false], [5.32611, 3, 26, false]], "tokens": 69, "gen_tokens": 0, "retrieval_s": 0.2437791439999728, "rerank_s": 5.40519999958633e-05, "query_cut": false, "model_s": 7.529424999574985e-05, "truncated": false}
{"id": "hpo-term-mcq-HP:0041231", "prompt_hash": "1b571c67a9f337ba", "retrieved": ["HP:X2#0", "HP:X1#0"], "ranked": [["HP:X2#0", "HP:X2", -6.309838, 4], ["HP:X1#0", "HP:X1", -6.470731, 1], ["HP:0008134#0", "HP:0008134", -8.563798, 2], ["HP:6000405#0", "HP:6000405", -9.804043, 3]], "prompt_docs": ["HP:X2", "HP:X1"], "output": "", "ll": [[0.7089660000000002, 5, 40, false], [7.604037, 5, 34, false], [8.370108, 3, 24, false], [3.9437100000000003, 6, 37, false], [2.670768, 3, 23, false]], "tokens": 65, "gen_tokens": 0, "retrieval_s": 0.2437791439999728, "rerank_s": 5.40519999958633e-05, "query_cut": false, "model_s": 7.529424999574985e-05, "truncated": false}
"""

CACHE_COT = """\
{"id": "hpo-term-mcq-HP:0008134", "prompt_hash": "9c2ecbcfe337ba89", "retrieved": [], "ranked": [], "prompt_docs": [], "output": "C", "samples": ["C", "E", "C"], "ll": [], "tokens": 77, "gen_tokens": 1, "retrieval_s": 1.0200000133409048e-06, "rerank_s": null, "query_cut": false, "model_s": 0.0003930917499701536, "truncated": false}
{"id": "hpo-term-mcq-HP:6000405", "prompt_hash": "ea0e7fa008263219", "retrieved": [], "ranked": [], "prompt_docs": [], "output": "E", "samples": ["E", "C", "E"], "ll": [], "tokens": 83, "gen_tokens": 1, "retrieval_s": 1.0200000133409048e-06, "rerank_s": null, "query_cut": false, "model_s": 0.0003930917499701536, "truncated": false}
{"id": "hpo-term-mcq-HP:0033459", "prompt_hash": "ebf47f3620d4693e", "retrieved": [], "ranked": [], "prompt_docs": [], "output": "E", "samples": ["E", "A", "E"], "ll": [], "tokens": 78, "gen_tokens": 1, "retrieval_s": 1.0200000133409048e-06, "rerank_s": null, "query_cut": false, "model_s": 0.0003930917499701536, "truncated": false}
{"id": "hpo-term-mcq-HP:0041231", "prompt_hash": "015a9eb647f82732", "retrieved": [], "ranked": [], "prompt_docs": [], "output": "E", "samples": ["B", "E", "E"], "ll": [], "tokens": 74, "gen_tokens": 1, "retrieval_s": 1.0200000133409048e-06, "rerank_s": null, "query_cut": false, "model_s": 0.0003930917499701536, "truncated": false}
"""

METRICS_RAG = {
    "retrieval_recall_at_1": 0.5, "retrieval_recall_at_1_ci_low": 0.0, "retrieval_recall_at_1_ci_high": 1.0,
    "retrieval_recall_at_3": 0.5, "retrieval_recall_at_3_ci_low": 0.0, "retrieval_recall_at_3_ci_high": 1.0,
    "retrieval_recall_at_5": 0.5, "retrieval_recall_at_5_ci_low": 0.0, "retrieval_recall_at_5_ci_high": 1.0,
    "retrieval_recall_at_10": 0.5, "retrieval_recall_at_10_ci_low": 0.0, "retrieval_recall_at_10_ci_high": 1.0,
    "retrieval_ndcg_at_10": 0.5, "retrieval_ndcg_at_10_ci_low": 0.0, "retrieval_ndcg_at_10_ci_high": 1.0,
    "retrieval_mrr_at_10": 0.5, "retrieval_mrr_at_10_ci_low": 0.0, "retrieval_mrr_at_10_ci_high": 1.0,
    "retrieval_evidence_in_prompt": 0.5, "retrieval_evidence_in_prompt_ci_low": 0.0, "retrieval_evidence_in_prompt_ci_high": 1.0,
    "leak_source_in_index": 0.5, "leak_source_in_index_ci_low": 0.0, "leak_source_in_index_ci_high": 1.0,
    "accuracy": 0.0, "accuracy_ci_low": 0.0, "accuracy_ci_high": 0.0, "unparsed_rate": 1.0,
    "unparsed_rate_ci_low": 1.0, "unparsed_rate_ci_high": 1.0, "accuracy_ll": 0.75, "accuracy_ll_ci_low": 0.25,
    "accuracy_ll_ci_high": 1.0, "accuracy_ll_norm": 0.5, "accuracy_ll_norm_ci_low": 0.0,
    "accuracy_ll_norm_ci_high": 1.0, "truncated_outputs": 0.0, "truncated_outputs_ci_low": 0.0,
    "truncated_outputs_ci_high": 0.0, "n": 4, "eval_seconds": 0.9754177529998742, "examples_per_s": 4.100807051848395,
    "tokens": 312, "tokens_per_s": 1035935.6790777899, "retrieval_latency_ms": 243.7791439999728,
    "rerank_seconds": 0.0002162079999834532, "queries_cut": 0, "truncated_prompts": 0,
    "generated_tokens": 0.0,
}

# the closed-book cell: its retrieval measures are NaN (MLflow gets the same names in every arm)
METRICS_COT = {
    **{k + ci: nan for k in CELL_KEYS for ci in ("", "_ci_low", "_ci_high")},
    **{
        "accuracy": 0.25, "accuracy_ci_low": 0.0, "accuracy_ci_high": 0.75, "unparsed_rate": 0.0,
        "unparsed_rate_ci_low": 0.0, "unparsed_rate_ci_high": 0.0, "truncated_outputs": 0.0,
        "truncated_outputs_ci_low": 0.0, "truncated_outputs_ci_high": 0.0, "n": 4, "eval_seconds": 0.001576446999933978,
        "examples_per_s": 2537.3513985357713, "tokens": 312, "tokens_per_s": 198426.95758922014,
        "retrieval_latency_ms": 0.0010200000133409048, "rerank_seconds": nan, "queries_cut": 0,
        "truncated_prompts": 0, "generated_tokens": 1.0,
    },
}

RUN_TREC = """\
hpo-term-mcq-HP:0008134 Q0 HP:0008134 1 0.825372 biorag-dense+rerank-e7635299ffa03e98
hpo-term-mcq-HP:0008134 Q0 HP:X2 2 -4.73679 biorag-dense+rerank-e7635299ffa03e98
hpo-term-mcq-HP:0008134 Q0 HP:6000405 3 -6.44436 biorag-dense+rerank-e7635299ffa03e98
hpo-term-mcq-HP:0008134 Q0 HP:X1 4 -8.92516 biorag-dense+rerank-e7635299ffa03e98
hpo-term-mcq-HP:6000405 Q0 HP:6000405 1 3.29901 biorag-dense+rerank-e7635299ffa03e98
hpo-term-mcq-HP:6000405 Q0 HP:X1 2 -3.32702 biorag-dense+rerank-e7635299ffa03e98
hpo-term-mcq-HP:6000405 Q0 HP:0008134 3 -7.32965 biorag-dense+rerank-e7635299ffa03e98
hpo-term-mcq-HP:6000405 Q0 HP:X2 4 -8.21343 biorag-dense+rerank-e7635299ffa03e98
hpo-term-mcq-HP:0033459 Q0 HP:X1 1 -1.35587 biorag-dense+rerank-e7635299ffa03e98
hpo-term-mcq-HP:0033459 Q0 HP:X2 2 -3.35396 biorag-dense+rerank-e7635299ffa03e98
hpo-term-mcq-HP:0033459 Q0 HP:0008134 3 -9.31697 biorag-dense+rerank-e7635299ffa03e98
hpo-term-mcq-HP:0033459 Q0 HP:6000405 4 -9.51657 biorag-dense+rerank-e7635299ffa03e98
hpo-term-mcq-HP:0041231 Q0 HP:X2 1 -6.30984 biorag-dense+rerank-e7635299ffa03e98
hpo-term-mcq-HP:0041231 Q0 HP:X1 2 -6.47073 biorag-dense+rerank-e7635299ffa03e98
hpo-term-mcq-HP:0041231 Q0 HP:0008134 3 -8.5638 biorag-dense+rerank-e7635299ffa03e98
hpo-term-mcq-HP:0041231 Q0 HP:6000405 4 -9.80404 biorag-dense+rerank-e7635299ffa03e98
"""

QRELS_TREC = """\
hpo-term-mcq-HP:0008134 0 HP:0008134 1
hpo-term-mcq-HP:6000405 0 HP:6000405 1
hpo-term-mcq-HP:0033459 0 HP:0033459 1
hpo-term-mcq-HP:0041231 0 HP:0041231 1
"""

PREDICTIONS_RAG = """\
{"example_id": "hpo-term-mcq-HP:0008134", "output": "", "parsed": null, "gold": "C", "scores": {"accuracy": 0.0, "unparsed_rate": 1.0, "accuracy_ll": 1.0, "accuracy_ll_norm": 1.0, "truncated_outputs": 0.0, "retrieval_recall_at_1": 1.0, "retrieval_recall_at_3": 1.0, "retrieval_recall_at_5": 1.0, "retrieval_recall_at_10": 1.0, "retrieval_ndcg_at_10": 1.0, "retrieval_mrr_at_10": 1.0, "retrieval_evidence_in_prompt": 1.0, "leak_source_in_index": 1.0}, "option_logprobs": [3.274407, 6.880796999999999, 18.944308, 5.6620349999999995, 8.311167], "retrieved": ["HP:0008134#0", "HP:X2#0"], "prompt_hash": "d233b48afc63ebc0", "tokens": 87}
{"example_id": "hpo-term-mcq-HP:6000405", "output": "", "parsed": null, "gold": "A", "scores": {"accuracy": 0.0, "unparsed_rate": 1.0, "accuracy_ll": 1.0, "accuracy_ll_norm": 1.0, "truncated_outputs": 0.0, "retrieval_recall_at_1": 1.0, "retrieval_recall_at_3": 1.0, "retrieval_recall_at_5": 1.0, "retrieval_recall_at_10": 1.0, "retrieval_ndcg_at_10": 1.0, "retrieval_mrr_at_10": 1.0, "retrieval_evidence_in_prompt": 1.0, "leak_source_in_index": 1.0}, "option_logprobs": [11.574226, 4.682889, 2.6719109999999997, 5.601753, 0.4991310000000002], "retrieved": ["HP:6000405#0", "HP:X1#0"], "prompt_hash": "d69e02020b864400", "tokens": 91}
{"example_id": "hpo-term-mcq-HP:0033459", "output": "", "parsed": null, "gold": "A", "scores": {"accuracy": 0.0, "unparsed_rate": 1.0, "accuracy_ll": 1.0, "accuracy_ll_norm": 0.0, "truncated_outputs": 0.0, "retrieval_recall_at_1": 0.0, "retrieval_recall_at_3": 0.0, "retrieval_recall_at_5": 0.0, "retrieval_recall_at_10": 0.0, "retrieval_ndcg_at_10": 0.0, "retrieval_mrr_at_10": 0.0, "retrieval_evidence_in_prompt": 0.0, "leak_source_in_index": 0.0}, "option_logprobs": [7.818282, 3.842739, 3.7664099999999996, 6.397479000000001, 5.32611], "retrieved": ["HP:X1#0", "HP:X2#0"], "prompt_hash": "e8683f6019a25e23", "tokens": 69}
{"example_id": "hpo-term-mcq-HP:0041231", "output": "", "parsed": null, "gold": "D", "scores": {"accuracy": 0.0, "unparsed_rate": 1.0, "accuracy_ll": 0.0, "accuracy_ll_norm": 0.0, "truncated_outputs": 0.0, "retrieval_recall_at_1": 0.0, "retrieval_recall_at_3": 0.0, "retrieval_recall_at_5": 0.0, "retrieval_recall_at_10": 0.0, "retrieval_ndcg_at_10": 0.0, "retrieval_mrr_at_10": 0.0, "retrieval_evidence_in_prompt": 0.0, "leak_source_in_index": 0.0}, "option_logprobs": [0.7089660000000002, 7.604037, 8.370108, 3.9437100000000003, 2.670768], "retrieved": ["HP:X2#0", "HP:X1#0"], "prompt_hash": "1b571c67a9f337ba", "tokens": 65}
"""

PREDICTIONS_COT = """\
{"example_id": "hpo-term-mcq-HP:0008134", "output": "C", "parsed": "C", "gold": "C", "scores": {"accuracy": 1.0, "unparsed_rate": 0.0, "truncated_outputs": 0.0}, "option_logprobs": [], "retrieved": [], "prompt_hash": "9c2ecbcfe337ba89", "tokens": 77}
{"example_id": "hpo-term-mcq-HP:6000405", "output": "E", "parsed": "E", "gold": "A", "scores": {"accuracy": 0.0, "unparsed_rate": 0.0, "truncated_outputs": 0.0}, "option_logprobs": [], "retrieved": [], "prompt_hash": "ea0e7fa008263219", "tokens": 83}
{"example_id": "hpo-term-mcq-HP:0033459", "output": "E", "parsed": "E", "gold": "A", "scores": {"accuracy": 0.0, "unparsed_rate": 0.0, "truncated_outputs": 0.0}, "option_logprobs": [], "retrieved": [], "prompt_hash": "ebf47f3620d4693e", "tokens": 78}
{"example_id": "hpo-term-mcq-HP:0041231", "output": "E", "parsed": "E", "gold": "D", "scores": {"accuracy": 0.0, "unparsed_rate": 0.0, "truncated_outputs": 0.0}, "option_logprobs": [], "retrieved": [], "prompt_hash": "015a9eb647f82732", "tokens": 74}
"""



def _same(got: dict[str, float], want: dict[str, float]) -> None:
    """Equal key for key and value for value (NaN equal to NaN), with the first difference named."""
    assert sorted(got) == sorted(want)
    for k, v in want.items():
        assert got[k] == v or (math.isnan(got[k]) and math.isnan(v)), (k, got[k], v)


def _legacy(cache: str) -> str:
    """The lines as biorag wrote them before it kept rankings, samples and the later counts."""
    return "".join(json.dumps({k: v for k, v in json.loads(x).items() if k not in LATER_FIELDS}) + "\n"
                   for x in cache.splitlines())


def _score(overrides: list[str], cache_text: str, tmp_path):
    """A cell scored from a cache file, as the runner scores it after a resume: its metrics,
    predictions.jsonl and TREC files."""
    _, (cfg,), _ = plan(overrides)
    examples = load_examples(cfg.task)
    path = tmp_path / "cell.jsonl"
    path.write_text(cache_text)
    done = PredictionCache(path).load_records()
    records = [done[e.id] for e in examples]
    scores = score_records(cfg, examples, records)
    files = {}
    if cfg.arm.retriever is not None:  # what the cell's index holds and its retriever's name
        index = SimpleNamespace(held_docs=lambda docs: set(docs) & INDEX_DOCS)
        retriever = SimpleNamespace(index=index, mode=RETRIEVER[0], fingerprint=RETRIEVER[1])
        files = add_retrieval_scores(examples, records, scores, retriever, cfg.seed)
    return cell_metrics(cfg.task.name, scores, records), predictions_jsonl(scores.predictions), files


# -- the cache: today's lines, written back byte for byte; older lines still read ------------


def test_todays_cache_lines_read_into_records_and_write_back_byte_for_byte() -> None:
    for line in (CACHE_RAG + CACHE_COT).splitlines():
        record = CellRecord.from_json(json.loads(line))
        assert json.dumps(record.to_json()) == line


def test_a_record_round_trips_every_field() -> None:
    record = CellRecord(
        id="q1", prompt_hash="abc", retrieved=("d1#0", "d2#3"), output="B", ll=((-1.5, 2, 7, True), (-3.0, 1, 4, False)),
        tokens=120, retrieval_s=0.25, model_s=1.5, truncated=True,
        ranked=(RankedChunk("d1#0", "d1", 3.5, 2), RankedChunk("d2#3", "d2", 1.25, None)),
        prompt_docs=("d1", "d2"), samples=("B", "C", "B"), gen_tokens=9, rerank_s=0.125, query_cut=True,
        queries=("q", "hyde passage"), generated=("written",), candidate_docs=("d1", "d3"), kept=1,
        method_tokens=30, method_s=0.5, method_calls=2,
    )
    data = record.to_json()
    assert set(data) == {f.name for f in fields(CellRecord)}  # no field left out of the cache line
    assert data["ranked"] == [["d1#0", "d1", 3.5, 2], ["d2#3", "d2", 1.25]]  # a first-stage rank only where one is
    again = CellRecord.from_json(json.loads(json.dumps(data)))
    assert again == record
    for f in fields(CellRecord):  # each field, as the runner and the TREC writer read it
        assert getattr(again, f.name) == getattr(record, f.name), f.name


def test_older_cache_lines_take_the_defaults_the_runner_read_them_with() -> None:
    old = json.loads(_legacy(CACHE_COT).splitlines()[0])
    record = CellRecord.from_json(old)
    assert (record.ranked, record.prompt_docs, record.samples) == (None, None, ())
    assert (record.gen_tokens, record.rerank_s, record.query_cut) == (0, None, False)
    assert "ranked" not in record.to_json()  # a cell of such records gets no retrieval measures


@pytest.mark.parametrize(("line", "field"), [
    ('{"id": "q", "prompt_hash": "h", "retrieved": [], "ll": [], "tokens": 1, "retrieval_s": 0, "model_s": 0}',
     "output"),
    ('{"id": "q", "prompt_hash": "h", "retrieved": "d1#0", "output": "", "ll": [], "tokens": 1, '
     '"retrieval_s": 0, "model_s": 0}', "retrieved"),
    ('{"id": "q", "prompt_hash": "h", "retrieved": [], "output": "", "ll": [[1.0, 2]], "tokens": 1, '
     '"retrieval_s": 0, "model_s": 0}', "ll"),
])
def test_a_cache_line_that_is_not_a_record_names_file_line_and_field(tmp_path, line: str, field: str) -> None:
    path = tmp_path / "cell.jsonl"
    path.write_text(CACHE_COT.splitlines()[0] + "\n" + line + "\n")
    with pytest.raises(InputError, match=rf"cell.jsonl:2: .*field '{field}'"):
        PredictionCache(path).load_records()


# -- the same metrics from the same cache, before and after the typed record -----------------


# cost keys added with the RAG methods: no method calls in these cells; one query an item
# where something was retrieved
METHOD_COST = {"method_calls": 0.0, "method_tokens": 0.0, "method_seconds": 0.0}


def _with_methods(metrics: dict, retrieved: bool) -> dict:
    return {**metrics, **METHOD_COST, "queries_per_item": 1.0 if retrieved else 0.0}


@pytest.mark.parametrize(("overrides", "cache", "metrics", "predictions"), [
    (RAG, CACHE_RAG, METRICS_RAG, PREDICTIONS_RAG),
    (COT, CACHE_COT, METRICS_COT, PREDICTIONS_COT),
], ids=["rag-rerank-both", "closed-book-cot-samples"])
def test_a_cached_cell_scores_to_the_metrics_and_files_it_logged(tmp_path, overrides, cache, metrics,
                                                                  predictions) -> None:
    got, jsonl, files = _score(overrides, cache, tmp_path)
    _same(got, {f"{TASK}/{k}": v for k, v in _with_methods(metrics, overrides is RAG).items()})
    assert jsonl == predictions  # predictions.jsonl, byte for byte
    if overrides is RAG:
        assert files == {"run.trec": RUN_TREC, "qrels.trec": QRELS_TREC}


def test_a_cache_from_before_the_later_fields_scores_as_it_did(tmp_path) -> None:
    got, jsonl, _ = _score(COT, _legacy(CACHE_COT), tmp_path)
    # as before: without gen_tokens, an item counts 0 generated tokens (and is never "truncated")
    _same(got, {f"{TASK}/{k}": v for k, v in _with_methods({**METRICS_COT, "generated_tokens": 0.0}, False).items()})
    assert jsonl == PREDICTIONS_COT


# -- predictions.jsonl: the rows the report, the strata and `predictions show` read ----------


def test_predictions_rows_read_back_field_for_field_and_write_back_byte_for_byte() -> None:
    rows = read_predictions(PREDICTIONS_RAG + PREDICTIONS_COT)
    assert [p.to_json() for p in rows] == (PREDICTIONS_RAG + PREDICTIONS_COT).splitlines()
    first = rows[0]
    assert first.example_id == "hpo-term-mcq-HP:0008134" and first.gold == "C" and first.parsed is None
    assert first.retrieved == ("HP:0008134#0", "HP:X2#0") and first.tokens == 87
    assert first.option_logprobs[2] == 18.944308 and first.scores[EVIDENCE_IN_PROMPT] == 1.0
    entity = Prediction("q", "x", ("a", "b"), (("IDA", "Praxbind"), ("protamine",)), {"f1": nan, "em": 1.0},
                        (-1.0, -2.5), ("c#0",), "h", 40)
    again = read_predictions(entity.to_json())[0]
    assert again.to_json() == entity.to_json() and again.gold == entity.gold and again.parsed == entity.parsed
    assert math.isnan(again.scores["f1"]) and again.scores["em"] == 1.0


def test_rows_of_earlier_versions_read_with_defaults_and_bad_rows_name_their_line() -> None:
    (old,) = read_predictions('{"example_id": "q", "scores": {"accuracy": "1.0"}}\n')  # a score written as text
    assert old.scores == {"accuracy": 1.0} and old.retrieved == () and old.output == "" and old.tokens is None
    with pytest.raises(InputError, match=r"predictions.jsonl of run r1:2: .*field 'scores'"):
        read_predictions(PREDICTIONS_COT.splitlines()[0] + '\n{"example_id": "q", "scores": [1]}\n',
                         "predictions.jsonl of run r1")


def test_the_strata_split_by_the_flags_the_rows_carry() -> None:
    def cell(arm: str, text: str) -> Cell:
        return Cell(f"r-{arm}", arm, "fake", TASK, "general", None, 0, {}, read_predictions(text))

    rag, base = cell("rag", PREDICTIONS_RAG), cell("base", PREDICTIONS_COT)
    assert rag.scores(EVIDENCE_IN_PROMPT) == {"hpo-term-mcq-HP:0008134": 1.0, "hpo-term-mcq-HP:6000405": 1.0,
                                              "hpo-term-mcq-HP:0033459": 0.0, "hpo-term-mcq-HP:0041231": 0.0}
    found = {(s.split, s.stratum): s.n for s in strata(base, rag, "accuracy_ll")}
    assert found == {}  # the closed-book cell has no accuracy_ll: nothing paired
    split = {(s.split, s.stratum): (s.n, s.treatment_value, s.reference_value) for s in strata(base, rag, "accuracy")}
    assert split[(EVIDENCE_IN_PROMPT, "evidence in prompt")] == (2, 0.0, 0.5)
    assert split[(EVIDENCE_IN_PROMPT, "evidence not in prompt")] == (2, 0.0, 0.0)
