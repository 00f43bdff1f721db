"""Calibration of the words-search confidence: raw hybrid scores of right spans, wrong spans and nonsense
queries, and the logistic (Platt) fit behind ``vidtune.index.text_search.CONF_MID`` / ``CONF_SLOPE``.

The index holds the spoken sentences and the signs of ``bench/multimodal_search.py`` as spans (the text a
perfect transcript / OCR would give; that benchmark measures what Whisper and RapidOCR really read). Each
sentence is queried with its paraphrase and its exact words, each sign with its text and a paraphrase;
nonsense queries must find nothing.

    python bench/words_calibration.py
"""

from __future__ import annotations

import math
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from multimodal_search import SENTENCES, SIGNS  # noqa: E402

SIGN_PARAPHRASES = [("emergency exit", 0), ("parking not allowed", 1), ("slippery floor", 3),
                    ("art gallery in town", 5), ("open every day", 2)]
NONSENSE = ["xylophone quantum", "purple elephant dancing", "asdf qwerty", "banana helicopter",
            "quantum chromodynamics", "zebra saxophone", "lorem ipsum dolor", "how to knit a sweater",
            "volcano eruption lava", "submarine periscope", "cryptocurrency mining rig", "the moon is made of cheese",
            "giraffe", "photosynthesis in plants", "medieval castle siege"]


def queries() -> list[tuple[str, str, str]]:
    q = [(p, f"talk{i}", "paraphrase") for i, (_, p, _) in enumerate(SENTENCES)]
    q += [(e, f"talk{i}", "exact") for i, (_, _, e) in enumerate(SENTENCES)]
    q += [(s.lower(), f"sign{i}", "sign") for i, s in enumerate(SIGNS)]
    q += [(p, f"sign{i}", "sign paraphrase") for p, i in SIGN_PARAPHRASES]
    return q


def main() -> int:
    from sklearn.linear_model import LogisticRegression

    from vidtune.index import text_search as ts
    from vidtune.text.embed import SentenceEncoder

    enc = SentenceEncoder.default()
    root = tempfile.mkdtemp(prefix="words-calibration-")
    with ts.TextIndex.create(root, ("speech", "text"), enc.name, enc.dim) as tix:
        for i, (s, _, _) in enumerate(SENTENCES):
            tix.replace_video(f"talk{i}", "-", 10.0, "en", [("speech", 0.0, 3.0, s)], enc.encode([s]))
        for i, s in enumerate(SIGNS):
            tix.replace_video(f"sign{i}", "-", 5.0, "en", [("text", 1.0, 3.0, s)], enc.encode([s]))
        raw = lambda c: ts.CONF_MID - math.log(1 / c - 1) / ts.CONF_SLOPE  # noqa: E731 (confidence -> raw)
        xs, ys, right, top1 = [], [], {}, 0
        for q, want, kind in queries():
            res = tix.search(q, enc.encode([q])[0], k=40, min_score=0.0)
            top1 += res[0]["path"] == want
            for r in res:
                xs.append(raw(min(r["score"], 1 - 1e-9)))
                ys.append(int(r["path"] == want))
                if r["path"] == want:
                    right.setdefault(kind, []).append(r["score"])
        worst_nonsense = []
        for q in NONSENSE:
            res = tix.search(q, enc.encode([q])[0], k=40, min_score=0.0)
            xs += [raw(min(r["score"], 1 - 1e-9)) for r in res]
            ys += [0] * len(res)
            worst_nonsense.append((res[0]["score"], q, res[0]["text"]))
    x, y = np.array(xs)[:, None], np.array(ys)
    fit = LogisticRegression(class_weight="balanced", C=100).fit(x, y)
    a, b = float(fit.coef_[0][0]), float(fit.intercept_[0])
    print(f"top-1 right: {top1}/{len(queries())}")
    for kind, v in right.items():
        print(f"right span confidence, {kind:16s}: min {min(v):.3f} median {np.median(v):.3f} (n={len(v)})")
    for c, q, t in sorted(worst_nonsense, reverse=True)[:5]:
        print(f"nonsense {q!r}: best {c:.3f} ({t!r})")
    print(f"raw scores: right min {x[y == 1].min():.3f}, nonsense/wrong max {x[y == 0].max():.3f}; wrong spans "
          f"over the floor: {(x[y == 0, 0] >= ts.CONF_MID).sum()} of {(y == 0).sum()}")
    print(f"logistic fit: slope {a:.1f}, midpoint {-b / a:.3f} (in use: CONF_SLOPE {ts.CONF_SLOPE}, "
          f"CONF_MID {ts.CONF_MID})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
