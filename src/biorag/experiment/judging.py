"""The judging stage of a run: after every cell has predicted, each judge is loaded once and
grades the cells it is set on; their metrics, verdicts and cost go into the cells' own child
runs. A cell's judges are never part of its fingerprint, so a judge added to a finished study
(the same command with `judges=[...]`) judges its cached predictions into the same runs.

Metric names, as `<task>/<key>`: with one judge, its scores (`rubric_score`, `scale_accuracy`,
`answer_supported`, ...) under their own names; with a jury, the jury's verdict there and each
judge's as `<key>.<judge>`, with the jury's agreement (`judge_alpha_binary`,
`judge_alpha_scale`). The judge's cost: `judge_tokens_in`, `judge_tokens_out`, `judge_seconds`,
`judge_requests`, `judge_questions`; `judge_unparsed_rate` counts verdicts that could not be
read (generated verdicts only; they are missing, never scored).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from biorag import progress
from biorag.experiment.arms import RunConfig, cell_judges
from biorag.experiment.cache import cache_root
from biorag.judges.checks import check_tag
from biorag.judges.config import JudgeConfig, load_judge_config
from biorag.judges.methods import Answer, chosen_answer, read_rubric
from biorag.judges.run import (
    COST_KEYS,
    Judged,
    JudgementCache,
    binary_table,
    cache_file,
    item_metrics,
    judge_answers,
    judge_identity,
    jury,
)
from biorag.models.config import ModelConfig
from biorag.tracking import keys
from biorag.types import CellRecord, Example, Prediction, answer_text, titled

log = logging.getLogger(__name__)

VERDICTS_FILE = "judgements.json"


@dataclass
class PendingJudgement:
    """What a predicted cell keeps for its judges."""

    cfg: RunConfig
    answers: list[Answer]
    predictions: list[Prediction]
    methods: list[str]
    judged: dict[str, Judged] = field(default_factory=dict)


def _chunk_text(index: Any, chunk_ids: Sequence[str]) -> list[str]:
    """The texts of chunk ids, from an index or the first member of a fused set holding each."""
    members = getattr(index, "members", [index])
    out: dict[str, str] = {}
    for ix in members:
        for cid, row in ix.found_rows([c for c in chunk_ids if c not in out]).items():
            c = ix.chunk(row)
            out[cid] = titled(c.title, c.text)
    return [out[c] for c in chunk_ids if c in out]


def cell_answers(cfg: RunConfig, examples: Sequence[Example], predictions: Sequence[Prediction],
                 records: Sequence[CellRecord], retriever: Any) -> list[Answer]:
    """What the judges see of each item: its input, the answer (free text, or the chosen
    option as one claim), the reference, the passages of its prompt, its rubric."""
    task = cfg.task
    free = task.answer_type == "text" or task.protocol == "cot"
    out = []
    for ex, p, r in zip(examples, predictions, records, strict=True):
        if free and p.output.strip():
            said, whole = p.output.strip(), True
        else:
            said, whole = chosen_answer(p.parsed, ex.options), False
        passages = tuple(_chunk_text(retriever.index, r.retrieved)) if retriever is not None else None
        out.append(Answer(
            ex.id, ex.input, said, answer_text(ex.gold) if task.answer_type == "text" else "", passages, whole,
            read_rubric(ex.metadata.get("rubrics"), ex.source or task.name), tuple(ex.metadata.get("tags") or ()),
        ))
    return out


def cell_methods(cfg: RunConfig, answers: Sequence[Answer]) -> list[str]:
    if cfg.task.judge_methods:
        return list(cfg.task.judge_methods)
    methods = ["rubric"] if any(a.rubric for a in answers) else []
    if any(a.reference for a in answers):
        methods.append("scale")
    return [*methods, "support"]


def pending(cfg: RunConfig, examples: Sequence[Example], predictions: Sequence[Prediction],
            records: Sequence[CellRecord], retriever: Any) -> PendingJudgement | None:
    """A cell's judging input, or None for a cell no judge is set on."""
    if not cell_judges(cfg):
        return None
    answers = cell_answers(cfg, examples, predictions, records, retriever)
    return PendingJudgement(cfg, answers, list(predictions), cell_methods(cfg, answers))


def judge_model(judge: JudgeConfig) -> ModelConfig:
    from biorag.models.loading import load_model_config

    return load_model_config(judge.model)


def judge_all(cells: Sequence[PendingJudgement], models: Any) -> dict[str, JudgeConfig]:
    """Every judge over the cells it is set on, each judge's model loaded once."""
    configs = {name: load_judge_config(name) for c in cells for name in cell_judges(c.cfg)}
    for name, judge in configs.items():
        mine = [c for c in cells if name in cell_judges(c.cfg)]
        model_cfg = judge_model(judge)
        generator = models.get(model_cfg, None)
        identity = judge_identity(judge, model_cfg.__dict__)
        total = sum(len(c.answers) for c in mine)
        log.info("judge %s (%s, verdicts by %s): %d cells, %d answers", name, model_cfg.name, judge.verdict,
                 len(mine), total)
        with progress.bar(f"judge {name}", total) as bar:
            for c in mine:
                cache = JudgementCache(cache_file(cache_root(c.cfg), judge, identity))
                c.judged[name] = judge_answers(judge, generator, c.answers, c.methods, cache, identity,
                                               max_length=model_cfg.max_length, batch_size=c.cfg.batch_size)
                bar.advance(len(c.answers))
                if c.judged[name].asked:
                    log.info("judge %s on %s: %d asked, %d from the cache", name, c.cfg.task.name,
                             c.judged[name].asked, c.judged[name].reused)
    return configs


def judged_metrics(c: PendingJudgement, configs: dict[str, JudgeConfig]) -> tuple[dict[str, float], dict[str, str]]:
    """A judged cell's metrics (`<task>/<key>` with intervals) and tags; per-example scores go
    onto its predictions."""
    task = c.cfg.task.name
    names = cell_judges(c.cfg)
    order = [a.item for a in c.answers]
    seed = c.cfg.seed
    out: dict[str, float] = {}
    tags: dict[str, str] = {"judges": ",".join(configs[n].name for n in names)}

    def put(judged: Judged, suffix: str) -> None:
        for key, m in item_metrics(judged, order, seed).items():
            for k, v in ((key, m.value), (key + keys.CI_LOW, m.lo), (key + keys.CI_HIGH, m.hi)):
                out[keys.metric(task, k + suffix)] = v
        for k in COST_KEYS:
            out[keys.metric(task, k + suffix)] = judged.cost.get(k, 0.0)

    if len(names) == 1:
        head = c.judged[names[0]]
    else:
        head = jury(c.answers, c.methods, [c.judged[n] for n in names], configs[names[0]].scale_axes)
        for n in names:
            put(c.judged[n], f".{configs[n].name}")
        from biorag.judges.agreement import jury_agreement

        table = binary_table([c.judged[n] for n in names])
        for level, pick in (("binary", lambda k: not k.split("\x00", 1)[1].startswith("scale:")),
                            ("scale", lambda k: k.split("\x00", 1)[1].startswith("scale:"))):
            sub = {j: {k: v for k, v in units.items() if pick(k)} for j, units in table.items()}
            if any(sub.values()):
                agreement = jury_agreement(sub, level="nominal" if level == "binary" else "interval")
                out[keys.metric(task, f"judge_alpha_{level}")] = agreement["alpha"]
                tags[f"judge.agreement.{level}"] = json.dumps(
                    {"alpha": agreement["alpha"], "kappa": agreement["kappa"], "bias": agreement["bias"],
                     "n_units": agreement["n_units"]}, default=float)
    put(head, "")
    for n in names:
        name, model = configs[n].name, configs[n].model
        tags[f"judge.{name}.check"] = check_tag(name, cache_root(c.cfg))
        if model == c.cfg.model.name:
            tags[f"judge.{name}.self_preference"] = "this judge's model is the evaluated model"
            log.warning("judge %s grades answers of its own model %s: expect self-preference", name, model)
    for p in c.predictions:
        for k, v in head.items.get(p.example_id, {}).items():
            p.scores[k] = v
    return out, tags


def judge_params(configs: dict[str, JudgeConfig], names: Sequence[str]) -> dict[str, Any]:
    return {f"judge.{configs[n].name}.{k}": v for n in names for k, v in configs[n].params().items()}


def verdicts_artifact(c: PendingJudgement) -> dict[str, Any]:
    return {j.judge: [{"item": v.item, "key": v.key, "value": None if math.isnan(v.value) else v.value,
                      "prob": v.prob} for v in j.verdicts] for j in c.judged.values()}


@dataclass
class JudgePlan:
    """What a run's judges will be asked, counted before anything runs."""

    judge: str
    verdict: str
    cells: int
    questions: int  # rubric criteria and scale axes, known before prediction
    support_answers: int  # answers whose claims are judged for support (one question per claim)
    requests: int  # model requests for the known questions (log-likelihood: one per verdict token)


def plan_judges(cells: Sequence[RunConfig]) -> list[JudgePlan]:
    """Per judge, how many questions it will be asked: rubric criteria and scale axes are
    counted from the items; support asks one question per claim of each rag answer, known
    only once the answers are, so those answers are counted instead."""
    from biorag.judges.verdicts import BINARY, SCALE, choices
    from biorag.tasks import load_examples

    out: dict[str, JudgePlan] = {}
    items: dict[str, Sequence[Example]] = {}
    for cfg in cells:
        for given in cell_judges(cfg):
            judge = load_judge_config(given)
            key = json.dumps([cfg.task.__dict__], sort_keys=True, default=str)
            examples = items.setdefault(key, load_examples(cfg.task))
            fake = [Answer(e.id, e.input, "", answer_text(e.gold) if cfg.task.answer_type == "text" else "",
                           () if cfg.arm.retriever else None, True,
                           read_rubric(e.metadata.get("rubrics"), e.source or cfg.task.name)) for e in examples]
            methods = cell_methods(cfg, fake)
            rubric = sum(len(a.rubric) for a in fake) if "rubric" in methods else 0
            scale = sum(bool(a.reference) for a in fake) * len(judge.scale_axes) if "scale" in methods else 0
            per = (lambda kind: len(choices(kind))) if judge.verdict == "loglikelihood" else (lambda kind: 1)
            p = out.setdefault(judge.name, JudgePlan(judge.name, judge.verdict, 0, 0, 0, 0))
            p.cells += 1
            p.questions += rubric + scale
            p.support_answers += len(fake) if "support" in methods and cfg.arm.retriever else 0
            p.requests += rubric * per(BINARY) + scale * per(SCALE)
    return list(out.values())


def check_judges(cells: Sequence[RunConfig]) -> None:
    """Every judge named exists, and a remote judge's server answers and serves its model:
    asked before any cell runs, so a typo or a dead judge endpoint costs no prediction."""
    from biorag.models.loading import preflight

    names = list(dict.fromkeys(n for c in cells for n in cell_judges(c)))
    preflight([(judge_model(load_judge_config(n)), None) for n in names])
