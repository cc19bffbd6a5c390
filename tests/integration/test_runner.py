"""The runner end to end: arms as MLflow child runs, resume, errors, the MLflow server."""

from __future__ import annotations

import json
import math
import socket
import urllib.request
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from biorag.errors import BioragError, ConfigError
from biorag.experiment.plan import plan
from biorag.experiment.runner import run_experiment
from biorag.indexing.build import build_index, load_build_config
from biorag.tasks import load_examples, load_task_config

N = 12
TASK = ["task=hpo-term-mcq", f"task.n={N}", "task.scoring=loglikelihood"]


@pytest.fixture(scope="module")
def task_index(tmp_path_factory) -> Path:
    """A tiny index whose documents are the task items' own definitions, titled by their terms:
    retrieval then finds the answer, so a rag arm can be told from a closed-book one."""
    root = tmp_path_factory.mktemp("ix")
    examples = load_examples(load_task_config("hpo-term-mcq", [f"n={N}"]))
    corpus = root / "defs.jsonl"
    with corpus.open("w") as f:
        for e in examples:
            term = e.options["ABCDEFGHIJ".index(e.gold)]
            f.write(json.dumps({"id": e.evidence[0], "title": term, "text": f"{term}: {e.input}"}) + "\n")
    built = build_index(load_build_config(["corpus=sample", f"corpus.path={corpus}", "name=defs", f"root={root}"]))
    return built.path


def _runs(experiment: str):
    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def _overrides(index: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["arm=base,rag", "model=fake", *TASK, f"arm.retriever.index={index}",
            f"cache_dir={tmp_path / 'cache'}", "experiment=t", *extra]


def test_plan_sweeps_and_keeps_param_names_equal(task_index) -> None:
    from biorag.experiment.plan import cell_params

    _, cells, _ = plan(["arm=base,rag", "model=fake", *TASK, f"arm.retriever.index={task_index}"])
    assert [c.arm.name for c in cells] == ["base", "rag"]
    base, rag = (cell_params(c) for c in cells)
    assert base.keys() == rag.keys()
    assert base["arm.retrieval"] is False and rag["arm.retrieval"] is True
    assert base["arm.retriever.k"] is None and rag["arm.retriever.k"] == 5


def test_fake_model_arms_are_child_runs_with_equal_names(task_index, tmp_path) -> None:
    result = run_experiment(_overrides(task_index, tmp_path))
    assert len(result.cells) == 2
    parents, children = _runs("t")
    assert len(parents) == 1 and len(children) == 2
    names = sorted(r.data.tags["mlflow.runName"] for r in children)
    assert names == ["base/fake/hpo-term-mcq", "rag/fake/hpo-term-mcq"]
    base, rag = sorted(children, key=lambda r: r.data.tags["arm"])
    assert base.data.params.keys() == rag.data.params.keys()
    assert base.data.metrics.keys() == rag.data.metrics.keys()
    for key in ("hpo-term-mcq/accuracy_ll", "hpo-term-mcq/accuracy_ll_ci_low", "hpo-term-mcq/accuracy_ll_ci_high",
                "hpo-term-mcq/examples_per_s", "hpo-term-mcq/tokens_per_s", "hpo-term-mcq/retrieval_latency_ms"):
        assert key in base.data.metrics, key
    assert base.data.tags["model_family"] == "general" and base.data.tags["index_fingerprint"] == "none"
    assert rag.data.tags["index_fingerprint"] != "none"
    # the fake model prefers the option the passages mention: retrieval must help it
    assert rag.data.metrics["hpo-term-mcq/accuracy_ll"] == 1.0
    assert base.data.metrics["hpo-term-mcq/accuracy_ll"] < 0.7
    m = base.data.metrics
    assert m["hpo-term-mcq/accuracy_ll_ci_low"] <= m["hpo-term-mcq/accuracy_ll"] <= m["hpo-term-mcq/accuracy_ll_ci_high"]
    arts = {a.path for a in MlflowClient().list_artifacts(rag.info.run_id)}
    assert {"predictions.json", "predictions.jsonl", "config.yaml", "index_manifest.json"} <= arts
    table = mlflow.load_table("predictions.json", run_ids=[rag.info.run_id])
    assert len(table) == N and set(table["correct"]) == {1.0}
    assert all(table["retrieved"].str.len() > 0)
    # the backend's library versions (`Generator.info`) reach every child run
    for run in (base, rag):
        assert run.data.tags["versions.backend"] == "fake" and run.data.tags["versions.mode"] == "context"


def test_search_settings_of_an_arm_reach_its_index_and_its_params(task_index, tmp_path) -> None:
    from biorag.experiment.plan import cell_params
    from biorag.experiment.resources import cell_retriever

    _, cells, _ = plan(["arm=base,rag", "model=fake", *TASK, f"arm.retriever.index={task_index}",
                        "arm.retriever.ef_search=7", "arm.retriever.nprobe=3"])
    base, rag = cells
    assert rag.arm.retriever.ef_search == 7 and base.arm.retriever is None
    assert cell_retriever(rag).index.config.ef_search == 7 and cell_retriever(rag).index.config.nprobe == 3
    params = cell_params(base), cell_params(rag)
    assert params[0].keys() == params[1].keys()
    assert params[1]["arm.retriever.nprobe"] == 3 and params[0]["arm.retriever.nprobe"] is None
    with pytest.raises(ConfigError, match=r"retriever\.nprobe must be at least 1"):
        plan(["arm=rag", "model=fake", *TASK, f"arm.retriever.index={task_index}", "arm.retriever.nprobe=0"])


def test_same_seed_same_predictions(task_index, tmp_path) -> None:
    outs = []
    for i in range(2):
        result = run_experiment(["arm=rag", "model=fake", *TASK, f"arm.retriever.index={task_index}",
                                 f"cache_dir={tmp_path / str(i)}", f"experiment=s{i}"])
        run_id = result.cells[0].run_id
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="predictions.jsonl")
        outs.append([{k: v for k, v in json.loads(x).items()} for x in Path(path).read_text().splitlines()])
    assert outs[0] == outs[1]


def test_killed_run_resumes_without_duplicate_runs(task_index, tmp_path) -> None:
    from biorag.models.fake import FakeGenerator

    calls = {"n": 0}

    class Killed(Exception):
        pass

    def dying_loader(cfg, adapter):
        gen = FakeGenerator.from_config(cfg, adapter)
        real = gen.loglikelihood

        def ll(requests):
            calls["n"] += 1
            if calls["n"] == 2:  # the second batch of the first cell
                raise Killed
            return real(requests)

        gen.loglikelihood = ll
        return gen

    overrides = _overrides(task_index, tmp_path, "batch_size=4")
    with pytest.raises(Killed):
        run_experiment(overrides, loader=dying_loader)
    resumed = run_experiment(overrides)
    assert resumed.cells[0].resumed == 4  # the first batch came from the cache
    reference = run_experiment(_overrides(task_index, tmp_path / "fresh", "batch_size=4", "experiment=ref"))
    for a, b in zip(resumed.cells, reference.cells, strict=True):
        quality = {k: v for k, v in a.metrics.items() if "accuracy" in k}
        assert quality == {k: v for k, v in b.metrics.items() if "accuracy" in k}
    parents, children = _runs("t")
    assert len(parents) == 1 and len(children) == 2, "no duplicate or dangling runs"
    assert all(r.info.status == "FINISHED" for r in [*parents, *children])


def test_unknown_names_list_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'rag'"):
        plan(["arm=rga"])
    with pytest.raises(ConfigError, match="hpo-term-mcq"):
        plan(["task=hpo-term"])


def test_missing_index_says_how_to_build_it(tmp_path) -> None:
    with pytest.raises(BioragError, match="biorag index build"):
        run_experiment(["arm=rag", "model=fake", *TASK, "arm.retriever.index=nope",
                        "arm.retriever.build_if_missing=false", f"cache_dir={tmp_path}"])


def test_unwritable_store_fails_before_any_model_loads(tmp_path, monkeypatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")  # no one, root included, can create a folder under a file
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{blocker / 'sub' / 'mlflow.db'}")
    loaded = []
    with pytest.raises(BioragError, match="not writable"):
        run_experiment(["arm=base", "model=fake", *TASK], loader=lambda c, a: loaded.append(c))
    assert not loaded


def test_unreachable_server_fails_before_any_model_loads(monkeypatch) -> None:
    port = _free_port()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    loaded = []
    with pytest.raises(BioragError, match="unreachable"):
        run_experiment(["arm=base", "model=fake", *TASK], loader=lambda c, a: loaded.append(c))
    assert not loaded


def test_tiny_random_hf_model_end_to_end(task_index, tmp_path) -> None:
    from tests.helpers.tiny_model import build_tiny_model

    model_dir = build_tiny_model(tmp_path / "tiny")
    result = run_experiment([
        "arm=base,rag", "model=smollm2", f"model.id={model_dir}", "model.source=hub", "model.gguf_file=null",
        "model.max_length=512", *TASK, "task.scoring=both", f"arm.retriever.index={task_index}",
        "arm.retriever.k=2", f"cache_dir={tmp_path / 'c'}", "experiment=tiny",
    ])
    _parents, children = _runs("tiny")
    assert len(children) == 2
    import torch
    import transformers

    for r in children:
        assert 0.0 <= r.data.metrics["hpo-term-mcq/accuracy_ll"] <= 1.0
        assert "hpo-term-mcq/accuracy" in r.data.metrics  # the generated answers, parsed
        assert r.data.params["model.id"] == str(model_dir)
        # the backend's library versions reach MLflow (they were silently dropped before)
        tags = r.data.tags
        assert tags["versions.backend"] == "hf" and tags["versions.transformers"] == transformers.__version__
        assert tags["versions.torch"] == torch.__version__ and tags["versions.dtype"] == "float32"
    assert {c.n for c in result.cells} == {N}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlflow_server_serves_the_runs_over_rest(task_index, tmp_path) -> None:
    import os

    from biorag.tracking.ui import start_ui

    run_experiment(_overrides(task_index, tmp_path))
    with start_ui(os.environ["MLFLOW_TRACKING_URI"], port=_free_port()) as server:  # what `biorag ui` runs
        base = server.url
        assert base.startswith("http://127.0.0.1:")
        req = urllib.request.Request(
            f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=t")
        exp = json.load(urllib.request.urlopen(req, timeout=10))["experiment"]
        body = json.dumps({"experiment_ids": [exp["experiment_id"]], "max_results": 100}).encode()
        req = urllib.request.Request(f"{base}/api/2.0/mlflow/runs/search", data=body,
                                     headers={"Content-Type": "application/json"})
        runs = json.load(urllib.request.urlopen(req, timeout=10))["runs"]
        names = sorted(r["info"]["run_name"] for r in runs)
        assert "base/fake/hpo-term-mcq" in names and "rag/fake/hpo-term-mcq" in names
        assert server.runs_url() == f"{base}/#/experiments/{exp['experiment_id']}/runs"
    assert server.process.poll() is not None, "the server stops with the context"


def _artifact(run_id: str, name: str) -> str:
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=name)).read_text()


def test_rag_cells_log_retrieval_measures_trec_files_and_reuse_retrieval(task_index, tmp_path) -> None:
    """Every item's own definition is in the index: the retriever finds it first. The second
    cell (another scoring, so other predictions) of the same retriever searches nothing."""
    run_experiment(_overrides(task_index, tmp_path))
    _, children = _runs("t")
    base, rag = sorted(children, key=lambda r: r.data.tags["arm"])
    m = rag.data.metrics
    for key in ("retrieval_recall_at_1", "retrieval_recall_at_5", "retrieval_ndcg_at_10",
                "retrieval_mrr_at_10", "retrieval_evidence_in_prompt", "leak_source_in_index"):
        assert m[f"hpo-term-mcq/{key}"] == 1.0, key
        assert math.isnan(base.data.metrics[f"hpo-term-mcq/{key}"]), key  # same names, NaN closed-book
    run = _artifact(rag.info.run_id, "run.trec").splitlines()
    qrels = _artifact(rag.info.run_id, "qrels.trec").splitlines()
    assert len(qrels) == N and all(len(x.split()) == 4 for x in qrels)
    first = {x.split()[0]: x.split()[2] for x in run if x.split()[3] == "1"}
    gold = {x.split()[0]: x.split()[2] for x in qrels}
    assert first == gold  # rank 1 is the gold document for every item
    assert rag.data.tags["retrieval_cache"] == f"0 reused, {N} searched"
    rows = [json.loads(x) for x in _artifact(rag.info.run_id, "predictions.jsonl").splitlines()]
    assert all(r["scores"]["retrieval_evidence_in_prompt"] == 1.0 for r in rows)

    again = run_experiment(["arm=rag", "model=fake", "task=hpo-term-mcq", f"task.n={N}", "task.scoring=both",
                            f"arm.retriever.index={task_index}", f"cache_dir={tmp_path / 'cache'}", "experiment=t2"])
    second = MlflowClient().get_run(again.cells[0].run_id)
    assert second.data.tags["retrieval_cache"] == f"{N} reused, 0 searched"
    assert second.data.metrics["hpo-term-mcq/retrieval_recall_at_1"] == 1.0


def test_evidence_cut_by_the_token_budget_is_not_in_the_prompt(task_index, tmp_path) -> None:
    """With room for no passage, the gold document is retrieved (recall 1) but not in the prompt."""
    result = run_experiment(["arm=rag", "model=fake", *TASK, f"arm.retriever.index={task_index}",
                             "task.context_tokens=1", f"cache_dir={tmp_path / 'c'}", "experiment=cut"])
    m = result.cells[0].metrics
    assert m["hpo-term-mcq/retrieval_recall_at_1"] == 1.0
    assert m["hpo-term-mcq/retrieval_evidence_in_prompt"] == 0.0


def test_rag_noleak_never_retrieves_an_items_own_source(task_index, tmp_path) -> None:
    result = run_experiment(["arm=rag,rag-noleak", "model=fake", *TASK, f"arm.retriever.index={task_index}",
                             f"cache_dir={tmp_path / 'c'}", "experiment=noleak"])
    rag, noleak = result.cells
    examples = {e.id: e for e in load_examples(load_task_config("hpo-term-mcq", [f"n={N}"]))}
    rows = [json.loads(x) for x in _artifact(noleak.run_id, "predictions.jsonl").splitlines()]
    index_docs = {row["retrieved"][0].split("#")[0] for row in rows}
    assert len(index_docs) > 1
    for row in rows:
        own = set(examples[row["example_id"]].source_docs)
        assert own and not own & {cid.split("#")[0] for cid in row["retrieved"]}
        assert len(row["retrieved"]) == 5  # k filled from the rest
    assert noleak.metrics["hpo-term-mcq/retrieval_evidence_in_prompt"] == 0.0
    assert noleak.metrics["hpo-term-mcq/leak_source_in_index"] == 1.0
    assert rag.metrics["hpo-term-mcq/accuracy_ll"] > noleak.metrics["hpo-term-mcq/accuracy_ll"]


def test_retrieval_eval_compares_modes_without_a_model(task_index, tmp_path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from biorag.cli import app
    from biorag.experiment.retrieval_eval import evaluate_retrieval

    monkeypatch.setenv("BIORAG_CACHE_DIR", str(tmp_path / "cache"))
    rows = evaluate_retrieval([f"index={task_index}", *TASK], ["dense", "bm25", "hybrid"], [1, 3])
    assert [r.mode for r in rows] == ["dense", "bm25", "hybrid"]
    for r in rows:
        assert r.judged == r.queries == N and r.run_id
        assert set(r.metrics) >= {"retrieval_recall_at_1", "retrieval_recall_at_3", "retrieval_ndcg_at_10",
                                  "retrieval_evidence_in_prompt"}
        assert r.metrics["retrieval_recall_at_3"].value == 1.0  # each item's definition is in the index
    runs = MlflowClient().search_runs([MlflowClient().get_experiment_by_name("biorag-retrieval-eval").experiment_id])
    assert len([r for r in runs if "mlflow.parentRunId" in r.data.tags]) == 3
    # the rag cell of the dense retriever reuses the eval's retrieval
    cell = run_experiment(["arm=rag", "model=fake", *TASK, f"arm.retriever.index={task_index}", "experiment=after"])
    assert MlflowClient().get_run(cell.cells[0].run_id).data.tags["retrieval_cache"] == f"{N} reused, 0 searched"
    out = CliRunner().invoke(app, ["retrieval", "eval", f"index={task_index}", *TASK, "--mode", "bm25,dense",
                                   "--k", "1,5", "--no-log"], env={"COLUMNS": "250"})
    assert out.exit_code == 0, out.output
    assert "R@5" in out.output and "nDCG@10" in out.output and "(cached)" in out.output
    bad = CliRunner().invoke(app, ["retrieval", "eval", f"index={task_index}", *TASK, "--mode", "sparse"])
    assert bad.exit_code != 0 and "dense, bm25, hybrid" in str(bad.exception)


def test_bioasq_cells_score_officially_and_measure_retrieval_of_their_pmids(tmp_path) -> None:
    """BioASQ yes/no and factoid through base and rag over a PubMed-layout corpus keyed by
    PMID: the questions' documents are found (recall), the factoid measures are logged under
    the same names in both arms, and the report heads the factoid table with MRR."""
    from biorag.report.compare import build_report, check
    from biorag.report.study import read_study

    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "tasks" / "bioasq" / "training.json"
    corpus = tmp_path / "pubmed.jsonl"
    snippets: dict[str, str] = {}  # an abstract: its snippets
    for q in json.loads(fixture.read_text())["questions"]:
        for s in q["snippets"]:
            pmid = s["document"].rsplit("/", 1)[1]
            snippets[pmid] = f"{snippets.get(pmid, '')} {s['text']}".strip()
    with corpus.open("w") as f:
        for i, (pmid, text) in enumerate(sorted(snippets.items())):
            f.write(json.dumps({"id": f"PMID_{i}", "title": text.split()[0], "content": text,
                                "contents": text, "PMID": pmid}) + "\n")
    built = build_index(load_build_config(["corpus=pubmed", "corpus.loader=jsonl", f"corpus.path={corpus}",
                                           "name=bioasq-pubmed", f"root={tmp_path / 'ix'}"]))
    result = run_experiment(["arm=base,rag", "model=fake", "task=bioasq-yesno,bioasq-factoid",
                             f"task.path={fixture}", f"arm.retriever.index={built.path}", "arm.retriever.mode=bm25",
                             f"cache_dir={tmp_path / 'cache'}", "experiment=bioasq"])
    by = {(c.arm, c.task): c.logged for c in result.cells}  # as MLflow has them: the same names
    rag, base = by[("rag", "bioasq-factoid")], by[("base", "bioasq-factoid")]
    assert {"bioasq-factoid/factoid_mrr", "bioasq-factoid/factoid_strict_acc",
            "bioasq-factoid/factoid_lenient_acc"} <= rag.keys() == base.keys()
    assert rag["bioasq-factoid/retrieval_recall_at_10"] == pytest.approx(0.75)  # 10000005 is not in the corpus
    assert by[("rag", "bioasq-yesno")]["bioasq-yesno/retrieval_recall_at_1"] == 1.0
    assert math.isnan(base["bioasq-factoid/retrieval_recall_at_10"])
    study = read_study(result.parent_run_id)
    assert not [p for c in study.cells for p in check(c)]  # logged = recomputed from predictions
    report = build_report(study)
    assert report.headline["bioasq-factoid"] == "factoid_mrr"
    # the task lists [accuracy, macro_f1] and scores both ways: its own first metric heads it
    assert report.headline["bioasq-yesno"] == "accuracy"


def test_protocols_are_cells_of_their_own_with_parse_measures(task_index, tmp_path) -> None:
    """Two protocols of one task are two cells (own fingerprint, no cache reuse); a generated
    cell logs its unparsed rate, truncated outputs and generated tokens; the report pairs
    the protocols on the same items and recomputes to the logged numbers."""
    from biorag.experiment.plan import cell_fingerprint
    from biorag.report.compare import build_report
    from biorag.report.protocol_effects import verdict as verdict_of
    from biorag.report.study import read_study

    _, cells, _ = plan(["model=fake", "task=hpo-term-mcq", f"task.n={N}", "task.protocol=loglikelihood,cot"])
    assert [c.task.protocol for c in cells] == ["loglikelihood", "cot"]
    assert len({cell_fingerprint(c, "none", "none") for c in cells}) == 2
    result = run_experiment(["arm=base,rag", "model=fake", "model.options.mode=context", "task=hpo-term-mcq",
                             f"task.n={N}", "task.protocol=loglikelihood,cot", f"arm.retriever.index={task_index}",
                             f"cache_dir={tmp_path / 'c'}", "experiment=protocols"])
    assert sorted(c.name for c in result.cells) == ["base/fake/hpo-term-mcq@cot", "base/fake/hpo-term-mcq@loglikelihood",
                                                    "rag/fake/hpo-term-mcq@cot", "rag/fake/hpo-term-mcq@loglikelihood"]
    assert all(c.resumed == 0 for c in result.cells)  # no prediction of one protocol reused by the other
    cot = next(c for c in result.cells if c.name == "rag/fake/hpo-term-mcq@cot")
    assert cot.metrics["hpo-term-mcq/unparsed_rate"] == 0.0 and cot.metrics["hpo-term-mcq/truncated_outputs"] == 0.0
    assert cot.metrics["hpo-term-mcq/generated_tokens"] == 1.0  # the fake answers with one letter
    assert MlflowClient().get_run(cot.run_id).data.params["task.protocol"] == "cot"
    study = read_study(result.parent_run_id)
    report = build_report(study)
    assert report.headline == {"hpo-term-mcq@loglikelihood": "accuracy_ll_norm", "hpo-term-mcq@cot": "accuracy"}
    by = {(c.arm, c.protocol): c for c in study.cells}
    for d in report.protocol_deltas:  # recomputed from predictions.jsonl
        r, t = by[d.arm, "loglikelihood"].scores("accuracy_ll_norm"), by[d.arm, "cot"].scores("accuracy")
        assert d.n == N and d.delta == pytest.approx(sum(t.values()) / N - sum(r.values()) / N)
    assert len(report.protocol_deltas) == 2
    [verdict] = report.verdicts
    assert set(verdict.by_protocol) == {"loglikelihood", "cot"} and verdict.treatment == "rag/fake"
    headline = {d.protocol: d for d in report.deltas if d.headline}
    assert verdict.by_protocol == {p: verdict_of(d.delta, d.p) for p, d in headline.items()}
    assert verdict.agree == (len(set(verdict.by_protocol.values())) == 1)


def test_an_answer_that_never_parses_is_wrong_never_a_guess(tmp_path) -> None:
    result = run_experiment(["model=fake", "model.options.answer=I cannot tell.", "task=hpo-term-mcq", f"task.n={N}",
                             "task.protocol=cot", f"cache_dir={tmp_path / 'c'}", "experiment=unparsed"])
    m = result.cells[0].metrics
    assert m["hpo-term-mcq/unparsed_rate"] == 1.0 and m["hpo-term-mcq/accuracy"] == 0.0
    long = run_experiment(["model=fake", "model.options.answer=" + "thinking " * 600, "task=hpo-term-mcq",
                           f"task.n={N}", "task.protocol=cot", f"cache_dir={tmp_path / 'c'}", "experiment=long"])
    m = long.cells[0].metrics
    assert m["hpo-term-mcq/truncated_outputs"] == 1.0 and m["hpo-term-mcq/generated_tokens"] == 512
    from biorag.report.compare import build_report
    from biorag.report.study import read_study

    report = build_report(read_study(result.parent_run_id))
    assert report.warnings and "100.0% of the outputs" in report.warnings[0]


def test_a_study_runs_each_multiple_choice_task_under_each_protocol() -> None:
    _, cells, _ = plan(["study=dorfner2024"])
    got = {(c.task.name, c.task.protocol) for c in cells}
    assert {("nejm-case-challenge", "loglikelihood"), ("nejm-case-challenge", "cot"),
            ("longhealth", "cot"), ("meqsum", "task"), ("mednli", "task")} <= got
    assert ("meqsum", "cot") not in got and ("medisumqa", "task") in got
    assert len(cells) == 8 * (3 * 2 + 5)  # 8 models; 3 multiple-choice tasks, 5 others
    with pytest.raises(ConfigError, match="not summarisation"):
        plan(["task=meqsum", "task.protocol=cot"])  # asked for by name: an error, not a skip


def test_self_consistency_keeps_the_majority_of_seeded_samples(tmp_path) -> None:
    from biorag.scoring.metrics import parse_output

    over = ["model=fake", "model.options.mode=context", "task=hpo-term-mcq", f"task.n={N}", "task.protocol=cot",
            "task.samples=5", "task.temperature=1.0", f"cache_dir={tmp_path / 'c'}", "experiment=sc"]
    result = run_experiment(over)
    cell = result.cells[0]
    run = MlflowClient().get_run(cell.run_id)
    assert run.data.tags["decoding"] == "sampled at temperature 1.0, 5 sample(s) with seeds 0..4, majority vote"
    assert run.data.params["task.samples"] == "5"
    [cache] = (tmp_path / "c" / "predictions").glob("*.jsonl")
    records = [json.loads(x) for x in cache.read_text().splitlines()]
    options = {e.id: e.options for e in load_examples(load_task_config("hpo-term-mcq", [f"n={N}"]))}
    differ = 0
    for r in records:
        votes = [parse_output("letter", s, options[r["id"]], "final_line") for s in r["samples"]]
        assert len(votes) == 5
        top = max(votes, key=votes.count)
        assert votes.count(parse_output("letter", r["output"], options[r["id"]], "final_line")) == votes.count(top)
        differ += len(set(votes)) > 1
    assert differ > 0  # the samples are not all alike: they were sampled
    again = run_experiment([*over[:-1], "experiment=sc2"])  # same seeds: the same cell, cached
    assert again.cells[0].resumed == N
    assert again.cells[0].metrics["hpo-term-mcq/accuracy"] == cell.metrics["hpo-term-mcq/accuracy"]
    with pytest.raises(ConfigError, match="temperature above 0"):
        plan(["model=fake", "task=hpo-term-mcq", "task.protocol=cot", "task.samples=3"])


def test_predictions_show_items_answers_and_passages(task_index, tmp_path) -> None:
    from typer.testing import CliRunner

    from biorag.cli import app
    from biorag.report.predictions import cell_items

    result = run_experiment(["arm=base,rag", "model=fake", "model.options.mode=context", *TASK,
                             f"arm.retriever.index={task_index}", f"cache_dir={tmp_path / 'c'}"])
    base, rag = result.cells
    # Python gets what a cell measured: no NaN retrieval measures for the closed-book cell,
    # while MLflow logs the same names in every arm
    assert not any("retrieval_recall" in k for k in base.metrics)
    assert any("retrieval_recall" in k for k in base.logged) and len(base.logged) == len(rag.logged)
    assert "hpo-term-mcq/retrieval_recall_at_1" in rag.metrics

    every = cell_items("rag/fake/hpo-term-mcq")
    assert every.n_total == N == len(every.items) and every.metric == "accuracy_ll_norm"
    item = every.items[0]
    assert item.input and len(item.options) == 5 and item.gold in "ABCDE"
    assert len(item.passages) == 5 and all(p.text for p in item.passages)
    assert item.passages[0].text.startswith(tuple(item.options))  # the index's own "term: definition"
    wrong = cell_items("rag/fake/hpo-term-mcq", wrong=True)
    assert [i.id for i in wrong.items] == [i.id for i in every.items if i.correct < 1]
    found = cell_items("rag/fake/hpo-term-mcq", stratum="evidence").items
    assert found and all(i.scores["retrieval_evidence_in_prompt"] == 1 for i in found)
    with pytest.raises(BioragError, match="strata are for rag cells"):
        cell_items("base/fake/hpo-term-mcq", stratum="evidence")
    with pytest.raises(BioragError, match="Did you mean 'rag/fake/hpo-term-mcq'"):
        cell_items("rag/fake/hpo-term-mc")

    out = CliRunner().invoke(app, ["predictions", "show", rag.run_id, "--json"])
    assert out.exit_code == 0, out.output
    shown = json.loads(out.stdout)
    assert shown["cell"] == "rag/fake/hpo-term-mcq" and len(shown["items"]) == N
    text = CliRunner().invoke(app, ["predictions", "show", "rag/fake/hpo-term-mcq", "--wrong", "-n", "1"])
    assert text.exit_code == 0 and "passage 1 [" in text.stdout and "gold: " in text.stdout


def test_run_and_validate_print_their_tables_as_csv_and_json(tmp_path) -> None:
    import csv
    import io

    from typer.testing import CliRunner

    from biorag.cli import app

    over = ["arm=base", "model=fake", "task=hpo-term-mcq", "task.n=2", "task.scoring=loglikelihood",
            f"cache_dir={tmp_path}"]
    run = CliRunner().invoke(app, ["experiment", "run", "--format", "csv", *over])
    assert run.exit_code == 0, run.output
    assert run.stdout.startswith("# results (95% bootstrap CI)\n")  # the table alone on stdout
    rows = list(csv.reader(io.StringIO(run.stdout.split("\n", 1)[1])))
    assert rows[0] == ["arm", "model", "hpo-term-mcq\naccuracy_ll_norm"] and rows[1][0] == "base (baseline)"
    assert "MLflow experiment" in run.stderr
    bad = CliRunner().invoke(app, ["experiment", "validate", "-f", "json", "arm=rag", "model=fake",
                                   "task=hpo-term-mcq", "arm.retriever.index=nosuch",
                                   "arm.retriever.build_if_missing=false"])
    assert bad.exit_code == 1
    plan_table, problems = json.loads(bad.stdout)
    assert plan_table["rows"][0]["retrieval"] == "dense k=5 from nosuch"
    assert problems["rows"][0]["what"] == "index" and "nosuch" in problems["rows"][0]["why"]
