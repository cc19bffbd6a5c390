"""Tasks: every YAML validates, every format's fixture loads through its task with only the
path changed and scores to known values, bad input is reported, embedded tasks are seeded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from biorag.config import packaged_config_dir
from biorag.errors import ConfigError, InputError
from biorag.models.base import LoglikelihoodResult
from biorag.scoring.evaluate import score_task
from biorag.scoring.metrics import normalise_text
from biorag.tasks import load_examples, load_task_config, task_names
from biorag.tasks.validate import validate_file

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tasks"

# task -> (fixture, ids, golds): each public or licensed format, read through its own task
FIXTURE_TASKS = {
    "medqa": ("medqa.jsonl", ["medqa-1", "medqa-2", "medqa-3"], ["B", "C", "B"]),
    "medmcqa": (
        "medmcqa.jsonl",
        ["a1f0c3e2-0001", "a1f0c3e2-0002", "a1f0c3e2-0003"],
        ["B", "A", "C"],
    ),
    "pubmedqa": ("ori_pqal.json", ["90000001", "90000002", "90000003"], ["A", "B", "C"]),
    "mmlu-medical": (
        "mmlu.jsonl",
        ["anatomy-1", "medical_genetics-2", "clinical_knowledge-4"],
        ["B", "A", "C"],
    ),
    "nejm-case-challenge": (
        "case_challenge.jsonl",
        ["case-001", "case-002", "case-003"],
        ["B", "B", "A"],
    ),
    "jama-clinical-challenge": (
        "case_challenge.jsonl",
        ["case-001", "case-002", "case-003"],
        ["B", "B", "A"],
    ),
    "mednli": (
        "mednli.jsonl",
        ["p-0001", "p-0002", "p-0003", "p-0004"],
        ["entailment", "contradiction", "neutral", "entailment"],
    ),
    "meqsum": ("meqsum.csv", ["1-0001.xml", "1-0002.xml", "1-0003.xml"], None),
    "problem-summary": ("../clue/ProblemSummary/BioNLP2023-1A-Test.csv",
                        ["1001.txt", "1002.txt", "1003.txt", "1004.txt", "1005.txt", "1006.txt"], None),
    "medisumcode": (
        "../clue/MeDiSumCode/MeDiSumCode.json",
        ["20001", "20002", "20003", "20004"],
        [("J189", "J441", "I10"), ("E1010", "E876"), ("N179", "E871", "E860"), ("I214", "E785")],
    ),
    "medisumqa": ("../clue/MeDiSumQA/MeDiSumQA.json",
                  ["10001-DS-21", "10002-DS-7", "10003-DS-3", "10004-DS-12"], None),
    "longhealth": ("longhealth.json", ["patient_01-q1", "patient_01-q2"], ["B", "C"]),
    "mirage-medqa": ("mirage/benchmark.json", ["medqa-0000", "medqa-0001"], ["A", "B"]),
    "mirage-pubmedqa": ("mirage/benchmark.json", ["pubmedqa-10000001", "pubmedqa-10000002"], ["A", "B"]),
    "mirage-bioasq": ("mirage/benchmark.json", ["bioasq-55031181e9bde69634000014"], ["A"]),
    "bioasq-yesno": ("bioasq/training.json", [f"6400a1b2c3d4e5f60100000{i}" for i in (1, 2)], ["A", "B"]),
    "bioasq-factoid": (
        "bioasq/training.json",
        [f"6400a1b2c3d4e5f60100000{i}" for i in (3, 4)],
        [(("atorvastatin", "Lipitor"),), (("CFTR", "cystic fibrosis transmembrane conductance regulator"),)],
    ),
    "bioasq-list": (
        "bioasq/training.json",
        [f"6400a1b2c3d4e5f60100000{i}" for i in (5, 6)],
        [(("idarucizumab", "Praxbind"), ("protamine sulfate", "protamine")),
         (("vitamin A",), ("vitamin D",), ("vitamin E",), ("vitamin K",))],
    ),
    "bioasq-summary": ("bioasq/training.json", [f"6400a1b2c3d4e5f60100000{i}" for i in (7, 8)], None),
}
EMBEDDED = ("hpo-term-mcq", "icd10-code-mcq", "icd10-coding")


def fixture_task(name: str, *overrides: str):
    return load_task_config(name, [f"task.path={FIXTURES / FIXTURE_TASKS[name][0]}", *overrides])


# -- configs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", sorted((packaged_config_dir() / "task").glob("*.yaml")), ids=lambda p: p.stem
)
def test_every_task_yaml_validates(path: Path) -> None:
    first_line = path.read_text().splitlines()[0]
    assert first_line.startswith(f"# biorag task show {path.stem}")
    cfg = load_task_config(path.stem)
    assert cfg.name == path.stem and cfg.description and cfg.template
    if cfg.loader not in EMBEDDED:
        assert cfg.path and cfg.path.startswith("data/"), (
            "file tasks read from a conventional place"
        )
        assert cfg.expected_format.strip(), "user-supplied formats are documented in the YAML"


def test_every_type_and_format_has_a_task() -> None:
    names = set(task_names())
    assert set(FIXTURE_TASKS) | set(EMBEDDED) <= names
    assert {load_task_config(n).type for n in names} == {
        "mcq",
        "nli",
        "summarisation",
        "coding",
        "longdoc",
        "qa",
    }


def test_overrides_unknown_keys_and_unknown_tasks() -> None:
    assert load_task_config("hpo-term-mcq", ["task.n=7", "seed=3"]).n == 7
    with pytest.raises(ConfigError, match="Did you mean 'n'"):
        load_task_config("hpo-term-mcq", ["task.nn=7"])
    with pytest.raises(ConfigError, match="mmlu-medical"):
        load_task_config("mmlu-medica")
    with pytest.raises(ConfigError, match="key=value"):
        load_task_config("medqa", ["task.path"])
    with pytest.raises(ConfigError, match="field"):
        load_examples(fixture_task("medqa", "task.fields.questoin=stem"))
    with pytest.raises(ConfigError, match="scoring mode"):
        load_task_config("medqa", ["scoring=logprob"])
    with pytest.raises(ConfigError, match="generation only"):
        load_task_config("meqsum", ["scoring=both"])
    with pytest.raises(ConfigError, match="scorer"):
        load_task_config("medqa", ["metrics=[acuracy]"])
    with pytest.raises(ConfigError, match="task loader"):
        load_task_config("medqa", ["loader=medq"])


def test_a_task_yaml_of_ones_own(tmp_path: Path) -> None:
    cfg = OmegaConf.load(packaged_config_dir() / "task" / "medqa.yaml")
    cfg.name, cfg.path = "my-medqa", str(FIXTURES / "medqa.jsonl")
    (tmp_path / "my-medqa.yaml").write_text(OmegaConf.to_yaml(cfg))
    assert len(load_examples(load_task_config(str(tmp_path / "my-medqa.yaml")))) == 3


# -- fixtures through their tasks ----------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FIXTURE_TASKS))
def test_fixture_loads_through_its_task_with_only_the_path_changed(name: str) -> None:
    _, ids, golds = FIXTURE_TASKS[name]
    cfg = fixture_task(name)
    examples = load_examples(cfg)
    assert [ex.id for ex in examples] == ids
    if golds is not None:
        assert [ex.gold for ex in examples] == golds
    for ex in examples:
        assert ex.task == name and ex.input and ex.source
        if cfg.type in ("mcq", "longdoc"):
            assert 2 <= len(ex.options) <= 5 and ex.gold in "ABCDE"[: len(ex.options)]


def test_format_details() -> None:
    pub = load_examples(fixture_task("pubmedqa"))
    assert pub[0].options == ("yes", "no", "maybe") and pub[0].documents[0].startswith(
        "BACKGROUND: Readmission"
    )
    assert pub[0].query == pub[0].metadata["question"]  # search with the question, not the abstract
    assert load_examples(fixture_task("pubmedqa", "task.fields.contexts=null"))[0].documents == ()
    case = load_examples(fixture_task("nejm-case-challenge"))
    assert case[0].input.startswith("A 58-year-old woman") and case[0].input.endswith(
        "most likely diagnosis?"
    )
    assert case[1].options[1] == "Lumbar puncture"  # options as a list, answer as option text
    mmlu = load_examples(fixture_task("mmlu-medical"))
    assert all(ex.metadata["subject"] != "astronomy" for ex in mmlu)
    meqsum = load_examples(fixture_task("meqsum"))
    assert meqsum[1].gold == "Is it safe to drink alcohol while taking metformin?"
    longhealth = load_examples(fixture_task("longhealth"))
    assert len(longhealth[0].documents) == 2 and longhealth[0].metadata["patient"] == "patient_01"
    generic = load_examples(fixture_task("longhealth", f"task.path={FIXTURES / 'longdoc.jsonl'}"))
    assert [ex.gold for ex in generic] == ["B", "B"] and len(generic[1].documents) == 2


def test_medmcqa_answer_base_and_unlabelled_rows(tmp_path: Path) -> None:
    rows = [json.loads(line) for line in (FIXTURES / "medmcqa.jsonl").read_text().splitlines()]
    one_based = tmp_path / "train.jsonl"
    one_based.write_text("\n".join(json.dumps({**r, "cop": r["cop"] + 1}) for r in rows))
    cfg = load_task_config("medmcqa", [f"task.path={one_based}", "task.answer_base=1"])
    assert [ex.gold for ex in load_examples(cfg)] == ["B", "A", "C"]
    unlabelled = tmp_path / "test.jsonl"
    unlabelled.write_text(json.dumps({**rows[0], "cop": -1}))
    with pytest.raises(InputError, match="unlabelled"):
        load_examples(load_task_config("medmcqa", [f"task.path={unlabelled}"]))


def test_hub_source_goes_through_datasets_load_dataset(tmp_path: Path) -> None:
    folder = tmp_path / "medmcqa_hub"
    folder.mkdir()
    shutil.copy(FIXTURES / "medmcqa.jsonl", folder / "validation.jsonl")
    cfg = load_task_config(
        "medmcqa", ["task.path=null", f"task.dataset={folder}", "task.split=validation"]
    )
    examples = load_examples(cfg)
    assert [ex.gold for ex in examples] == ["B", "A", "C"]
    assert examples[0].source.startswith(f"hf:{folder}[validation]")


def test_n_keeps_a_seeded_sample_in_file_order() -> None:
    a = load_examples(fixture_task("mednli", "task.n=2"))
    assert len(a) == 2 and [ex.id for ex in a] == [
        ex.id for ex in load_examples(fixture_task("mednli", "task.n=2"))
    ]
    order = [ex.id for ex in load_examples(fixture_task("mednli"))]
    assert [order.index(ex.id) for ex in a] == sorted(order.index(ex.id) for ex in a)


# -- bad input -----------------------------------------------------------------------------


def test_missing_field_names_file_row_and_field() -> None:
    with pytest.raises(InputError) as e:
        load_examples(
            load_task_config("medqa", [f"task.path={FIXTURES / 'bad' / 'medqa_bad.jsonl'}"])
        )
    assert (
        e.value.file.endswith("medqa_bad.jsonl")
        and e.value.line == 2
        and e.value.field == "question"
    )
    assert "4 more problems" in str(e.value)


def test_validate_reports_every_bad_row() -> None:
    report = validate_file(str(FIXTURES / "bad" / "medqa_bad.jsonl"), fmt="medqa")
    assert not report.ok and len(report.examples) == 1
    got = [(p.row, p.field) for p in report.problems]
    assert got == [(2, "question"), (3, "answer_idx"), (4, None), (5, "answer"), (7, "options")]
    assert "'F' is not among the options A–D" in report.problems[1].message
    assert "not valid JSON" in report.problems[2].message


def test_duplicate_ids_missing_options_and_gold_not_among_options() -> None:
    report = validate_file(str(FIXTURES / "bad" / "cases_bad.jsonl"), fmt="mcq")
    assert report.duplicate_ids == 1
    messages = {p.row: (p.field, p.message) for p in report.problems}
    assert messages[2] == ("id", "duplicate id 'c1' (first at row 1)")
    assert messages[3] == ("options", "missing")
    assert "'Enalapril' is not among the options" in messages[4][1]


def test_empty_task_is_an_error() -> None:
    with pytest.raises(InputError, match="empty"):
        load_examples(load_task_config("mednli", [f"task.path={FIXTURES / 'bad' / 'empty.jsonl'}"]))
    assert (
        validate_file(str(FIXTURES / "bad" / "empty.jsonl"), fmt="nli")
        .problems[0]
        .message.startswith("no examples")
    )


def test_validate_through_a_task_and_good_files() -> None:
    assert validate_file(str(FIXTURES / "meqsum.csv"), task="meqsum").ok
    report = validate_file(str(FIXTURES / "meqsum.csv"), fmt="summarisation")
    assert [p.field for p in report.problems] == ["text"] * 3  # the bare format expects `text`
    assert validate_file(
        str(FIXTURES / "meqsum.csv"),
        fmt="summarisation",
        overrides=["fields.text=CHQ", "fields.summary=Summary", "fields.id=File"],
    ).ok
    with pytest.raises(InputError, match="no such file"):
        validate_file("nowhere.jsonl", fmt="mcq")
    with pytest.raises(ConfigError, match="medqa"):
        validate_file(str(FIXTURES / "medqa.jsonl"), fmt="medq")


# -- scoring hand-made predictions ---------------------------------------------------------


def ll(logprob: float, n_chars: int) -> LoglikelihoodResult:
    return LoglikelihoodResult(logprob=logprob, n_tokens=1, n_chars=n_chars, is_greedy=False)


def test_mcq_generated_and_loglikelihood_scores() -> None:
    cfg = fixture_task("medqa")
    examples = load_examples(cfg)  # gold B, C, B
    outputs = ["Answer: B", "The answer is (A)", ""]
    lls = [
        [ll(-2, 2), ll(-1, 2), ll(-3, 2), ll(-4, 2)],  # B either way
        [
            ll(-1, 2),
            ll(-9, 40),
            ll(-8, 30),
            ll(-8, 2),
            ll(-9, 2),
        ],  # A plain, B per character (gold C)
        [ll(-1, 10), ll(-2, 60), ll(-5, 2), ll(-6, 2)],  # A plain, B per character
    ]
    s = score_task(cfg, examples, outputs, lls, seed=0)
    assert s.metrics["accuracy"].value == pytest.approx(1 / 3)
    assert s.metrics["accuracy_ll"].per_example == (1.0, 0.0, 0.0)
    assert s.metrics["accuracy_ll_norm"].per_example == (1.0, 0.0, 1.0)
    p = s.predictions
    assert [x.parsed for x in p] == ["B", "A", None]
    assert p[0].scores == {"accuracy": 1.0, "accuracy_ll": 1.0, "accuracy_ll_norm": 1.0, "unparsed_rate": 0.0}
    assert p[1].option_logprobs == (-1, -9, -8, -8, -9)
    only_ll = score_task(cfg, examples, loglikelihoods=lls)
    assert [x.parsed for x in only_ll.predictions] == [
        "B",
        "A",
        "A",
    ] and "accuracy" not in only_ll.metrics
    with pytest.raises(ValueError):
        score_task(cfg, examples, outputs[:2])


def test_nli_summarisation_coding_and_longdoc_scores() -> None:
    nli = fixture_task("mednli")  # gold entailment, contradiction, neutral, entailment
    s = score_task(nli, load_examples(nli), ["Entailment.", "contradicts", "", "neutral"])
    assert s.metrics["accuracy"].per_example == (1.0, 1.0, 0.0, 0.0)
    # per label F1: entailment 2/3, contradiction 1, neutral 0 -> mean 5/9
    assert s.metrics["macro_f1"].value == pytest.approx(5 / 9)
    nli_ll = score_task(
        nli, load_examples(nli)[:1], loglikelihoods=[[ll(-1, 10), ll(-3, 7), ll(-4, 13)]]
    )
    assert (
        nli_ll.predictions[0].parsed == "entailment" and nli_ll.metrics["accuracy_ll"].value == 1.0
    )

    summ = fixture_task("meqsum")
    ex = load_examples(summ)
    s = score_task(summ, ex, [ex[0].gold, "", "Is a rash on amoxicillin a lifelong allergy?"])
    assert s.metrics["rouge1"].per_example[:2] == (1.0, 0.0)
    assert 0 < s.metrics["rougeL"].per_example[2] < 1
    assert "bertscore" in s.skipped or "bertscore" in s.metrics

    coding = load_task_config("medisumcode", [f"task.path={FIXTURES / 'coding.jsonl'}",  # plain jsonl
                                              "task.fields.id=id", "task.fields.codes=codes"])
    s = score_task(coding, load_examples(coding), ["I50.22, E11.9", "Codes: j45909 I10", "none"])
    assert s.metrics["code_f1"].value == pytest.approx(8 / 9)  # tp 4, fp 0, fn 1
    assert s.metrics["exact_match"].per_example == (1.0, 1.0, 0.0)
    assert s.predictions[1].parsed == ("J45909", "I10")

    longdoc = fixture_task("longhealth")
    s = score_task(longdoc, load_examples(longdoc), ["B", "Peripheral neuropathy"])
    assert s.metrics["accuracy"].value == 1.0


def test_bioasq_factoid_list_and_summary_scores() -> None:
    """BioASQ's official measures on hand-made outputs, worked out by hand."""
    factoid = fixture_task("bioasq-factoid")
    s = score_task(factoid, load_examples(factoid), ["Lipitor\nsimvastatin", "1. ENaC\n2. SCNN1A\n3. cftr."])
    assert s.metrics["factoid_strict_acc"].per_example == (1.0, 0.0)  # a synonym counts
    assert s.metrics["factoid_lenient_acc"].per_example == (1.0, 1.0)
    assert s.metrics["factoid_mrr"].value == pytest.approx((1 + 1 / 3) / 2)
    six = score_task(factoid, load_examples(factoid)[1:], ["a\nb\nc\nd\ne\nCFTR"])
    assert six.metrics["factoid_mrr"].value == 0.0  # only the first five answers count

    lst = fixture_task("bioasq-list")
    s = score_task(lst, load_examples(lst), ["Praxbind\nidarucizumab\nvitamin K", "vitamin A, vitamin D and vitamin K"])
    # q5: idarucizumab named twice (the second is wrong), vitamin K wrong: P 1/3, R 1/2, F1 0.4
    # q6: 3 right of 3 given, 3 of 4 entities: P 1, R 3/4, F1 6/7
    assert s.metrics["list_precision"].per_example == pytest.approx((1 / 3, 1.0))
    assert s.metrics["list_recall"].per_example == pytest.approx((1 / 2, 3 / 4))
    assert s.metrics["list_f1"].value == pytest.approx((0.4 + 6 / 7) / 2)
    assert score_task(lst, load_examples(lst)[:1], [""]).metrics["list_f1"].value == 0.0

    summ = fixture_task("bioasq-summary")
    ex = load_examples(summ)
    s = score_task(summ, ex, [ex[0].gold[1], "nothing relevant"])
    assert s.metrics["rouge1"].per_example[0] == 1.0  # the second ideal answer matches exactly
    assert s.metrics["rouge2"].per_example[1] == 0.0


# -- embedded tasks ------------------------------------------------------------------------


@pytest.mark.parametrize("name", EMBEDDED)
def test_embedded_tasks_are_seeded(name: str) -> None:
    first = load_examples(load_task_config(name, ["task.n=12"]))
    again = load_examples(load_task_config(name, ["task.n=12"]))
    other = load_examples(load_task_config(name, ["task.n=12", "task.seed=1"]))
    assert len(first) == 12
    assert [(e.id, e.input, e.options, e.gold) for e in first] == [
        (e.id, e.input, e.options, e.gold) for e in again
    ]
    assert [(e.input, e.gold) for e in first] != [(e.input, e.gold) for e in other]
    assert len({e.id for e in first}) == 12


def test_hpo_items_choose_a_term_among_its_siblings() -> None:
    from biorag.tasks.generated import hpo_terms

    terms = hpo_terms()
    examples = load_examples(load_task_config("hpo-term-mcq", ["task.n=25"]))
    golds = [e.gold for e in examples]
    assert len(set(golds)) > 1, "the gold letter position is shuffled"
    for ex in examples:
        term = terms[ex.metadata["hpo_id"]]
        assert ex.options["ABCDE".index(ex.gold)] == term.name and ex.input == term.definition
        assert normalise_text(term.name) not in normalise_text(ex.input)
        assert len(set(ex.options)) == 5
        parents = set(term.parents)
        grandparents = {g for p in parents for g in terms[p].parents}
        for d in ex.metadata["distractor_ids"]:
            shared = set(terms[d].parents)
            assert shared & parents or {g for p in shared for g in terms[p].parents} & grandparents


def test_icd10_items_use_a_phrase_that_is_not_the_description() -> None:
    import simple_icd_10_cm as cm

    examples = load_examples(load_task_config("icd10-code-mcq", ["task.n=40"]))
    for ex in examples:
        code = ex.metadata["code"]
        assert normalise_text(ex.input) != normalise_text(cm.get_description(code))
        assert ex.input in cm.get_inclusion_term(code)
        assert ex.options["ABCDE".index(ex.gold)] == f"{code} {cm.get_description(code)}"
        for d in ex.metadata["distractor_codes"]:
            block = next(a for a in cm.get_ancestors(d) if cm.is_block(a))
            assert block == ex.metadata["block"]
            assert not (d.startswith(code) or code.startswith(d))


def test_icd10_coding_golds_are_billable_codes_of_the_phrases() -> None:
    import simple_icd_10_cm as cm

    for ex in load_examples(load_task_config("icd10-coding", ["task.n=20"])):
        assert 1 <= len(ex.gold) <= 3 and len({c[:3] for c in ex.gold}) == len(ex.gold)
        for code, phrase in zip(ex.gold, ex.metadata["phrases"], strict=True):
            assert cm.is_leaf(code) and phrase in cm.get_inclusion_term(code) and phrase in ex.input


# -- command line --------------------------------------------------------------------------


def test_cli_show_and_validate(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from biorag.cli import app
    from biorag.types import Chunk, Hit

    runner = CliRunner()
    r = runner.invoke(app, ["task", "show", "hpo-term-mcq", "-n", "2", "task.n=5"])
    assert r.exit_code == 0, r.output
    assert r.output.count("gold:") == 2 and "Which Human Phenotype Ontology term" in r.output
    r = runner.invoke(
        app, ["task", "show", "medqa", "-n", "1", f"task.path={FIXTURES / 'medqa.jsonl'}"]
    )
    assert r.exit_code == 0 and "gold: B (Levothyroxine)" in r.output and "' A' | ' B'" in r.output

    class FakeRetriever:
        def retrieve(self, query: str, k: int) -> list[Hit]:
            return [
                Hit(
                    Chunk(id=f"c{i}", doc_id="d", text=f"retrieved passage {i} for {query[:20]}"),
                    1.0,
                    i + 1,
                )
                for i in range(k)
            ]

    import biorag.retrieval

    monkeypatch.setattr(biorag.retrieval, "open_retriever", lambda spec, context=None, **kw: FakeRetriever())
    r = runner.invoke(
        app, ["task", "show", "hpo-term-mcq", "-n", "1", "-k", "2", "--with-context", "some-index"]
    )
    assert r.exit_code == 0, r.output
    assert "Relevant passages" in r.output and "passages in prompt: 2 of 2" in r.output

    r = runner.invoke(
        app, ["task", "validate", str(FIXTURES / "bad" / "medqa_bad.jsonl"), "--type", "medqa"]
    )
    assert r.exit_code == 1 and "5 problem(s)" in r.output
    r = runner.invoke(app, ["task", "validate", str(FIXTURES / "mednli.jsonl"), "--type", "nli"])
    assert r.exit_code == 0 and "ok" in r.output


def test_every_task_names_a_registered_loader_and_scorers() -> None:
    from biorag import registry

    for name in task_names():
        cfg = load_task_config(name)
        attr = registry.target("task_loader", cfg.loader).partition(":")[2]
        assert registry.resolve("task_loader", cfg.loader).__name__ == attr, name
        for metric in cfg.metrics:
            info = registry.resolve("scorer", metric).info  # every scorer declares its keys
            assert info.keys, metric
    # an override reaches the config, and a bad one is refused by the task's own checks
    assert load_task_config("medqa", ["n=3"]).n == 3
    with pytest.raises(ConfigError, match="Did you mean 'medqa'"):
        load_task_config("medqa", ["loader=medqaa"])


def test_gold_evidence_of_pubmedqa_and_mirage_items() -> None:
    pubmedqa = load_examples(fixture_task("pubmedqa"))
    assert [e.evidence for e in pubmedqa] == [("90000001",), ("90000002",), ("90000003",)]
    assert all(e.source_docs == e.evidence for e in pubmedqa)  # the abstract the item was made from
    pqa = load_examples(fixture_task("mirage-pubmedqa"))
    assert pqa[0].evidence == ("10000001",) and pqa[0].source_docs == ("10000001",) and not pqa[0].documents
    assert pqa[0].options == ("yes", "no", "maybe")
    bioasq = load_examples(fixture_task("mirage-bioasq"))[0]
    assert bioasq.evidence == ("10000003", "99999999") and bioasq.source_docs == ()  # evidence, not its source
    assert bioasq.options == ("yes", "no")
    medqa = load_examples(fixture_task("mirage-medqa"))
    assert all(e.evidence == () for e in medqa)  # no gold documents: no retrieval measures


def test_bioasq_evidence_snippets_and_phase_b() -> None:
    yesno = load_examples(fixture_task("bioasq-yesno"))
    assert yesno[0].options == ("yes", "no") and yesno[0].evidence == ("10000001",)
    assert yesno[0].source_docs == () and yesno[0].documents == ()  # phase A+: evidence from retrieval
    snippet = yesno[0].metadata["snippets"][0]
    assert snippet == {"document": "10000001", "text": "Low-dose aspirin reduced myocardial infarction in men over 50.",
                       "section": "abstract", "begin": 0, "end": 62}
    factoid = load_examples(fixture_task("bioasq-factoid"))
    assert factoid[1].evidence == ("10000004", "10000005")  # every listed document, in order
    phase_b = load_examples(fixture_task("bioasq-factoid", "task.fields.contexts=snippets"))
    assert phase_b[1].documents == ("Cystic fibrosis is caused by mutations in the CFTR gene.",)
    assert load_examples(fixture_task("bioasq-list"))[1].evidence == ()  # no documents: no measures
    summary = load_examples(fixture_task("bioasq-summary"))
    assert len(summary[0].gold) == 2 and isinstance(summary[1].gold, tuple)  # every ideal answer
    with pytest.raises(ConfigError, match="Did you mean 'factoid'"):
        load_examples(fixture_task("bioasq-factoid", "task.subset=factoids"))
    with pytest.raises(ConfigError, match="yesno questions are a mcq task"):
        load_examples(fixture_task("bioasq-factoid", "task.subset=yesno"))


def test_a_bad_bioasq_file_names_the_question_line_and_field(tmp_path: Path) -> None:
    data = json.loads((FIXTURES / "bioasq" / "training.json").read_text())
    data["questions"][1]["exact_answer"] = "maybe"
    data["questions"][0]["documents"] = ["https://example.org/paper"]
    data["questions"].append({"id": "q-odd", "type": "essay", "body": "?"})
    bad = tmp_path / "training.json"
    bad.write_text(json.dumps(data, indent=2))
    lines = bad.read_text().splitlines()
    with pytest.raises(InputError) as e:
        load_examples(load_task_config("bioasq-yesno", [f"task.path={bad}"]))
    err = e.value
    assert err.field == "documents" and "6400a1b2c3d4e5f601000001 (yesno)" in str(err)
    assert '"6400a1b2c3d4e5f601000001"' in lines[err.line - 1]  # the line of the question's id
    assert "2 more problems" in str(err)
    report = validate_file(str(bad), task="bioasq-yesno")
    got = {p.field: p.message for p in report.problems}
    assert "exact_answer must be 'yes' or 'no', not 'maybe'" in got["exact_answer"]
    assert "'essay' is not one of yesno, factoid, list, summary" in got["type"]
    with pytest.raises(InputError, match="questions"):
        bad.write_text(json.dumps([{"id": 1}]))
        load_examples(load_task_config("bioasq-yesno", [f"task.path={bad}"]))


def test_a_bad_mirage_file_names_the_item_and_field(tmp_path: Path) -> None:
    import json

    from biorag.errors import InputError

    bad = tmp_path / "benchmark.json"
    bad.write_text(json.dumps({"medqa": {"0007": {"question": "q?", "options": {"A": "x", "B": "y"},
                                                  "answer": "E"}}}))
    with pytest.raises(Exception, match=r"0007.*answer 'E'|answer.*0007") as err:
        load_examples(load_task_config("mirage-medqa", [f"task.path={bad}"]))
    assert "answer" in str(err.value)
    with pytest.raises(InputError, match="subset"):
        load_examples(load_task_config("mirage-medqa", [f"task.path={bad}", "task.subset=medqaa"]))


# -- answer protocols ----------------------------------------------------------------------


def test_protocols_set_scoring_template_budget_and_parsing() -> None:
    from biorag.config import to_typed
    from biorag.tasks.config import TaskConfig

    own = load_task_config("medqa")
    cot = load_task_config("medqa", ["task.protocol=cot"])
    assert (cot.scoring, cot.answer_format, cot.max_new_tokens, cot.stop) == ("generate", "final_line", 512, [])
    assert "Final answer: C" in cot.stop_after and cot.template != own.template and own.stop_after == []
    assert load_task_config("medqa", ["task.protocol=cot", "task.max_new_tokens=1024"]).max_new_tokens == 1024
    ll = load_task_config("hpo-term-mcq", ["task.protocol=loglikelihood"])
    assert ll.scoring == "loglikelihood" and ll.template == load_task_config("hpo-term-mcq").template
    assert to_typed(OmegaConf.structured(cot), TaskConfig) == cot  # applying twice changes nothing
    with pytest.raises(ConfigError, match="Did you mean 'cot'"):
        load_task_config("medqa", ["task.protocol=cto"])
    with pytest.raises(ConfigError, match="applies to mcq, longdoc tasks, not summarisation"):
        load_task_config("meqsum", ["task.protocol=cot"])


def test_medrag_protocol_prompt_with_and_without_documents() -> None:
    from biorag.prompting import build_prompt
    from biorag.types import Chunk, Hit

    cfg = load_task_config("hpo-term-mcq", ["task.protocol=medrag", "n=3"])
    ex = load_examples(cfg)[0]
    closed = build_prompt(cfg, ex).messages
    hit = Hit(Chunk(id="d#0", doc_id="d", text="A passage.", title="T"), 1.0, 1)
    rag = build_prompt(cfg, ex, [hit]).messages
    assert closed[0]["role"] == rag[0]["role"] == "system"
    assert "using the relevant documents" in rag[0]["content"] and "using the relevant" not in closed[0]["content"]
    assert rag[1]["content"].startswith("Here are the relevant documents:\n[1] T\nA passage.")
    assert "Which Human Phenotype Ontology term is it?" in closed[1]["content"]  # the task's question
    assert closed[1]["content"].endswith("Please think step-by-step and generate your output in json:")
    assert "A. " in closed[1]["content"] and "E. " in closed[1]["content"]
