"""The RAG methods on a scripted model and a scripted retriever: exact queries, fused lists,
kept passages, accumulated contexts, generated passages that are never evidence, the cache,
and the bad inputs."""

from __future__ import annotations

import math

import pytest

from biorag.augment.run import GENERATED, Augmenter, MethodCache
from biorag.errors import ConfigError
from biorag.models.base import LoglikelihoodResult
from biorag.retrieval.spec import RetrieverConfig
from biorag.types import CellRecord, Chunk, Example, Hit

DOCS = {f"d{i}": f"passage {i} about {'ataxia' if i % 2 else 'anaemia'}" for i in range(12)}


class Scripted:
    """Writes a scripted text per method; says a passage is relevant when it names ataxia."""

    name, info = "scripted", {}

    def __init__(self):
        self.generated: list[str] = []
        self.scored = 0

    def generate(self, prompts, **kw):
        self.generated += prompts
        out = []
        for p in prompts:
            if "hypothetical" in p or "medical textbook that answers" in p:
                out.append("Ataxia is a lack of coordination.")
            elif "search queries" in p:
                out.append("1. ataxia gait\n2. coordination loss\n- ataxia gait")
            elif "follow-up" in p:
                out.append("What causes ataxia?\nIs it hereditary?")
            elif "background passage" in p:
                out.append(f"Background {p.split('background passage ')[1][:1]}.")
            else:
                out.append("It needs neurology.")
        return out

    def loglikelihood(self, requests):
        self.scored += len(requests)
        return [LoglikelihoodResult(-0.1 if (cont.strip() == "yes") == ("ataxia" in ctx.split("Passage:")[1])
                                    else -4.0, 1, 3, True) for ctx, cont in requests]

    def render_chat(self, messages, add_generation_prompt=True):
        return messages[-1]["content"] + "\n"

    def count_tokens(self, text):
        return len(text.split())


class Spy:
    """A retriever over DOCS: a query's hits are the documents sharing its words, in order."""

    def __init__(self):
        self.queries: list[str] = []
        self.index = list(DOCS)

    def retrieve_batch(self, queries, k):
        self.queries += queries
        out = []
        for q in queries:
            words = set(q.lower().replace(".", "").replace("?", "").split())
            ranked = sorted(DOCS, key=lambda d: (-len(words & set(DOCS[d].split())), d))[:k]
            out.append([Hit(Chunk(f"{d}#0", d, DOCS[d]), 1.0 / (r + 1), r + 1) for r, d in enumerate(ranked)])
        return out


EXAMPLE = Example("q1", "t", "Which term means poor coordination?", "B", options=("Anaemia", "Ataxia"),
                  evidence=("d1",))


def _run(tmp_path, gen=None, **spec):
    gen = gen or Scripted()
    aug = Augmenter(RetrieverConfig(**spec), gen, "scripted:x:none", MethodCache(tmp_path / "m.jsonl"))
    spy = Spy()
    ctx, = aug.contexts([EXAMPLE], [EXAMPLE.input], spy, 3)
    return ctx, spy, gen


def test_hyde_searches_with_the_passage_the_model_wrote(tmp_path):
    ctx, spy, _ = _run(tmp_path, rewrite="hyde")
    assert spy.queries == ["Ataxia is a lack of coordination."]
    assert ctx.queries == ("Ataxia is a lack of coordination.",)
    assert ctx.calls == 1 and ctx.tokens > 0


def test_multi_fuses_the_question_and_each_reformulation_by_rrf(tmp_path):
    from biorag.retrieval.retrievers import reciprocal_rank_fusion

    ctx, _spy, _ = _run(tmp_path, rewrite="multi", rewrites=2)
    assert ctx.queries == (EXAMPLE.input, "ataxia gait", "coordination loss")
    lists = [[h.chunk.id for h in hits] for hits in Spy().retrieve_batch(list(ctx.queries), 20)]
    expected = [cid for cid, _ in reciprocal_rank_fusion(lists, 60)]
    assert [h.chunk.id for h in ctx.ranked] == expected[: len(ctx.ranked)]
    assert [h.chunk.id for h in ctx.hits] == expected[:3]


def test_the_lm_filter_keeps_exactly_what_the_judge_accepts(tmp_path):
    ctx, _, gen = _run(tmp_path, filter="lm", filter_candidates=6)
    judged = ctx.ranked[:6]
    accepted = [h.chunk.id for h in judged if "ataxia" in h.chunk.text]
    assert [h.chunk.id for h in ctx.hits] == accepted[:3]
    assert ctx.kept == len(accepted) and ctx.candidates == tuple(h.chunk.doc_id for h in judged)
    assert gen.scored == 12  # yes and no for each of the 6 candidates


def test_iterative_rounds_add_the_follow_up_questions_passages(tmp_path):
    ctx, _spy, _ = _run(tmp_path, rounds=2, followups=2)
    assert ctx.queries == (EXAMPLE.input, "What causes ataxia?", "Is it hereditary?")
    ids = [h.chunk.id for h in ctx.hits]
    assert len(ids) == len(set(ids)) and ids[:3] == [h.chunk.id for h in ctx.ranked[:3]]
    assert len(ids) > 3  # the follow-ups found passages the first search did not pack


def test_generated_passages_are_marked_and_never_evidence(tmp_path):
    from biorag.augment.measures import method_scores
    from biorag.retrieval.evidence import doc_ranking

    ctx, _, _ = _run(tmp_path, generate=2)
    assert [h.chunk.id.startswith(GENERATED) for h in ctx.hits] == [False, True, False, True, False]
    assert ctx.generated == ("Background 1.", "Background 2.")
    only, spy, _ = _run(tmp_path / "g", generate=2, retrieve=False)
    assert spy.queries == [] and only.ranked == [] and all(h.chunk.id.startswith(GENERATED) for h in only.hits)
    docs = doc_ranking(only.hits)
    assert not set(docs) & {"d1"} and all(d.startswith(GENERATED) for d in docs)
    rec = CellRecord("q1", "h", tuple(h.chunk.id for h in only.hits), "", (), 1, 0.0, 0.0, ranked=(),
                     prompt_docs=tuple(docs), generated=only.generated)
    found, _ = method_scores([EXAMPLE], [rec])
    assert found["generated_passages"].value == 2.0


def test_a_second_run_asks_the_model_nothing_it_has_asked(tmp_path):
    first, _, _gen = _run(tmp_path, rewrite="hyde", filter="lm", rounds=2, generate=1)
    again, _, gen2 = _run(tmp_path, rewrite="hyde", filter="lm", rounds=2, generate=1)
    assert gen2.generated == [] and gen2.scored == 0
    assert [h.chunk.id for h in again.hits] == [h.chunk.id for h in first.hits]
    assert again.tokens == first.tokens and again.calls == first.calls


def test_filter_measures_read_recall_before_the_filter():
    from biorag.augment.measures import method_scores

    rec = CellRecord("q1", "h", ("d3#0",), "", (), 1, 0.0, 0.0, candidate_docs=("d1", "d3", "d5", "d0"), kept=2)
    found, per = method_scores([EXAMPLE], [rec])
    assert found["filter_kept"].value == 0.5 and per["evidence_before_filter"] == {"q1": 1.0}
    line = CellRecord.from_json(rec.to_json())
    assert line == rec


@pytest.mark.parametrize(("spec", "message"), [
    ({"rewrite": "hide"}, "hyde"),
    ({"rewrite": "multi", "rewrites": 0}, "rewrites must be at least 1"),
    ({"rounds": 0}, "rounds must be at least 1"),
    ({"filter": "cross-encoder"}, "filter_model"),
    ({"retrieve": False}, "generate"),
    ({"retrieve": False, "generate": 2, "filter": "lm"}, "nothing to rewrite, filter"),
])
def test_bad_method_settings_are_messages(spec, message):
    with pytest.raises(ConfigError, match=message):
        RetrieverConfig(**spec)


def test_a_method_asked_of_a_closed_book_arm_is_refused():
    from biorag.experiment.plan import plan_run

    with pytest.raises(ConfigError, match="retriever"):
        plan_run(["arm=base", "model=fake", "task=hpo-term-mcq", "arm.retriever.rewrite=hyde"])


def test_a_plain_rag_arm_keeps_its_fingerprint_and_cache_lines():
    from biorag.experiment.plan import cell_fingerprint, plan_run

    plain = plan_run(["arm=rag", "model=fake", "task=hpo-term-mcq"]).cells[0]
    hyde = plan_run(["arm=rag-hyde", "model=fake", "task=hpo-term-mcq"]).cells[0]
    assert cell_fingerprint(plain, "i", "a") == "5bcaf2a9c85cdee5"  # as before the methods existed
    assert cell_fingerprint(hyde, "i", "a") != cell_fingerprint(plain, "i", "a")
    assert "queries" not in CellRecord("q", "h", (), "", (), 1, 0.0, 0.0).to_json()
    assert math.isfinite(plain.arm.retriever.filter_threshold)


def test_a_filter_model_without_log_likelihoods_says_to_use_a_cross_encoder(tmp_path):
    from biorag.errors import BioragError

    class ChatOnly(Scripted):
        def loglikelihood(self, requests):
            raise BioragError("the server gave no logprobs")

    aug = Augmenter(RetrieverConfig(filter="lm"), Scripted(), "k", MethodCache(tmp_path / "m.jsonl"),
                    filter_generator=ChatOnly(), filter_key="chat")
    with pytest.raises(BioragError, match="filter=cross-encoder"):
        aug.contexts([EXAMPLE], [EXAMPLE.input], Spy(), 3)
