"""``vidtune index merge INDEX SHARD_INDEX...``: shard indexes (``index build --shard I/N``, the Ray
engine) into one.

Order-independent: the videos of all shards are staged sorted by path, so merging ``a b`` or
``b a`` gives the same rows, segment ids and vectors. Crash-safe: everything lands in the target's
single generation commit (:class:`vidtune.index.store._Writer`), so a merge killed at any point
leaves the target as it was, and running it again completes it. Idempotent: a video already in the
target with the same content is left alone.

The visual segment vectors are merged (an ``ivfpq`` shard's exact ones, nothing quantised twice),
and so are the words (``text.sqlite``: transcript and on-screen text spans with their sentence
vectors) of shards built with ``--modalities ...,speech/text``: one SQLite transaction per video, in
path order, skipping videos the target already holds with the same content, so a killed merge reruns
to completion there too. Shards must then agree on the words modalities and the sentence model.

Refused before anything is written: shards made with another model (other weights) or other
embedding parameters than the target's (or than each other's), one path with different
content in two shards, and a shard whose vector file no longer matches the checksum recorded when it
was written (exit 2 naming the file).
"""

from __future__ import annotations

import logging
from pathlib import Path

from vidtune.errors import IndexStoreError, ModelMismatchError
from vidtune.index.store import DB_NAME, VideoIndex

log = logging.getLogger(__name__)


def merge_indexes(index_dir, shard_dirs, kind: str | None = None) -> dict:
    """Merge the indexes in ``shard_dirs`` into ``index_dir`` (created like the first shard when missing;
    ``kind`` then chooses its FAISS structure, default the first shard's).

    Returns ``{"index", "shards", "added", "replaced", "unchanged", "videos", "segments"}``.
    """
    index_dir = Path(index_dir)
    shard_dirs = [Path(s) for s in shard_dirs]
    if not shard_dirs:
        raise IndexStoreError("give at least one SHARD_INDEX to merge")
    target_real = index_dir.resolve()
    for s in shard_dirs:
        if s.resolve() == target_real:
            raise IndexStoreError(f"{s} is the target index itself; list only the shard indexes after INDEX")
    shards = [VideoIndex.open(s) for s in shard_dirs]
    try:
        first = shards[0]
        for s in shards[1:]:
            _check_same(first, s)
        for s in shards:  # each shard's vector file against its recorded checksum, before anything is written
            s.faiss_index()
        words = _words_plan(index_dir, shard_dirs)  # refuses mismatched words before anything is written
        if not (index_dir / DB_NAME).is_file():
            VideoIndex.create(index_dir, first.model_id, first.meta("model"), first.params, first.dim,
                              kind=kind or first.kind).close()
        elif kind is not None:
            with VideoIndex.open(index_dir) as ix:
                if ix.kind != kind:
                    raise IndexStoreError(f"{index_dir} is a {ix.kind!r} index; --kind {kind} applies only when "
                                          "the merge creates INDEX")
        with VideoIndex.open(index_dir) as ix:
            _check_same(ix, first)
            incoming = _collect(shards)
            with ix.writing() as w:
                known = {r.path: r for r in ix.videos()}
                added, replaced, unchanged = [], [], []
                for path in sorted(incoming):
                    shard, row = incoming[path]
                    old = known.get(path)
                    if old is not None and old.digest == row.digest:
                        unchanged.append(path)
                        continue
                    (replaced if old is not None else added).append(path)
                    w.add(shard.stored_embedding(row.id), path)
                w.commit()
            info = ix.info()
    finally:
        for s in shards:
            s.close()
    result = {"index": str(index_dir), "shards": [str(s) for s in shard_dirs], "added": added,
              "replaced": replaced, "unchanged": unchanged, "videos": info["videos"], "segments": info["segments"]}
    if words is not None:
        result["words"] = _merge_words(index_dir, words)
    return result


def _words_plan(index_dir: Path, shard_dirs: list[Path]) -> list[Path] | None:
    """The shards whose words to merge (None: none has any); mismatched words stores are refused here,
    before anything is written."""
    from vidtune.index.text_search import TextIndex, has_text_index

    with_words = [s for s in shard_dirs if has_text_index(s)]
    if not with_words:
        return None
    if len(with_words) != len(shard_dirs):
        missing = [str(s) for s in shard_dirs if s not in with_words]
        raise IndexStoreError(f"{', '.join(missing)} {'has' if len(missing) == 1 else 'have'} no words "
                              "(transcripts, on-screen text) while other shards do; build every shard with the "
                              "same --modalities, or merge the visual-only shards into another index")
    stores = [TextIndex.open(s) for s in with_words]
    try:
        if has_text_index(index_dir):
            with TextIndex.open(index_dir) as target:
                stores_and_target = [target, *stores]
                _check_same_words(stores_and_target)
        else:
            _check_same_words(stores)
        seen: dict[str, tuple[Path, str]] = {}
        for s in stores:
            for path, digest in sorted(s.digests().items()):
                prev = seen.setdefault(path, (s.path.parent, digest))
                if prev[1] != digest:
                    raise IndexStoreError(f"{path} has different content in {prev[0]} and {s.path.parent} (the "
                                          "file changed between shard runs); re-index it in one shard and merge again")
    finally:
        for s in stores:
            s.close()
    return with_words


def _check_same_words(stores) -> None:
    a = stores[0]
    for b in stores[1:]:
        for key in ("modalities", "encoder", "dim"):
            if a.meta(key) != b.meta(key):
                raise ModelMismatchError(f"the words of {b.path.parent} have {key} {b.meta(key)!r}, those of "
                                         f"{a.path.parent} {a.meta(key)!r}; build every shard with the same "
                                         "--modalities and sentence model")


def _merge_words(index_dir: Path, shard_dirs: list[Path]) -> dict:
    """Copy each shard's words for videos the target lacks (or holds with other content), in path order."""
    import numpy as np

    from vidtune.index.text_search import TextIndex, has_text_index

    stores = [TextIndex.open(s) for s in shard_dirs]
    try:
        if not has_text_index(index_dir):
            TextIndex.create(index_dir, stores[0].modalities, stores[0].meta("encoder"), stores[0].meta("dim")).close()
        incoming = {}
        for s in stores:
            for path, digest in s.digests().items():
                incoming.setdefault(path, (s, digest))
        added = unchanged = 0
        with TextIndex.open(index_dir) as target:
            have = target.digests()
            for path in sorted(incoming):
                store, digest = incoming[path]
                if have.get(path) == digest:
                    unchanged += 1
                    continue
                duration, language = store.db.execute("SELECT duration, language FROM videos WHERE path=?",
                                                      (path,)).fetchone()
                rows = store.db.execute('SELECT modality, start, "end", text, vector FROM spans WHERE path=? '
                                        "ORDER BY id", (path,)).fetchall()
                vectors = np.stack([np.frombuffer(r[4], np.float32) for r in rows]) if rows else np.zeros((0, 1))
                target.replace_video(path, digest, duration, language, [r[:4] for r in rows], vectors)
                added += 1
            spans = target.db.execute("SELECT COUNT(*) FROM spans").fetchone()[0]
    finally:
        for s in stores:
            s.close()
    return {"videos_added": added, "videos_unchanged": unchanged, "spans": spans}


def _check_same(a: VideoIndex, b: VideoIndex) -> None:
    """``b``'s vectors must be comparable with ``a``'s: same model, same embedding parameters."""
    if a.model_id != b.model_id:
        raise ModelMismatchError(f"{b.root} was built with model {b.model_id!r}, {a.root} with {a.model_id!r}: "
                                 "vectors of different models are not comparable, so they cannot be merged; "
                                 "build every shard with the same --backbone/--weights/--run")
    if a.params != b.params or a.dim != b.dim:
        raise ModelMismatchError(f"{b.root} was built with embedding parameters {b.params} ({b.dim} dims), "
                                 f"{a.root} with {a.params} ({a.dim} dims); build every shard with the same "
                                 "--window/--stride/--fps/--tta")


def _collect(shards: list[VideoIndex]) -> dict:
    """path -> (shard, row) over all shards; the same path with other content in two shards is refused."""
    seen: dict[str, tuple[VideoIndex, object]] = {}
    for s in shards:
        for row in s.videos():
            prev = seen.get(row.path)
            if prev is None:
                seen[row.path] = (s, row)
            elif prev[1].digest != row.digest:
                raise IndexStoreError(f"{row.path} has different content in {prev[0].root} and {s.root} (the file "
                                      "changed between shard runs); re-embed it in one shard (`vidtune index add`) "
                                      "and merge again")
    return seen
