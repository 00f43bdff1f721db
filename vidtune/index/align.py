"""Temporal alignment of a query's segment sequence against a database video's.

Local alignment (Smith-Waterman style) on the segment similarity matrix: a path moves forward in
both videos with steps (1, 1), (1, 2) or (2, 1), so it follows a copy played at 0.5x-2x speed,
and each cell adds ``similarity - threshold``. The best-scoring path is the aligned run of segments:
its first and last cells give the matching spans in the query and in the database video. This is
the "temporal network" idea of the VSC22 baselines with a dynamic programme instead of a graph
search; unlike a vote over a single time offset it survives speed changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# predecessor steps (di, dj) a path may take into a cell
STEPS = ((1, 1), (1, 2), (2, 1))


@dataclass(frozen=True)
class Alignment:
    """The best aligned run: segment index ranges (inclusive) and its scores."""

    q0: int
    q1: int
    d0: int
    d1: int
    gain: float  # the path's summed (similarity - threshold)
    mean_sim: float  # mean similarity over the path's cells
    max_sim: float
    cells: int  # number of matched cells on the path

    @property
    def score(self) -> float:
        """Calibrated across queries of any length: the path's mean similarity, discounted for
        paths of a single cell (one lucky segment pair is weak evidence of a copy)."""
        return self.mean_sim - (0.05 if self.cells < 2 else 0.0)


def align(sim: np.ndarray, threshold: float = 0.5) -> Alignment | None:
    """Best local alignment in ``sim`` ``(Nq, Nd)``; None when no cell exceeds ``threshold``."""
    sim = np.asarray(sim, np.float64)
    nq, nd = sim.shape
    if nq == 0 or nd == 0 or sim.max() <= threshold:
        return None
    gain = sim - threshold
    h = np.zeros((nq + 2, nd + 2))  # padded by two rows/columns of zeros: H[i+2, j+2] is cell (i, j)
    back = np.zeros((nq, nd), np.int8)  # 0: path starts here, k: came by STEPS[k-1]
    for i in range(nq):
        cands = np.stack([h[i + 2 - di, 2 - dj : 2 - dj + nd] for di, dj in STEPS])  # (3, Nd)
        best = cands.argmax(0)
        prev = cands[best, np.arange(nd)]
        start = prev <= 0
        val = gain[i] + np.where(start, 0.0, prev)
        back[i] = np.where(start, 0, best + 1)
        h[i + 2, 2:] = np.maximum(val, 0.0)
        back[i][val <= 0] = 0
    i, j = np.unravel_index(int(np.argmax(h[2:, 2:])), (nq, nd))
    total = float(h[i + 2, j + 2])
    if total <= 0:
        return None
    q1, d1 = int(i), int(j)
    cells = [(q1, d1)]
    while back[i, j] != 0:
        di, dj = STEPS[back[i, j] - 1]
        i, j = i - di, j - dj
        cells.append((int(i), int(j)))
    vals = np.array([sim[a, b] for a, b in cells])
    return Alignment(q0=int(i), q1=q1, d0=int(j), d1=d1, gain=total, mean_sim=float(vals.mean()),
                     max_sim=float(vals.max()), cells=len(cells))
