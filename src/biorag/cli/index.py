"""`biorag index ...`: build, inspect and search retrieval indexes."""

from __future__ import annotations

import typer
from rich.table import Table

app = typer.Typer(help="Build, inspect and search retrieval indexes.", no_args_is_help=True)

OVERRIDES_HELP = (
    "Config overrides: group=option (corpus=hpo embedder=minilm index=hnsw) and key=value "
    "(name=hpo-minilm corpus.limit=500 chunking.chunk_size=128). See experiments/build.yaml."
)


@app.command("build")
def build(
    overrides: list[str] = typer.Argument(None, help=OVERRIDES_HELP, show_default=False),
    force: bool = typer.Option(
        False, "--force", help="Rebuild even when an identical index exists."
    ),
    show_config: bool = typer.Option(False, "--cfg", help="Print the resolved config and exit."),
    ignore_disk: bool = typer.Option(
        False, "--ignore-disk", help="Build even when the disk estimate is more than is free (check_disk=false)."
    ),
) -> None:
    """Build a FAISS (+ BM25) index over a corpus.

    Streams the corpus, chunks it, embeds the chunks in shards and writes
    indexes/NAME/ (index.faiss, chunks.parquet, bm25/, manifest.json). A killed build
    started again with the same command resumes from its last finished shard; an unchanged
    build is a no-op. With index.on_disk=true (index=ivf or ivfpq) the inverted lists
    (index.ivfdata) and ivfpq's sq8 re-ranking codes (refine.sq8.npy) stay on disk and are
    memory-mapped at search, for corpora larger than RAM. With vectors.path=FOLDER the
    passage vectors are read, not computed: NCBI's MedCPT PubMed embeddings
    (embeds_chunk_N.npy, pmids_chunk_N.json, pubmed_chunk_N.json), X.npy with X.jsonl
    (id, title, text) beside it, or Parquet with a vector column; a sample of rows is
    re-encoded with the embedder and compared first (vectors.verify), and the vectors are
    read where they lie, never copied. The disk the build needs is estimated and printed
    first; a build that does not fit in the free space is refused (--ignore-disk builds anyway).

    Examples: biorag index build corpus=hpo name=hpo-minilm
              biorag index build corpus=icd10cm index=ivfpq index.on_disk=true
              biorag index build corpus=pubmed embedder=medcpt vectors.path=/data/medcpt
                  index=ivfpq index.on_disk=true
    """
    from biorag.cli.console import console
    from biorag.config import to_yaml
    from biorag.indexing.build import build_index, load_build_config

    cfg = load_build_config(overrides or [])
    if show_config:
        console.print(to_yaml(cfg), highlight=False)
        return
    if ignore_disk:
        cfg.check_disk = False
    _print_disk_estimate(cfg)
    result = build_index(cfg, force=force)
    m = result.manifest
    if result.up_to_date:
        console.print(
            f"[green]index '{m.name}' is up to date[/] ({m.counts.chunks} chunks, "
            f"fingerprint {m.fingerprint}) at {result.path}; --force rebuilds it."
        )
        if result.search_settings_ignored:
            given = ", ".join(f"index.{k}={new} (built with {old})"
                              for k, (old, new) in result.search_settings_ignored.items())
            flags = " ".join(f"--{k.replace('_', '-')} {new}"
                             for k, (_, new) in result.search_settings_ignored.items())
            console.print(
                f"[yellow]not applied:[/] {given}: search-time settings are chosen per search, not "
                f"stored in the index. Use them with: biorag index search {m.name} QUERY {flags}, or "
                + " ".join(f"arm.retriever.{k}={new}" for k, (_, new) in result.search_settings_ignored.items())
                + " in an experiment."
            )
        return
    resumed = f", resumed after {result.resumed_shards} shard(s)" if result.resumed_shards else ""
    console.print(
        f"[green]built index '{m.name}'[/] at {result.path}: {m.counts.documents} documents, "
        f"{m.counts.chunks} chunks, {m.embedder['dimension']}-d {m.index.type}, "
        f"{m.build_seconds:.1f}s ({m.chunks_per_second:.0f} chunks/s embedding{resumed})."
    )
    skipped = {
        k: getattr(m.counts, k)
        for k in ("skipped_empty", "skipped_malformed", "duplicate_ids")
        if getattr(m.counts, k)
    }
    if skipped:
        console.print(f"[yellow]passed over:[/] {skipped}")


def _print_disk_estimate(cfg) -> None:
    from biorag.cli.console import console
    from biorag.indexing.disk import free_space, gb, plan_build
    from biorag.indexing.manifest import index_root

    root = index_root(cfg.root)
    estimate = plan_build(cfg)
    free = f"{gb(free_space(root))} free in {root}"
    if estimate is None:
        console.print(f"disk: no estimate before the corpus is read (a packaged or hub corpus); {free}")
    else:
        console.print(f"disk: {estimate.describe()}; {free}", highlight=False)


@app.command("info")
def info(
    name: str = typer.Argument(..., help="Index name (under the index root) or folder path."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole manifest as JSON."),
) -> None:
    """Show what an index holds and how it was built (its manifest)."""
    from biorag.cli.console import console
    from biorag.indexing.faiss_index import SEARCH_SETTINGS
    from biorag.indexing.manifest import IndexManifest, resolve_index_path

    path = resolve_index_path(name)
    m = IndexManifest.read(path)
    if as_json:
        console.print_json(data=m.to_dict())
        return
    t = Table(title=f"index {m.name}", show_header=False)
    t.add_column("field", style="bold")
    t.add_column("value")
    e, ix, c = m.embedder, m.index, m.counts
    search = ", ".join(f"{k}={ix.params[k]}" for k in SEARCH_SETTINGS if k in ix.params)
    rows = [
        ("path", str(path)),
        ("fingerprint", m.fingerprint),
        ("corpus", f"{m.corpus.name} ({m.corpus.loader}), source {m.corpus.source_fingerprint[:24]}"),
        ("documents / chunks", f"{c.documents} / {c.chunks}"),
        (
            "passed over",
            f"empty {c.skipped_empty}, malformed {c.skipped_malformed}, duplicate ids {c.duplicate_ids}",
        ),
        ("chunking", ", ".join(f"{k}={v}" for k, v in m.chunking.items())),
        (
            "embedder",
            f"{e['name']}: {e['model']} @ {e['revision']}, {e['dimension']}-d, normalised={e['normalize']}",
        ),
        (
            "index",
            f"{ix.type} ({ix.ntotal} vectors, {ix.metric}), built on {'GPU' if ix.built_on_gpu else 'CPU'}, "
            f"bm25={ix.bm25}, " + ("on disk: " + ", ".join(m.files[k] for k in ("ivfdata", "refine") if k in m.files)
                                  if ix.params.get("on_disk") else "in memory"),
        ),
        ("search defaults", f"{search} (override per search: --nprobe, --ef-search, --k-factor)"),
        *([("recommended", ", ".join(f"{k}={v}" for k, v in ix.recommended.items() if k in SEARCH_SETTINGS)
            + f" (recall@10 {ix.recommended['recall@10']} on {ix.recommended['queries']} held-out queries, "
            f"target {ix.recommended['target_recall']}; used unless a search sets one)")] if ix.recommended else []),
        ("build", f"{m.build_seconds}s total, {m.embed_seconds}s embedding, {m.chunks_per_second} chunks/s"),
        ("created", m.created_at),
        ("versions", ", ".join(f"{k} {v}" for k, v in m.versions.items())),
    ]
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)


@app.command("search")
def search(
    name: str = typer.Argument(..., help="Index name or folder path."),
    query: str = typer.Argument(..., help="The query text."),
    k: int = typer.Option(5, "-k", "--top-k", min=1, help="Number of results."),
    mode: str = typer.Option("dense", "--mode", "-m", help="dense | bm25 | hybrid"),
    embedder: str = typer.Option(
        None,
        "--embedder",
        help="Embedder config to query with (default: the one the index was built with).",
    ),
    rrf_k: int = typer.Option(
        None, "--rrf-k", min=1, help="Reciprocal rank fusion constant (hybrid; default: as in arm configs)."
    ),
    nprobe: int = typer.Option(
        None, "--nprobe", min=1, help="IVF / IVF-PQ: lists visited per query (default: as built)."
    ),
    ef_search: int = typer.Option(
        None, "--ef-search", min=1, help="HNSW: search breadth (default: as built)."
    ),
    k_factor: int = typer.Option(
        None, "--k-factor", min=1,
        help="IVF-PQ with refine: candidates re-ranked per result (default: as built).",
    ),
    snippet: int = typer.Option(120, "--snippet", help="Characters of each chunk to show."),
    rerank: str = typer.Option(
        None, "--rerank",
        help="Rerank the first stage's candidates with a reranker config: lm (the language model "
             "scores the question given each passage; offline), medcpt-rerank, bge-reranker, "
             "ms-marco-minilm (cross-encoders from the hub).",
    ),
    candidates: int = typer.Option(
        None, "--candidates", min=1, help="First-stage hits the reranker sees (default: as in arm configs)."
    ),
    model: str = typer.Option(
        None, "--model", help="Model config the lm reranker scores with (default: smollm2)."
    ),
) -> None:
    """Search an index and show a table: rank, score, doc id, title, snippet (and, reranked,
    each hit's first-stage rank)."""
    from biorag.cli.console import console
    from biorag.retrieval import IndexContext, RetrieverConfig, open_retriever

    emb_cfg = None
    if embedder:
        from biorag.config import compose, to_typed
        from biorag.indexing.embedding import EmbedderConfig

        emb_cfg = to_typed(
            compose("build", [f"embedder={embedder}"]).embedder, EmbedderConfig, "embedder"
        )
    reranker = None
    if rerank:
        from dataclasses import replace

        from biorag.retrieval.rerank import load_reranker_config

        cfg = load_reranker_config(rerank)
        reranker = replace(cfg, model=model or cfg.model)
    given = {key: v for key, v in (("rrf_k", rrf_k), ("candidates", candidates)) if v is not None}
    spec = RetrieverConfig(index=name, mode=mode, k=k, rerank=rerank, build_if_missing=False, nprobe=nprobe,
                           ef_search=ef_search, k_factor=k_factor, **given)
    retriever = open_retriever(spec, IndexContext(owner="index search"), embedder=emb_cfg, reranker=reranker)
    hits = retriever.retrieve(query, k)
    t = Table(title=f"{retriever.mode} search of {name}: {query!r}")
    for col, kw in (
        ("rank", {"justify": "right"}),
        *((("first stage", {"justify": "right"}),) if rerank else ()),
        ("score", {"justify": "right"}),
        ("doc id", {}),
        ("title", {}),
        ("snippet", {"overflow": "fold"}),
    ):
        t.add_column(col, **kw)
    for h in hits:
        text = " ".join(h.chunk.text.split())
        t.add_row(
            str(h.rank),
            *((str(h.first_rank),) if rerank else ()),
            f"{h.score:.4f}",
            h.chunk.doc_id,
            h.chunk.title,
            text[:snippet] + ("…" if len(text) > snippet else ""),
        )
    console.print(t)
    if rerank:
        console.print(f"reranked {retriever.scored} candidates in {retriever.seconds:.2f} s")
    if not hits:
        console.print(
            "[yellow]no results[/] (bm25 finds nothing when no query word is in the corpus)"
        )
