"""Train/validation splits and few-shot subsets that never put one source on both sides.

Clips cut from one video, or rendered from one photo, look alike: if some of them train the model
and others validate it, validation measures memory, not transfer. Every :class:`VideoItem` has a
group (a manifest's ``group`` column, else its source file), and a group is never divided:

- :func:`stratified_split` holds out about ``val_fraction`` of each class (multi-label: of each
  label's positives) in whole groups, seeded; a class with clips in two or more groups always gets
  a validation clip and always keeps a training clip. When every group is a single clip this is
  the plain per-class split.
- :func:`few_shot` takes K clips per class, spread over as many groups as it can (K different
  sources say more than K cuts of one), nested in K.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict

import numpy as np

from vidtune.data.manifest import SPLITS, VideoItem, parse_labels
from vidtune.errors import ConfigError
from vidtune.utils import stable_int

log = logging.getLogger(__name__)


def _strata(items: list[VideoItem]) -> dict[str, str]:
    """The class each item is stratified by: its label, or (multi-label) its rarest label."""
    freq = Counter(lab for it in items for lab in parse_labels(it.label))
    out = {}
    for it in items:
        labs = parse_labels(it.label)
        out[it.sort_key()] = it.label if len(labs) < 2 else min(labs, key=lambda lab: (freq[lab], lab))
    return out


def stratified_split(items: list[VideoItem], val_fraction: float, seed: int) -> dict[str, list[VideoItem]]:
    """Train/val(/test) lists. A manifest's ``split`` column wins; otherwise a seeded split by
    class and by group (see the module docstring)."""
    if any(it.split for it in items):
        out = {s: [it for it in items if (it.split or "train") == s] for s in SPLITS}
        _warn_shared_groups(out)
        if not out["val"] and val_fraction > 0:
            rest = stratified_split(out["train"], val_fraction, seed)
            out["train"], out["val"] = rest["train"], rest["val"]
        return out
    if not 0 <= val_fraction < 1:
        raise ConfigError("val_split", f"must be in [0, 1), got {val_fraction}")
    groups = _groups(items)
    if all(len(g) == 1 for g in groups.values()):
        return _split_items(items, val_fraction, seed)
    return _split_groups(items, groups, val_fraction, seed)


def _groups(items: list[VideoItem]) -> dict[str, list[VideoItem]]:
    groups: dict[str, list[VideoItem]] = defaultdict(list)
    for it in sorted(items, key=VideoItem.sort_key):
        groups[it.group_key()].append(it)
    return groups


def _split_items(items, val_fraction, seed):
    """One clip per group: hold out a share of each class (the split vidtune always made)."""
    rng = np.random.default_rng(seed)
    strata = _strata(items)
    by_class: dict[str, list[VideoItem]] = defaultdict(list)
    for it in items:
        by_class[strata[it.sort_key()]].append(it)
    train, val = [], []
    for label in sorted(by_class):
        group = sorted(by_class[label], key=VideoItem.sort_key)
        order = rng.permutation(len(group))
        n_val = int(round(len(group) * val_fraction))
        if val_fraction > 0 and len(group) >= 2:
            n_val = min(max(n_val, 1), len(group) - 1)
        else:
            n_val = 0
        val.extend(group[i] for i in order[:n_val])
        train.extend(group[i] for i in order[n_val:])
    return {"train": train, "val": val, "test": []}


def _split_groups(items, groups, val_fraction, seed):
    """Whole groups to validation, greedily, until each class has about its share there.

    Groups are visited in a seeded random order, those holding the rarest classes first; a group
    goes to validation when that brings its classes closer to their targets than it overshoots
    them, and never when it would take a class's last training group. A class still without a
    validation clip then gets its smallest group that can go.
    """
    if val_fraction == 0:
        return {"train": sorted(items, key=VideoItem.sort_key), "val": [], "test": []}
    rng = np.random.default_rng(seed)
    strata = _strata(items)
    counts = {g: Counter(strata[it.sort_key()] for it in members) for g, members in groups.items()}
    total = Counter(strata[it.sort_key()] for it in items)
    n_groups = Counter(c for g in groups for c in counts[g])  # groups holding each class
    target = {c: (max(1, int(round(n * val_fraction))) if n_groups[c] >= 2 else 0) for c, n in total.items()}
    keys = sorted(groups)
    shuffled = [keys[i] for i in rng.permutation(len(keys))]
    shuffled.sort(key=lambda g: min(n_groups[c] for c in counts[g]))  # stable: random within equal rarity
    in_val: Counter = Counter()
    train_groups_left = Counter(n_groups)
    val_keys = set()
    for g in shuffled:
        need = {c: target[c] - in_val[c] for c in counts[g]}
        gain = sum(min(n, max(need[c], 0)) for c, n in counts[g].items())
        over = sum(max(0, n - max(need[c], 0)) for c, n in counts[g].items())
        if gain > 0 and gain >= over and all(train_groups_left[c] > 1 for c in counts[g]):
            val_keys.add(g)
            in_val.update(counts[g])
            for c in counts[g]:
                train_groups_left[c] -= 1
    # second pass: a class still without validation gets its smallest group that can go
    for c in sorted(total, key=lambda c: (n_groups[c], c)):
        if not target[c] or in_val[c]:
            continue
        fits = [g for g in shuffled if g not in val_keys and c in counts[g]
                and all(train_groups_left[d] > 1 for d in counts[g])]
        if fits:
            g = min(fits, key=lambda g: sum(counts[g].values()))
            val_keys.add(g)
            in_val.update(counts[g])
            for d in counts[g]:
                train_groups_left[d] -= 1
    train = [it for g in keys if g not in val_keys for it in groups[g]]
    val = [it for g in keys if g in val_keys for it in groups[g]]
    missing = sorted(c for c in total if target[c] and not in_val[c])
    if missing:
        log.warning("no validation clip for %s: every group that holds them also holds classes that need "
                    "their training groups", ", ".join(map(repr, missing[:5])))
    return {"train": train, "val": val, "test": []}


def _warn_shared_groups(splits: dict[str, list[VideoItem]]) -> None:
    """A manifest's own split column may still put one source on two sides: say so."""
    seen: dict[str, str] = {}
    shared = set()
    for name in SPLITS:
        for it in splits[name]:
            other = seen.setdefault(it.group_key(), name)
            if other != name:
                shared.add(it.group_key())
    if shared:
        log.warning("%d source(s) have clips in more than one split (e.g. %s): scores on the held-out clips "
                    "will be optimistic; give such rows one split, or a group column", len(shared),
                    sorted(shared)[0])


def few_shot(items: list[VideoItem], shots: int, seed: int) -> list[VideoItem]:
    """``shots`` clips per class, a seeded choice that does not depend on the input order.

    Clips are taken round-robin over the class's groups in a seeded order (one clip from each
    source before a second from any), and choices are nested: the 4-shot set contains the 2-shot
    set, so a K sweep only adds clips.
    """
    by_class: dict[str, list[VideoItem]] = {}
    for it in sorted(items, key=VideoItem.sort_key):
        by_class.setdefault(it.label, []).append(it)
    chosen = []
    for label, members in sorted(by_class.items()):
        rng = np.random.default_rng([seed, stable_int(label)])
        groups: dict[str, list[VideoItem]] = defaultdict(list)
        for it in members:
            groups[it.group_key()].append(it)
        order = [sorted(groups)[i] for i in rng.permutation(len(groups))]
        queues = [[groups[g][i] for i in rng.permutation(len(groups[g]))] for g in order]
        ranked = [q[r] for r in range(max(map(len, queues))) for q in queues if r < len(q)]
        if len(ranked) < shots:
            log.warning("class %r has only %d training videos (--shots %d); using all of them", label, len(ranked),
                        shots)
        chosen += ranked[:shots]
    return chosen
