"""Commands of the search area: embed, index build|add|remove|info, search, dedupe, eval-retrieval."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from rich.table import Table

from vidtune.cli.common import (
    cache_args,
    check_output_file,
    check_output_folder,
    device_arg,
    engine_args,
    finite_float,
    output_args,
    print_skipped,
    ray_options,
    shard_arg,
    words_text,
)
from vidtune.cli.console import RichProgress, err, escape, fmt_pct, out, print_json
from vidtune.cli.multimodal import clip_args, words_args
from vidtune.defaults import DEFAULT_BACKBONE
from vidtune.errors import ConfigError, VideoDecodeError, VidtuneError
from vidtune.utils import printable


def _embed_args(p: argparse.ArgumentParser, defaults: bool = True) -> None:
    d = (lambda v: v) if defaults else (lambda v: None)
    g = p.add_argument_group("embedding model")
    g.add_argument("--backbone", default=d(DEFAULT_BACKBONE),
                   help="frame encoder: registered name (offline), timm model or tv/<torchvision model>")
    g.add_argument("--weights", default=None, help="local weights file for the backbone")
    g.add_argument("--no-pretrained", action="store_true", help="random initialisation (a baseline)")
    g.add_argument("--run", default=None, help="a trained run folder: its fine-tuned backbone and temporal head")
    g.add_argument("--window", type=finite_float, default=d(2.0), help="segment length in seconds (default 2)")
    g.add_argument("--stride", type=finite_float, default=d(1.0), help="seconds between segment starts (default 1)")
    g.add_argument("--fps", type=finite_float, default=d(2.0), help="frames decoded per second (default 2)")
    g.add_argument("--tta", default=d("flip"), help="flip (mirror-averaged, flip-invariant; default) | none")


def _device_args(p: argparse.ArgumentParser) -> None:
    device_arg(p)
    cache_args(p)
    output_args(p)


def _options(args) -> dict:
    """The embedding options given on the command line (None: not given)."""
    opts = {name: getattr(args, name, None) for name in ("backbone", "weights", "run", "window", "stride", "fps", "tta")}
    opts["pretrained"] = False if getattr(args, "no_pretrained", False) else None
    return opts


def _config(args):
    from vidtune.index.embed import EmbedConfig

    return EmbedConfig().with_options(**_options(args))


def _common(args) -> dict:
    return {"device": args.device, "cache_dir": args.cache_dir, "use_cache": not args.no_cache}


# -- embed ------------------------------------------------------------------------------------------
def cmd_embed(args) -> int:
    from vidtune.index.embed import Embedder, embed_videos, save_embeddings
    from vidtune.runs.inference import expand_video_args

    check_output_folder(args.out, "--out")
    paths = expand_video_args(args.videos)
    emb = Embedder(_config(args), **_common(args))
    if args.shard is not None:
        from vidtune.scale.shards import select_shard

        paths = select_shard(list(dict.fromkeys(paths)), args.shard,
                             digest=emb.cache.digest if emb.cache is not None else None)
    ray = ray_options(args)
    if ray is not None:
        from vidtune.scale.ray_engine import embed_on_ray

        embs, skipped = embed_on_ray(emb, paths, progress=RichProgress(not args.quiet), **ray)
    else:
        embs, skipped = embed_videos(emb, paths, progress=RichProgress(not args.quiet))
    if not embs and not (args.shard is not None and not paths):  # an empty shard is fine
        raise VidtuneError(f"no readable videos to embed ({len(skipped)} skipped: "
                           + "; ".join(f"{s['path']}: {s['reason']}" for s in skipped[:3]) + ")")
    meta = save_embeddings(args.out, embs, emb.model_id, emb.config.params(), skipped)
    result = {"out": str(args.out), "files": ["segments.npy", "videos.npy", "embeddings.json"], "videos": len(embs),
              "segments": len(meta["segments"]), "dim": meta["dim"], "model": emb.model_id, "params": meta["params"],
              "skipped": skipped}
    if args.shard is not None:
        result["shard"] = str(args.shard)
    if args.json:
        print_json(result)
        return 0
    print_skipped(skipped)
    out.print(f"embedded {len(embs)} video(s), {len(meta['segments'])} segments of {meta['dim']} dims into "
              f"{escape(str(args.out))} (segments.npy, videos.npy, embeddings.json)")
    return 0


# -- index ------------------------------------------------------------------------------------------
def _print_change(result: dict, verb: str) -> None:
    print_skipped(result.get("skipped", []))
    parts = [f"{verb} {len(result.get(verb, []))}"]
    if result.get("copied"):
        parts.append(f"{len(result['copied'])} identical copies reused")
    if "unchanged" in result:
        parts.append(f"{len(result['unchanged'])} unchanged")
    out.print(f"{escape(result['index'])}: " + ", ".join(parts) + f"; now {result['videos']} videos, "
              f"{result['segments']} segments", highlight=False)


def _select_shard(args) -> None:
    """``--shard I/N``: narrow ``args.videos`` to this shard's files, for every modality alike."""
    if args.shard is None:
        return
    from vidtune.runs.features import open_cache
    from vidtune.runs.inference import expand_video_args
    from vidtune.scale.shards import select_shard

    cache = open_cache(args.cache_dir, not args.no_cache)
    args.videos = select_shard(list(dict.fromkeys(expand_video_args(args.videos))), args.shard,
                               digest=cache.digest if cache is not None else None)


def cmd_index_build(args) -> int:
    from vidtune.cli.multimodal import add_words, index_modalities, print_words, words_only_start
    from vidtune.index.search import build_index

    _select_shard(args)
    root = Path(args.index)
    before = set(os.listdir(root)) if root.is_dir() else None  # what a failed build must leave as it was
    try:
        mods = index_modalities(args, args.index, building=True)
        if "visual" in mods:
            result = build_index(args.index, args.videos, _config(args), kind=args.kind, overwrite=args.overwrite,
                                 progress=RichProgress(not args.quiet), ray=ray_options(args),
                                 **_common(args))
        else:
            result = words_only_start(args, building=True)
        result = add_words(args, result, mods, create=True)
    except Exception:  # not an interrupt: a stopped build keeps its work for `index add`
        _remove_failed_build(root, before)
        raise
    if args.shard is not None:
        result["shard"] = str(args.shard)
    if args.json:
        print_json(result)
    else:
        _print_change(result, "added")
        print_words(result)
    return 0


_INDEX_FILES = ("index.sqlite", "text.sqlite", "clip.sqlite", ".lock")  # + -journal/-wal/-shm, vectors.*.faiss


def _remove_failed_build(root: Path, before: set[str] | None) -> None:
    """Remove the index files a failed ``index build`` created in a new or empty folder (and the folder, if
    the build made it), so that ``index info`` and ``index build`` agree there is no index. A build into a
    folder that held files (``--overwrite``) is left as it is."""
    import contextlib

    if not root.is_dir() or before:
        return
    for p in root.iterdir():
        name = p.name
        ours = (name.split("-")[0] in _INDEX_FILES or name.startswith((".index.sqlite", ".vectors."))
                or (name.startswith("vectors.") and name.endswith(".faiss")))
        if ours and not p.is_dir():
            with contextlib.suppress(OSError):
                p.unlink()
    if before is None:
        with contextlib.suppress(OSError):
            root.rmdir()  # only when empty: anything else written there stays


def cmd_index_add(args) -> int:
    from vidtune.cli.multimodal import add_words, index_modalities, print_words, words_only_start
    from vidtune.index.search import add_to_index

    _select_shard(args)
    mods = index_modalities(args, args.index, building=False)
    if "visual" in mods:
        result = add_to_index(args.index, args.videos, options=_options(args), progress=RichProgress(not args.quiet),
                              ray=ray_options(args), **_common(args))
    else:
        result = words_only_start(args, building=False)
    result = add_words(args, result, mods, create=False)
    if args.shard is not None:
        result["shard"] = str(args.shard)
    if args.json:
        print_json(result)
    else:
        _print_change(result, "added")
        print_words(result)
    return 0


def cmd_index_merge(args) -> int:
    from vidtune.index.merge import merge_indexes

    result = merge_indexes(args.index, args.shards, kind=args.kind)
    if args.json:
        print_json(result)
    else:
        parts = [f"added {len(result['added'])}", f"{len(result['replaced'])} replaced",
                 f"{len(result['unchanged'])} unchanged"]
        out.print(f"{escape(result['index'])}: merged {len(result['shards'])} shard(s): " + ", ".join(parts)
                  + f"; now {result['videos']} videos, {result['segments']} segments", highlight=False)
    return 0


def cmd_index_remove(args) -> int:
    from vidtune.index.search import remove_from_index
    from vidtune.index.text_search import has_text_index, remove_text

    paths = [str(v) for v in args.videos]
    if has_text_index(args.index) and not (Path(args.index) / "index.sqlite").exists():  # words only
        from vidtune.index.text_search import text_index_info

        removed = remove_text(args.index, paths)
        info = text_index_info(args.index)
        result = {"index": str(args.index), "removed": removed, "videos": info["videos"],
                  "segments": sum(info["spans"].values()),
                  "not_found": [p for p in paths if not any(r == p or r.startswith(p.rstrip("/") + "/")
                                                             for r in removed)]}
    else:
        result = remove_from_index(args.index, paths)
        remove_text(args.index, paths)
    if args.json:
        print_json(result)
    else:
        for p in result["not_found"]:
            err.print(f"[yellow]not in the index:[/yellow] {escape(p)}")
        _print_change(result, "removed")
    return 0


def cmd_index_info(args) -> int:
    from vidtune.index.search import index_info
    from vidtune.index.text_search import text_index_info

    words = text_index_info(args.index)
    if words is not None and not (Path(args.index) / "index.sqlite").is_file():  # words only: no visual part
        info = {"index": str(args.index), "videos": words["videos"], "segments": 0, "model": None, "dim": None,
                "kind": None, "params": None, "model_source": None, "bytes": 0}
    else:
        info = index_info(args.index, list_videos=args.videos)
    if words is not None:
        info["words"] = words
    if args.json:
        print_json(info)
        return 0
    t = Table(title=escape(info["index"]), show_header=False, title_justify="left")
    for key in ("videos", "segments", "model", "dim", "kind", "params", "model_source", "bytes"):
        if info[key] is not None:  # a words-only index has no visual part
            t.add_row(key, escape(str(info[key])))
    if words is not None:
        t.add_row("words", escape(", ".join(f"{n} {m} spans" for m, n in words["spans"].items()) or "no spans")
                  + f" ({words['bytes']} bytes)")
    out.print(t)
    for v in info.get("video_list", []):
        out.print(f"{printable(v['path'])}  {v['duration']:.2f} s  {v['segments']} segments", highlight=False,
                  markup=False)
    return 0


# -- search -----------------------------------------------------------------------------------------
def _fmt_span(a, b) -> str:
    return "-" if a is None else f"{a:.2f}-{b:.2f} s"


def _queries(args) -> list[Path]:
    """Queries from the command line, then from ``--queries FILE`` (one path a line; blank lines and
    ``#`` comments skipped; relative paths are relative to the file's folder)."""
    queries = list(args.query)
    if args.queries is not None:
        try:
            text = Path(args.queries).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError("queries", f"{args.queries}: cannot read it as a text file ({exc})") from None
        base = Path(args.queries).parent
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                queries.append(Path(line) if Path(line).is_absolute() else base / line)
    if not queries:
        raise ConfigError("queries", "or a QUERY argument is needed: a video or image to search for (or --text "
                                     '"WORDS" to search speech and on-screen text)')
    return queries


def _print_matches(result: dict) -> None:
    t = Table(title=escape(f"matches for {result['query']}"), title_justify="left")
    for c in ("#", "video", "segment", "query segment", "score"):
        t.add_column(c, overflow="fold" if c == "video" else None)
    for i, r in enumerate(result["results"], 1):
        t.add_row(str(i), escape(r["path"]), _fmt_span(r["start"], r["end"]),
                  _fmt_span(r["query_start"], r["query_end"]), f"{r['score']:.3f}")
    out.print(t)


def cmd_search(args) -> int:
    """One query: the object it always printed. Several (``Q1 Q2 ...`` / ``--queries FILE``): the index
    and model are loaded once and ``{"queries": [one object per query, in order]}`` is printed; a query
    that fails gives ``{"query", "error"}`` in its place and exit code 1, the others still run."""
    from vidtune.index.search import Searcher

    if args.text is not None or args.text_queries is not None:
        from vidtune.cli.multimodal import cmd_search_text

        if args.text is not None and args.text_queries is not None:
            raise VidtuneError("give --text \"WORDS\" or --text-queries FILE, not both")
        if args.query or args.queries is not None:
            raise VidtuneError("give query videos/images (QUERY, --queries) or words (--text, --text-queries), "
                               "not both")
        return cmd_search_text(args)
    if args.min_score is not None:
        raise VidtuneError("--min-score is the confidence floor of a words search (--text, --text-queries); "
                           "a video/image search ranks by similarity: leave it out")
    queries = _queries(args)
    if args.k < 1:
        raise ConfigError("k", f"must be at least 1, got {args.k}")
    with Searcher(args.index, many=len(queries) > 1, **_common(args)) as searcher:
        if len(queries) == 1:
            result = searcher.search(queries[0], k=args.k, start=args.start, end=args.end)
            if args.json:
                print_json(result)
            else:
                _print_matches(result)
            return 0
        results = []
        for q in queries:
            try:
                results.append(searcher.search(q, k=args.k, start=args.start, end=args.end))
            except (VideoDecodeError, VidtuneError) as exc:
                if isinstance(exc, ConfigError):
                    raise
                results.append({"query": str(q), "error": getattr(exc, "reason", str(exc))})
    failed = sum("error" in r for r in results)
    if args.json:
        print_json({"queries": results})
    else:
        for r in results:
            if "error" in r:
                err.print(f"[red]error[/red] {escape(r['query'])}: {escape(r['error'])}", highlight=False)
            else:
                _print_matches(r)
    return 1 if failed else 0


# -- dedupe -----------------------------------------------------------------------------------------
def cmd_dedupe(args) -> int:
    from vidtune.index.dedupe import find_duplicates, write_dedup_manifest, write_pairs_csv

    if args.csv:
        check_output_file(args.csv, "--csv")
    if args.write_manifest:
        check_output_file(args.write_manifest, "--write-manifest")
    result = find_duplicates(args.index, threshold=args.threshold, progress=RichProgress(not args.quiet),
                             **_common(args))
    if args.csv:
        write_pairs_csv(args.csv, result["pairs"])
        result["csv"] = str(args.csv)
    if args.manifest or args.write_manifest:
        if not (args.manifest and args.write_manifest):
            raise VidtuneError("--manifest DATA and --write-manifest OUT go together")
        result["manifest"] = write_dedup_manifest(args.manifest, args.write_manifest, result["groups"], args.policy)
    if args.json:
        print_json(result)
        return 0
    t = Table(title=f"near-duplicate pairs (score >= {args.threshold})", title_justify="left")
    for c in ("video A", "segment A", "video B", "segment B", "score"):
        t.add_column(c, overflow="fold" if c.startswith("video") else None)
    for p in result["pairs"]:
        t.add_row(escape(p["a"]), _fmt_span(p["a_start"], p["a_end"]), escape(p["b"]),
                  _fmt_span(p["b_start"], p["b_end"]), f"{p['score']:.3f}")
    out.print(t)
    out.print(f"{len(result['pairs'])} pair(s) in {len(result['groups'])} group(s) of duplicates among "
              f"{result['videos']} videos")
    if "manifest" in result:
        m = result["manifest"]
        out.print(f"wrote {escape(m['out'])}: {m['rows']} rows ({m['dropped']} dropped, {m['moved']} moved "
                  f"to their group's split)")
    return 0


# -- eval-retrieval ---------------------------------------------------------------------------------
def cmd_eval_retrieval(args) -> int:
    from vidtune.index.retrieval_metrics import evaluate_retrieval

    if bool(args.index) == bool(args.predictions):
        raise VidtuneError("give exactly one of --index INDEX_DIR (search every query) or --predictions FILE")
    if args.save_predictions:
        check_output_file(args.save_predictions, "--save-predictions")
    result = evaluate_retrieval(args.ground_truth, index_dir=args.index, predictions=args.predictions, k=args.k,
                                save_predictions=args.save_predictions, progress=RichProgress(not args.quiet),
                                **_common(args))
    if args.json:
        print_json(result)
        return 0
    print_skipped(result.get("skipped", []))
    t = Table(title=escape(f"retrieval on {args.ground_truth}"), show_header=False, title_justify="left")
    t.add_row("queries (with a match / without)", f"{result['queries']} ({result['queries_with_match']} / "
              f"{result['queries'] - result['queries_with_match']})")
    t.add_row("ground-truth pairs", str(result["positives"]))
    t.add_row("muAP (micro average precision)", f"{result['muAP']:.4f}")
    t.add_row("recall@1", fmt_pct(result["recall@1"]))
    t.add_row("recall@10", fmt_pct(result["recall@10"]))
    t.add_row("localisation IoU (database / query)",
              f"{_f(result['iou_db'])} / {_f(result['iou_query'])} over {result['localised']} pairs")
    out.print(t)
    return 0


def _f(x) -> str:
    return "-" if x is None else f"{x:.3f}"


# -- registration -----------------------------------------------------------------------------------
def register(sub) -> None:
    p = sub.add_parser("embed", help="per-segment and per-video embeddings (NumPy + JSON) for videos")
    p.add_argument("videos", nargs="+", type=Path, help="video files, or folders searched recursively")
    p.add_argument("--out", type=Path, required=True, help="folder for segments.npy, videos.npy, embeddings.json")
    _embed_args(p)
    shard_arg(p)
    engine_args(p)
    _device_args(p)
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("index", help="build and maintain a search index (FAISS + SQLite, no server)")
    isub = p.add_subparsers(dest="index_command", metavar="ACTION")
    isub.required = True
    q = isub.add_parser("build", help="create an index from videos (files and folders)")
    q.add_argument("index", type=Path, metavar="INDEX_DIR")
    q.add_argument("videos", nargs="+", type=Path)
    q.add_argument("--kind", default="flat", help="flat (exact inner product, default) | hnsw (approximate, "
                                                  "for millions of segments) | ivfpq (64-byte codes in RAM, exact "
                                                  "vectors on disk for re-ranking; trained once 20,000 segments "
                                                  "are in; see docs/scale.md)")
    q.add_argument("--overwrite", action="store_true", help="replace an existing index in INDEX_DIR")
    _embed_args(q)
    words_args(q)
    shard_arg(q)
    engine_args(q)
    _device_args(q)
    q.set_defaults(func=cmd_index_build)
    q = isub.add_parser("add", help="add new or changed videos (unchanged files are not embedded again)")
    q.add_argument("index", type=Path, metavar="INDEX_DIR")
    q.add_argument("videos", nargs="+", type=Path)
    _embed_args(q, defaults=False)
    words_args(q, defaults=False)
    shard_arg(q)
    engine_args(q)
    _device_args(q)
    q.set_defaults(func=cmd_index_add)
    q = isub.add_parser("merge", help="merge shard indexes into INDEX_DIR (same model and settings; crash-safe)")
    q.add_argument("index", type=Path, metavar="INDEX_DIR", help="target index (created like the first shard if missing)")
    q.add_argument("shards", nargs="+", type=Path, metavar="SHARD_INDEX")
    q.add_argument("--kind", default=None, help="FAISS structure when the merge creates INDEX_DIR (default: the "
                                               "first shard's)")
    output_args(q, quiet=False)
    q.set_defaults(func=cmd_index_merge)
    q = isub.add_parser("remove", help="remove videos (paths as added; a folder removes all below it)")
    q.add_argument("index", type=Path, metavar="INDEX_DIR")
    q.add_argument("videos", nargs="+")
    output_args(q, quiet=False)
    q.set_defaults(func=cmd_index_remove)
    q = isub.add_parser("info", help="size, model and parameters of an index")
    q.add_argument("index", type=Path, metavar="INDEX_DIR")
    q.add_argument("--videos", action="store_true", help="also list every video")
    output_args(q, quiet=False)
    q.set_defaults(func=cmd_index_info)

    p = sub.add_parser("search", help="find the videos (and segments) matching a video, a part of one, or an image")
    p.add_argument("index", type=Path, metavar="INDEX_DIR")
    p.add_argument("query", type=Path, nargs="*",
                   help="video or image files; one prints one result object, several print "
                        '{"queries": [one per query]} (the index and model load once)')
    p.add_argument("--queries", type=Path, default=None, metavar="FILE",
                   help="more queries, one path a line (# comments; relative to FILE's folder)")
    p.add_argument("--text", type=words_text, default=None, metavar="WORDS",
                   help="search spoken and on-screen words instead (an index built with --modalities ...,speech,text)")
    p.add_argument("--text-queries", default=None, metavar="FILE",
                   help="many words searches in one process: one query a line (# comments; - reads standard "
                        'input); prints {"queries": [one result object per line, in order]}')
    p.add_argument("--min-score", type=finite_float, default=None, metavar="CONFIDENCE",
                   help="words search: leave out matches under this confidence (0-1, default 0.5; a query about "
                        "nothing in the index returns nothing; 0 returns the k best whatever they are)")
    clip_args(p)
    p.add_argument("--start", type=finite_float, default=None,
                   help="query only this part of the query video (seconds; not for words searches)")
    p.add_argument("--end", type=finite_float, default=None)
    p.add_argument("-k", "--k", type=int, default=10,
                   help="at most this many results: videos (with their best segment) for a video/image query, "
                        "spans (time ranges of speech or on-screen text) for a words search, which returns fewer "
                        "when fewer clear --min-score")
    _device_args(p)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("dedupe", help="pairs of indexed videos that share content, with the shared segments")
    p.add_argument("index", type=Path, metavar="INDEX_DIR")
    p.add_argument("--threshold", type=finite_float, default=0.8, help="minimum alignment score of a pair (default 0.8)")
    p.add_argument("--csv", type=Path, default=None, help="also write the pairs as CSV")
    p.add_argument("--manifest", type=Path, default=None, help="a dataset (folder or CSV/JSONL) to clean")
    p.add_argument("--write-manifest", type=Path, default=None, help="the cleaned manifest to write (.csv/.jsonl)")
    p.add_argument("--policy", default="drop", help="drop: keep one video per duplicate group; same-split: keep all, "
                                                    "moved into one split per group")
    _device_args(p)
    p.set_defaults(func=cmd_dedupe)

    p = sub.add_parser("eval-retrieval", help="muAP, recall@1/@10 and localisation IoU against ground truth")
    p.add_argument("ground_truth", type=Path, help="CSV/JSONL: query, match (empty: no match), optional "
                                                   "query_start, query_end, match_start, match_end")
    p.add_argument("--index", type=Path, default=None, help="search every query in this index")
    p.add_argument("--predictions", type=Path, default=None, help="or evaluate saved predictions (JSONL of "
                                                                  "`vidtune search --json` objects)")
    p.add_argument("-k", "--k", type=int, default=10, help="results per query (default 10)")
    p.add_argument("--save-predictions", type=Path, default=None, help="write the searches as JSONL")
    _device_args(p)
    p.set_defaults(func=cmd_eval_retrieval)
