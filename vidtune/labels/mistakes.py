"""Which labels are probably wrong: out-of-fold predictions, then confident learning (cleanlab).

Every clip of a labelled dataset gets class probabilities from a head that never saw it: the data is
split into ``folds`` parts, stratified by class (and, where the manifest has a ``group`` column, never
dividing a group, so near-copies of a clip cannot vouch for its label), and a head trained on the
other parts scores each one. The head is a logistic regression on each clip's pooled cached features
(the mean frame feature, plus the mean and spread of the optical-flow cues with ``flow``), the mean
head of ``vidtune train`` fitted to convergence: seconds for thousands of clips once the features are
cached. cleanlab's confident learning (Northcutt et al. 2021) then estimates the joint distribution of
given and true labels from those probabilities and flags the clips whose label disagrees with it;
every clip is ranked by one minus cleanlab's label quality score (self-confidence).

Multi-label manifests (``a|b`` cells) are supported: one-vs-rest heads and cleanlab's multi-label
filter and ranking.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from vidtune.data.manifest import VideoItem, is_multilabel, item_labels, load_dataset
from vidtune.errors import ConfigError, DatasetError
from vidtune.labels.features import BackboneOptions, backbone_features
from vidtune.labels.writers import manifest_path, write_csv
from vidtune.progress import NullProgress, Progress

log = logging.getLogger(__name__)

DEFAULT_FOLDS = 5
C_REG = 0.01  # inverse L2 strength of the logistic heads on standardised features


@dataclass
class Mistake:
    """One labelled clip, scored: ``score`` in [0, 1], higher = more likely mislabelled."""

    path: str
    start: float | None
    end: float | None
    label: str
    suggested: str
    score: float
    issue: bool = False  # flagged by confident learning

    def to_dict(self) -> dict:
        """The public JSON shape (``issue`` is implied by being listed)."""
        d = asdict(self)
        d.pop("issue")
        return d


@dataclass
class MistakesReport:
    ranked: list[Mistake]  # every scored clip, most suspicious first
    estimated_noise: float  # cleanlab's estimate of the fraction of wrong labels
    labels: list[str]
    multilabel: bool
    folds: int
    skipped: list[dict] = field(default_factory=list)
    items: list[VideoItem] = field(default_factory=list)  # the dataset as read

    @property
    def issues(self) -> list[Mistake]:
        return [m for m in self.ranked if m.issue]

    def to_dict(self, top: int | None = None) -> dict:
        shown = self.ranked[:top] if top else self.issues
        return {"results": [m.to_dict() for m in shown], "estimated_noise": round(float(self.estimated_noise), 6)}


def _require_cleanlab():
    try:
        import cleanlab  # noqa: F401
    except ImportError:
        from vidtune.errors import MissingExtraError

        raise MissingExtraError("vidtune mistakes", "cleanlab", "labels") from None


def find_mistakes(data, *, folds: int = DEFAULT_FOLDS, backbone: str | None = None, weights: str | None = None,
                  pretrained: bool = True, frames: int = 8, flow: bool = False, task: str = "auto",
                  background: str | None = None, seed: int = 0, device: str = "auto", workers: int | None = None,
                  cache_dir=None, use_cache: bool = True, progress: Progress | None = None) -> MistakesReport:
    """Rank the clips of ``data`` (class folders or a manifest) by how likely their label is wrong."""
    _require_cleanlab()
    if not isinstance(folds, int) or folds < 2:
        raise ConfigError("folds", f"must be a whole number >= 2, got {folds!r}")
    if task not in ("auto", "single_label", "multilabel"):
        raise ConfigError("task", f"must be auto, single_label or multilabel, got {task!r}")
    items = load_dataset(data, multilabel=True if task == "multilabel" else None)
    multilabel = task == "multilabel" or (task == "auto" and is_multilabel(items))
    opts = BackboneOptions(frames=frames, flow=flow, weights=weights, pretrained=pretrained, device=device,
                           workers=workers, cache_dir=cache_dir, use_cache=use_cache)
    if backbone:
        opts.backbone = backbone
    feats = backbone_features(items, opts, progress or NullProgress(), description="features")
    used = [items[i] for i in feats.index]
    if len(used) < 4:
        raise DatasetError(f"{len(used)} readable clip(s) in {data}: too few to cross-validate "
                           f"({len(feats.skipped)} skipped)")
    x = feats.pooled()
    motion = 2 * feats.flow_channels  # mean and spread of each flow cue
    groups = [it.group_key() for it in used] if any(it.group for it in used) else None
    if multilabel:
        labels = sorted({lab for it in used for lab in item_labels(it, background)})
        if not labels:
            raise DatasetError(f"{data}: no positive labels to check")
        y = np.zeros((len(used), len(labels)), dtype=np.int64)
        for r, it in enumerate(used):
            for lab in item_labels(it, background):
                y[r, labels.index(lab)] = 1
        strata = _rarest(y)
        probs, n_folds = _oof(x, y, strata, groups, folds, seed, multilabel=True, motion=motion)
        report = _cleanlab_multilabel(used, y, probs, labels)
    else:
        labels = sorted({it.label for it in used})
        if len(labels) < 2:
            raise DatasetError(f"{data}: one class ({labels[0]!r}); checking labels needs two or more")
        y = np.array([labels.index(it.label) for it in used])
        probs, n_folds = _oof(x, y, y, groups, folds, seed, multilabel=False, motion=motion)
        report = _cleanlab_single(used, y, probs, labels)
    ranked, noise = report
    return MistakesReport(ranked, noise, labels, multilabel, n_folds, feats.skipped, items)


def _rarest(y: np.ndarray) -> np.ndarray:
    """Each multi-hot row's stratum: its rarest positive label (or -1 for none)."""
    freq = y.sum(axis=0)
    out = np.full(len(y), -1)
    for r in range(len(y)):
        pos = np.flatnonzero(y[r])
        if len(pos):
            out[r] = int(pos[np.argmin(freq[pos])])
    return out


def _splitter(strata: np.ndarray, groups, folds: int, seed: int):
    """Stratified (grouped where there are groups) folds; fewer folds when a class or the groups are few."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    counts = Counter(strata.tolist())
    smallest = min(counts.values())
    k = min(folds, max(2, smallest))
    if groups is not None:
        k = min(k, len(set(groups)))
        if k < 2:
            raise DatasetError("every clip is in one group: a grouped cross-validation needs two or more groups "
                               "(remove the group column, or give clips of unrelated sources other groups)")
        return StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed), k
    return StratifiedKFold(n_splits=k, shuffle=True, random_state=seed), k


def _oof(x: np.ndarray, y: np.ndarray, strata: np.ndarray, groups, folds: int, seed: int, multilabel: bool,
         motion: int = 0):
    """Out-of-fold probabilities ``(N, K)``: softmax over classes, or one sigmoid per label."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    counts = Counter(strata.tolist())
    rare = sorted(c for c, n in counts.items() if n < 2)
    if rare:
        log.warning("%d class(es) have a single clip; their label cannot be checked against others", len(rare))
    splitter, k = _splitter(strata, groups, folds, seed)
    n_out = y.shape[1] if multilabel else int(y.max()) + 1
    probs = np.zeros((len(x), n_out))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", UserWarning)  # "The least populated class has only 1 member"
        for tr, te in splitter.split(x, strata, groups):
            scaler = StandardScaler().fit(x[tr])
            xtr, xte = (_balance_blocks(scaler.transform(x[s]), motion) for s in (tr, te))
            if multilabel:
                for j in range(n_out):
                    yj = y[tr, j]
                    if yj.min() == yj.max():  # this label is all-or-nothing in the training part
                        probs[te, j] = float(yj.mean())
                        continue
                    clf = LogisticRegression(C=C_REG, max_iter=2000).fit(xtr, yj)
                    probs[te, j] = clf.predict_proba(xte)[:, 1]
            else:
                clf = fit_linear_head(x[tr], y[tr], motion=motion)
                p = np.full((len(te), n_out), 1e-6)
                p[:, clf.classes_] = clf.predict_proba(x[te])
                probs[te] = p / p.sum(axis=1, keepdims=True)
    return probs, k


def _balance_blocks(x: np.ndarray, motion: int = 0) -> np.ndarray:
    """Standardised features with the last ``motion`` columns (flow-cue statistics) scaled up so that the
    motion block weighs as much as the appearance block under the L2 penalty."""
    if not motion:
        return x
    x = np.array(x, dtype=np.float64)
    x[:, -motion:] *= np.sqrt(max(x.shape[1] - motion, 1) / motion)
    return x


def fit_linear_head(x: np.ndarray, y: np.ndarray, c: float = C_REG, motion: int = 0):
    """A logistic-regression head on standardised pooled features (``predict_proba`` over ``classes_``).

    ``motion``: the number of trailing flow-cue columns (:meth:`ClipFeatures.pooled`). Without balancing,
    the 1,280 appearance dimensions drown the 38 motion ones: on camera motion over unseen photos (8
    labels per class) a head read 0.39-0.58 test top-1, with the blocks balanced 0.94-0.98."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    return make_pipeline(StandardScaler(), FunctionTransformer(_balance_blocks, kw_args={"motion": motion}),
                         LogisticRegression(C=c, max_iter=2000)).fit(x, y)


def _cleanlab_single(items: list[VideoItem], y: np.ndarray, probs: np.ndarray, labels: list[str]):
    from cleanlab.count import num_label_issues
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    issue = find_label_issues(labels=y, pred_probs=probs)
    quality = get_label_quality_scores(labels=y, pred_probs=probs)
    noise = num_label_issues(labels=y, pred_probs=probs) / len(y)
    pred = probs.argmax(axis=1)
    ranked = [Mistake(str(it.path), it.start, it.end, it.label, labels[int(pred[r])], round(float(1 - quality[r]), 6),
                      bool(issue[r])) for r, it in enumerate(items)]
    order = np.argsort(quality, kind="stable")
    return [ranked[i] for i in order], float(noise)


def _cleanlab_multilabel(items: list[VideoItem], y: np.ndarray, probs: np.ndarray, labels: list[str]):
    from cleanlab.multilabel_classification.filter import find_label_issues
    from cleanlab.multilabel_classification.rank import get_label_quality_scores

    given = [np.flatnonzero(row).tolist() for row in y]
    issue = find_label_issues(labels=given, pred_probs=probs)
    quality = get_label_quality_scores(labels=given, pred_probs=probs)
    ranked = []
    for r, it in enumerate(items):
        suggested = "|".join(labels[j] for j in np.argsort(-probs[r], kind="stable") if probs[r, j] >= 0.5)
        ranked.append(Mistake(str(it.path), it.start, it.end, it.label, suggested, round(float(1 - quality[r]), 6),
                              bool(issue[r])))
    order = np.argsort(quality, kind="stable")
    return [ranked[i] for i in order], float(np.mean(issue))


def write_suggested_manifest(report: MistakesReport, out, top: int | None = None) -> Path:
    """The dataset as a CSV manifest (``path,label,split,start,end,group,suggested``), rows in their order,
    ``suggested`` filled for the flagged clips (or the ``top`` most suspicious), empty elsewhere; clips
    that could not be read are kept with an empty ``suggested``. Written atomically."""
    chosen = report.ranked[:top] if top else report.issues
    flagged = {(m.path, m.start, m.end): m.suggested for m in chosen}
    rows = [[manifest_path(it.path, out), it.label, it.split or "", "" if it.start is None else f"{it.start:g}",
             "" if it.end is None else f"{it.end:g}", it.group or "", flagged.get((str(it.path), it.start, it.end), "")]
            for it in report.items]
    return write_csv(out, ["path", "label", "split", "start", "end", "group", "suggested"], rows)
