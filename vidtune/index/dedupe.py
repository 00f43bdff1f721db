"""Near-duplicate detection over an index: every pair of videos that shares content, and clean manifests.

Each indexed video's own segment sequence is aligned (see :mod:`vidtune.index.align`) against the
other videos found by its segments' nearest neighbours; a pair whose alignment score reaches the
threshold is reported once, with the shared span in each video. Pairs are merged into groups
(connected components), which is what a training set must treat as one: drop all but one member,
or keep all members in the same split so that no copy leaks between train and test.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

from vidtune.errors import ConfigError, DatasetError
from vidtune.progress import NullProgress, Progress

POLICIES = ("drop", "same-split")


def find_duplicates(index_dir, threshold: float = 0.8, device: str = "auto", cache_dir=None, use_cache: bool = True,
                    progress: Progress | None = None) -> dict:
    """``{"pairs": [{"a", "b", "a_start", "a_end", "b_start", "b_end", "score"}], "groups": [[path, ...]]}``."""
    from vidtune.index.search import Searcher

    if not -1.0 <= threshold <= 1.0:
        raise ConfigError("threshold", f"is a similarity between -1 and 1, got {threshold}")
    with Searcher(index_dir, device, cache_dir, use_cache) as s:
        result = duplicates_in(s, threshold, progress)
    return {"index": str(index_dir), **result}


def duplicates_in(s, threshold: float = 0.8, progress: Progress | None = None) -> dict:
    """:func:`find_duplicates` on an open :class:`~vidtune.index.search.Searcher` (``vidtune serve`` keeps one)."""
    progress = progress or NullProgress()
    if not -1.0 <= threshold <= 1.0:
        raise ConfigError("threshold", f"is a similarity between -1 and 1, got {threshold}")
    pairs: dict[tuple[int, int], dict] = {}
    videos = s.ix.videos()
    paths = {v.id: v.path for v in videos}
    with progress.task(f"comparing {len(videos)} videos", total=len(videos)) as task:
        for v in videos:
            ids, starts, ends = s.ix.video_segments(v.id)
            if len(ids) == 0:
                task.advance(1)
                continue
            found = s.search_vectors(s.ix.vectors(ids), k=len(videos), q_starts=starts, q_ends=ends,
                                     exclude={v.id}, min_score=threshold, with_ids=True)
            for r in found:
                a, b = v.id, r["video_id"]
                key = (min(a, b), max(a, b))
                if a == key[0]:
                    row = {"a": paths[a], "b": paths[b], "a_start": r["query_start"], "a_end": r["query_end"],
                           "b_start": r["start"], "b_end": r["end"], "score": r["score"]}
                else:
                    row = {"a": paths[b], "b": paths[a], "a_start": r["start"], "a_end": r["end"],
                           "b_start": r["query_start"], "b_end": r["query_end"], "score": r["score"]}
                if key not in pairs or row["score"] > pairs[key]["score"]:
                    pairs[key] = row
            task.advance(1)
    rows = sorted(pairs.values(), key=lambda r: (-r["score"], r["a"], r["b"]))
    return {"threshold": threshold, "videos": len(videos), "pairs": rows, "groups": duplicate_groups(rows)}


def duplicate_groups(pairs: list[dict]) -> list[list[str]]:
    """Connected components of the duplicate pairs (union-find), each sorted, largest first."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for p in pairs:
        ra, rb = find(p["a"]), find(p["b"])
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[str, list[str]] = {}
    for x in list(parent):
        groups.setdefault(find(x), []).append(x)
    return sorted((sorted(g) for g in groups.values()), key=lambda g: (-len(g), g))


def write_pairs_csv(path, pairs: list[dict]) -> None:
    from vidtune.utils import atomic_path

    cols = ["a", "b", "a_start", "a_end", "b_start", "b_end", "score"]
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        w.writerows({c: p[c] for c in cols} for p in pairs)


def _norm(p) -> str:
    return str(Path(p).resolve())


def write_dedup_manifest(data, out, groups: list[list[str]], policy: str = "drop") -> dict:
    """Write ``data`` (a dataset folder or manifest) to ``out`` (.csv or .jsonl) without duplicate leaks.

    ``drop``: each duplicate group keeps one video (one already in ``train`` if any, else the first
    by path). ``same-split``: every member of a group gets the split most of its members have
    (``train`` on ties), so no copy sits on both sides of a train/test boundary.
    """
    import json

    from vidtune.data.manifest import load_dataset
    from vidtune.utils import atomic_write_text

    if policy not in POLICIES:
        raise ConfigError("policy", f"must be one of {', '.join(POLICIES)}, got {policy!r}")
    out = Path(out)
    if out.suffix.lower() not in (".csv", ".jsonl"):
        raise ConfigError("write_manifest", f"{out}: use a .csv or .jsonl file name")
    items = load_dataset(data)
    group_of: dict[str, int] = {}
    for g, members in enumerate(groups):
        for m in members:
            group_of[_norm(m)] = g
    by_group: dict[int, list[int]] = {}
    for i, it in enumerate(items):
        g = group_of.get(_norm(it.path))
        if g is not None:
            by_group.setdefault(g, []).append(i)
    keep = [True] * len(items)
    split = [it.split for it in items]
    dropped = moved = 0
    if policy == "same-split" and by_group and all(it.split is None for it in items):
        raise DatasetError(f"{data} has no split column, so there is no split to keep duplicates in; use "
                           "--policy drop, or a manifest with a split column (train/val/test)")
    for members in by_group.values():
        if len(members) < 2:
            continue
        if policy == "drop":
            trains = [i for i in members if items[i].split == "train"]
            first = trains[0] if trains else min(members, key=lambda i: str(items[i].path))
            for i in members:
                if i != first:
                    keep[i] = False
                    dropped += 1
        else:
            counts = Counter(items[i].split for i in members if items[i].split)
            target = max(counts, key=lambda s: (counts[s], s == "train")) if counts else "train"
            for i in members:
                if split[i] != target:
                    split[i] = target
                    moved += 1
    rows = []
    for i, it in enumerate(items):
        if not keep[i]:
            continue
        row = {"path": str(Path(it.path).resolve()), "label": it.label}
        if split[i] is not None:
            row["split"] = split[i]
        if it.start is not None:
            row["start"] = it.start
        if it.end is not None:
            row["end"] = it.end
        rows.append(row)
    if out.suffix.lower() == ".jsonl":
        atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    else:
        cols = [c for c in ("path", "label", "split", "start", "end") if any(c in r for r in rows)]
        import io

        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
        atomic_write_text(out, buf.getvalue())
    return {"out": str(out), "rows": len(rows), "dropped": dropped, "moved": moved, "policy": policy}
