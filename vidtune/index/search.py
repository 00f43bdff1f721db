"""Building, updating and querying an index (the library behind ``vidtune index`` and ``vidtune search``)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from vidtune.defaults import DEFAULT_BACKBONE
from vidtune.errors import ConfigError, IndexError_, ModelMismatchError, VidtuneError
from vidtune.index.align import align
from vidtune.index.changes import Changes
from vidtune.index.embed import EmbedConfig, Embedder, embed_videos, is_image_path
from vidtune.index.store import VideoIndex
from vidtune.progress import NullProgress, Progress

log = logging.getLogger(__name__)

SEGMENT_NEIGHBOURS = 64  # FAISS neighbours per query segment when collecting candidate videos
ALIGN_THRESHOLD = 0.5  # similarity below which a segment pair counts against an alignment


def _display_path(p) -> str:
    return str(p)


def _expand(videos) -> list[Path]:
    from vidtune.runs.inference import expand_video_args

    return expand_video_args(videos)


def build_index(index_dir, videos, config: EmbedConfig | None = None, kind: str = "flat", overwrite: bool = False,
                device: str = "auto", cache_dir=None, use_cache: bool = True,
                progress: Progress | None = None, shard=None, ray: dict | None = None) -> dict:
    """Create an index at ``index_dir`` and add ``videos`` (files and folders, searched recursively).

    ``shard`` (a :class:`vidtune.scale.Shard`): only that shard's videos (``vidtune index merge`` joins
    the shard indexes). ``ray``: embed on a Ray cluster (keyword arguments of
    :func:`vidtune.scale.ray_engine.embed_on_ray`: ``address``, ``workers``, ``gpus_per_worker``)."""
    paths = _expand(videos)
    embedder = Embedder(config or EmbedConfig(), device=device, cache_dir=cache_dir, use_cache=use_cache)
    VideoIndex.create(index_dir, embedder.model_id, embedder.model_desc, embedder.config.params(), embedder.dim,
                      kind=kind, overwrite=overwrite).close()
    return _add(index_dir, paths, embedder, progress, shard, ray)


def embedder_for_index(ix: VideoIndex, device: str = "auto", cache_dir=None, use_cache: bool = True) -> Embedder:
    """Rebuild the model an index was made with, and check it still is that model."""
    desc = ix.meta("model") or {}
    params = ix.params
    cfg = EmbedConfig(backbone=desc.get("backbone") or DEFAULT_BACKBONE, weights=desc.get("weights"),
                      pretrained=bool(desc.get("pretrained", True)), run=desc.get("run"),
                      window=params["window"], stride=params["stride"], fps=params.get("fps", 2.0),
                      tta=params.get("tta", "flip"))
    emb = Embedder(cfg, device=device, cache_dir=cache_dir, use_cache=use_cache)
    if emb.model_id != ix.model_id:
        raise ModelMismatchError(
            f"the model recorded in {ix.root} ({desc}) now has other weights ({emb.model_id} instead of "
            f"{ix.model_id}); its vectors would not be comparable. Restore the original weights or rebuild the index")
    return emb


def add_to_index(index_dir, videos, config: EmbedConfig | None = None, device: str = "auto", cache_dir=None,
                 use_cache: bool = True, progress: Progress | None = None, options: dict | None = None,
                 shard=None, ray: dict | None = None) -> dict:
    """Add new or changed ``videos``; files already indexed with the same content are not embedded again.

    ``config`` (optional) states the model the caller expects; an index built with another model
    refuses it instead of mixing vectors. ``options`` states only some of its fields (``None``
    values are not stated); the others default to the index's own. ``shard``: only that shard's videos;
    ``ray``: embed on a Ray cluster (see :func:`build_index`).
    """
    paths = _expand(videos)
    with VideoIndex.open(index_dir) as ix:
        embedder = embedder_for_index(ix, device, cache_dir, use_cache)
        if config is None and options and any(v is not None for v in options.values()):
            config = embedder.config.with_options(**options)
        if config is not None:
            wanted = Embedder(config, device=device, cache_dir=cache_dir, use_cache=use_cache)
            ix.check_compatible(wanted.model_id, wanted.config.params())
    return _add(index_dir, paths, embedder, progress, shard, ray)


def _add(index_dir, paths: list[Path], embedder: Embedder, progress: Progress | None, shard=None,
         ray: dict | None = None) -> dict:
    progress = progress or NullProgress()
    if shard is not None:
        from vidtune.scale.shards import select_shard

        paths = select_shard(list(dict.fromkeys(paths)), shard,
                             digest=embedder.cache.digest if embedder.cache is not None else None)
    with VideoIndex.open(index_dir) as ix:
        ix.check_compatible(embedder.model_id, embedder.config.params())
        with ix.writing() as w:
            rows = ix.videos()
            by_digest: dict[str, int] = {r.digest: r.id for r in rows}
            changes = Changes({r.path: r.digest for r in rows}, embedder.cache.digest if embedder.cache is not None else _digest, _display_path)
            todo, copied, copies = [], [], []
            for p, key, digest in changes.new_or_changed(paths):  # unreadable ones (a FIFO...) refused unread
                if digest in by_digest:  # same content under another name: reuse its vectors
                    copies.append((key, by_digest[digest]))
                else:
                    todo.append(p)
            unchanged, skipped = changes.unchanged, changes.skipped
            if ray is not None:
                from vidtune.scale.ray_engine import embed_on_ray

                embs, bad = embed_on_ray(embedder, todo, progress=progress, **ray)
            else:
                embs, bad = embed_videos(embedder, todo, progress=progress, description="embedding")
            skipped.extend(bad)
            for e in embs:
                w.add(e, _display_path(e.path))
            for key, src in copies:
                w.add(ix.stored_embedding(src), key)
                copied.append(key)
            w.commit()
        info = ix.info()
    result = {"index": str(index_dir), "added": [_display_path(e.path) for e in embs], "copied": copied,
              "unchanged": unchanged, "skipped": skipped, "videos": info["videos"], "segments": info["segments"]}
    if shard is not None:
        result["shard"] = str(shard)
    return result


def _digest(p) -> str:
    from vidtune.utils import file_digest

    return file_digest(p)


def remove_from_index(index_dir, videos) -> dict:
    """Remove videos by the path they were added under (a folder removes everything below it)."""
    with VideoIndex.open(index_dir) as ix, ix.writing() as w:
        rows = ix.videos()
        removed, missing = [], []
        for v in videos:
            key = _display_path(v)
            prefix = key.rstrip("/") + "/"
            hit = [r for r in rows if r.path == key or r.path.startswith(prefix)]
            if not hit:
                missing.append(key)
            for r in hit:
                if r.path not in removed:
                    w.remove(r)
                    removed.append(r.path)
        if missing and not removed:
            raise IndexError_(f"not in the index: {', '.join(missing[:5])}. Paths must be given as they were added "
                              "(see `vidtune index info --videos`)")
        w.commit()
        info = ix.info()
    return {"index": str(index_dir), "removed": removed, "not_found": missing, "videos": info["videos"],
            "segments": info["segments"]}


def index_info(index_dir, list_videos: bool = False) -> dict:
    with VideoIndex.open(index_dir) as ix:
        info = ix.info()
        if list_videos:
            info["video_list"] = [{"path": r.path, "digest": r.digest, "duration": r.duration, "segments": r.segments}
                                  for r in ix.videos()]
    return info


# -- search -----------------------------------------------------------------------------------------
class Searcher:
    """An open index plus the model that made it: answers many queries without reloading either."""

    def __init__(self, index_dir, device: str = "auto", cache_dir=None, use_cache: bool = True, many: bool = False):
        """``many``: about to answer many queries (traced encoder, built once)."""
        self.ix = VideoIndex.open(index_dir)
        self.embedder = embedder_for_index(self.ix, device, cache_dir, use_cache)
        if many:
            self.embedder.prepare_many()
        self._paths = {r.id: r.path for r in self.ix.videos()}

    def close(self) -> None:
        self.ix.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def search(self, query, k: int = 10, start: float | None = None, end: float | None = None) -> dict:
        """Ranked database videos for a video, a part of a video, or an image (see ``vidtune search``)."""
        if k < 1:
            raise ConfigError("k", f"must be at least 1, got {k}")
        query = Path(query)
        if not query.exists():
            raise VidtuneError(f"query not found: {query}")
        if is_image_path(query):
            if start is not None or end is not None:
                raise ConfigError("start", "and end apply to video queries, not to an image")
            return {"query": str(query), "results": self.search_vectors(self.embedder.embed_image(query)[None], k)}
        emb = self.embedder.embed_video(query, start, end)
        return {"query": str(query), "results": self.search_vectors(emb.segments, k, emb.starts, emb.ends)}

    def search_vectors(self, q: np.ndarray, k: int, q_starts=None, q_ends=None, exclude: set[int] = frozenset(),
                       threshold: float = ALIGN_THRESHOLD, min_score: float | None = None,
                       with_ids: bool = False) -> list[dict]:
        """Rank videos for query segment vectors ``q`` ``(Nq, D)`` (one row and no times: an image).

        ``exclude``: video ids never returned; ``with_ids`` keeps each result's ``video_id``.
        """
        scores, ids = self.ix.search_segments(q, SEGMENT_NEIGHBOURS)
        seg_video = self.ix.segment_videos(np.unique(ids[ids >= 0]))
        best: dict[int, float] = {}
        for s, i in zip(scores.ravel(), ids.ravel()):
            if i < 0:
                continue
            v = seg_video.get(int(i))
            if v is None or v in exclude:
                continue
            best[v] = max(best.get(v, -1.0), float(s))
        candidates = sorted(best, key=best.get, reverse=True)[: max(2 * k, 20)]
        results = []
        for v in candidates:
            sids, starts, ends = self.ix.video_segments(v)
            sim = q @ self.ix.vectors(sids).T  # (Nq, Nd)
            if q_starts is None:  # image: the best segment
                j = int(np.argmax(sim[0]))
                results.append({"path": self._paths.get(v) or self._path_of(v), "start": float(starts[j]),
                                "end": float(ends[j]), "query_start": None, "query_end": None,
                                "score": round(float(sim[0, j]), 6), "_video": v})
                continue
            a = align(sim, threshold)
            if a is None:
                i, j = np.unravel_index(int(np.argmax(sim)), sim.shape)
                a_q0 = a_q1 = int(i)
                a_d0 = a_d1 = int(j)
                score = float(sim[i, j]) - 0.05
            else:
                a_q0, a_q1, a_d0, a_d1, score = a.q0, a.q1, a.d0, a.d1, a.score
            results.append({"path": self._paths.get(v) or self._path_of(v), "start": float(starts[a_d0]),
                            "end": float(ends[a_d1]), "query_start": float(q_starts[a_q0]),
                            "query_end": float(q_ends[a_q1]), "score": round(score, 6), "_video": v})
        results.sort(key=lambda r: -r["score"])
        if min_score is not None:
            results = [r for r in results if r["score"] >= min_score]
        for r in results:
            vid = r.pop("_video")
            if with_ids:
                r["video_id"] = vid
        return results[:k]

    def _path_of(self, video_id: int) -> str:
        self._paths = {r.id: r.path for r in self.ix.videos()}
        return self._paths[video_id]


def search(index_dir, query, k: int = 10, start: float | None = None, end: float | None = None,
           device: str = "auto", cache_dir=None, use_cache: bool = True) -> dict:
    """``{"query": ..., "results": [{"path", "start", "end", "query_start", "query_end", "score"}]}``."""
    with Searcher(index_dir, device, cache_dir, use_cache) as s:
        return s.search(query, k=k, start=start, end=end)
