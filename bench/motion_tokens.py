"""Ablation of the attention/transformer heads' inputs on the motion task (frozen Lite0 tokens).

Trains each head on K=16 clips per class of the motion target task (left/right/up/down/clockwise/
anticlockwise) from cached frozen features and scores the held-out test set, with:

* ``appearance``: space-time tokens only (``--no-motion-tokens``);
* ``motion_only``: only the per-frame motion cues (:func:`vidtune.models.heads.motion_summary`);
* ``both_no_dropout``: both, without modality dropout;
* ``both``: both, appearance tokens of half the clips dropped in training (the default heads).

Uses the data and feature cache of ``bench/transfer.py`` (run that first, or this writes the data
and computes the features itself).

    python bench/motion_tokens.py [--grid 3] [--seeds 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from _common import CACHE  # noqa: E402
from torch import nn  # noqa: E402
from transfer import make_data  # noqa: E402

from vidtune.data.manifest import load_dataset  # noqa: E402
from vidtune.models.backbones import create_backbone  # noqa: E402
from vidtune.models.heads import create_head, motion_summary  # noqa: E402
from vidtune.runs.features import extract_features, open_cache, sampling_for  # noqa: E402


def load(grid: int):
    data = make_data(CACHE / "transfer", "motion", 16, 10)
    enc = create_backbone("efficientnet_lite0").set_grid(grid)
    cache = open_cache(CACHE / "transfer" / "features")
    out = []
    for split, mode, views in (("train", "grid", 3), ("test", "centre", 1)):
        items = load_dataset(data[split])
        f, _ = extract_features(enc, items, sampling_for(enc, 8, mode, views), device=torch.device("cpu"),
                                cache=cache, workers=1)
        labels = sorted({i.label for i in items})
        out += [torch.stack([f[i] for i in sorted(f)]), torch.tensor([labels.index(items[i].label) for i in sorted(f)])]
    return out


def run(kind, variant, x_tr, y_tr, x_te, y_te, grid, seed, steps=300):
    torch.manual_seed(seed)
    g = grid * grid
    k = int(y_tr.max()) + 1
    if variant == "motion_only":
        head = create_head(kind, g + g * g, k, 8, grid=1, motion=False, dim=64)
        f = motion_summary
    else:
        head = create_head(kind, x_tr.shape[-1], k, 8, grid=grid, motion=variant != "appearance")
        if variant == "both_no_dropout":
            head.tokens.appearance_drop = 0.0
        f = lambda x: x  # noqa: E731
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 1e-3, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        b = torch.randint(len(y_tr), (16,), generator=gen)
        v = torch.randint(x_tr.shape[2], (16, x_tr.shape[1]), generator=gen)  # a cached view per segment
        x = x_tr[b].gather(2, v[:, :, None, None, None].expand(-1, -1, 1, *x_tr.shape[3:]))[:, :, 0]
        head.train()
        loss = nn.functional.cross_entropy(head(f(x)), y_tr[b], label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    head.eval()
    with torch.no_grad():
        return float((head(f(x_te[:, :, 0])).argmax(1) == y_te).float().mean())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    x_tr, y_tr, x_te, y_te = load(args.grid)
    print(f"motion task, frozen Lite0 {args.grid}x{args.grid} tokens, K=16 per class, {len(y_te)} test clips "
          f"(chance {1 / (int(y_tr.max()) + 1):.0%})")
    for kind in ("attention", "transformer"):
        for variant in ("appearance", "both_no_dropout", "motion_only", "both"):
            t0 = time.perf_counter()
            accs = [run(kind, variant, x_tr, y_tr, x_te, y_te, args.grid, s) for s in range(args.seeds)]
            print(f"{kind:<11} {variant:<16} test top-1 " + " ".join(f"{a:.3f}" for a in accs)
                  + f"  ({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
