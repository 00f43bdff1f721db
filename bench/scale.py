"""Scale out, measured side by side in one run on this machine.

  embed   the same real videos embedded by 1 process, by 2 shard processes (``--shard I/2``, one
          thread each) and by Ray with 2 CPU actors (``--engine ray``); wall time of the whole
          commands (start-up included), speed-up and scaling efficiency (speed-up / workers), and
          the largest difference between the vectors of each mode and the 1-process ones
  train   ``vidtune train`` end to end (partial) on the sample task: 1 process vs ``torchrun
          --nproc-per-node 2`` (gloo); time and whether the validation metrics match
  index   IVF-PQ vs exact search on N clustered and N random 1280-d vectors (Lite0's width): bytes
          per vector (serialised index / N), build time (train + add), recall@10 of the exact top 10,
          p50 latency of single queries at several nprobe

    python bench/scale.py [--parts embed,train,index] [--vectors 100000,1000000] [--queries 200]

Every figure comes from the run itself; the machine is shared and noisy, so compare the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def _env(threads: int | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(k, None)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def _vidtune(*args, threads=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vidtune", *map(str, args)], env=_env(threads), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait(procs) -> list[dict]:
    outs = []
    for p in procs:
        out, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"command failed ({p.returncode}): {p.args}\n{err[-2000:]}")
        outs.append(json.loads(out) if out.strip().startswith("{") else {})
    return outs


def _vectors(out_dirs) -> dict:
    vec = {}
    for d in out_dirs:
        meta = json.loads((Path(d) / "embeddings.json").read_text())
        arr = np.load(Path(d) / "videos.npy")
        for k, v in enumerate(meta["videos"]):
            vec[v["path"]] = arr[k]
    return vec


# -- embed ------------------------------------------------------------------------------------------
def bench_embed(tmp: Path) -> list[dict]:
    from realworld_data import VIDEOS, video_path

    files = []
    for name in VIDEOS:
        try:
            files.append(video_path(name))
        except (FileNotFoundError, SystemExit) as exc:
            print(f"  ({name} unavailable: {exc})")
    seconds = 0.0
    import av

    for f in files:
        with av.open(str(f)) as c:
            seconds += float(c.duration or 0) / 1e6
    print(f"embed: {len(files)} real videos, {seconds:.0f} s of footage, Lite0 (flip TTA), fps 2, no cache")
    common = ["--json", "-q", "--device", "cpu", "--no-cache"]
    rows = []
    t0 = time.perf_counter()
    _wait([_vidtune("embed", *files, "--out", tmp / "one", *common)])
    rows.append({"mode": "1 process", "workers": 1, "seconds": time.perf_counter() - t0, "outs": [tmp / "one"]})
    t0 = time.perf_counter()
    _wait([_vidtune("embed", *files, "--out", tmp / f"shard{i}", "--shard", f"{i}/2", *common, threads=1)
           for i in range(2)])
    rows.append({"mode": "2 shards (--shard I/2, 1 thread each)", "workers": 2, "seconds": time.perf_counter() - t0,
                 "outs": [tmp / "shard0", tmp / "shard1"]})
    t0 = time.perf_counter()
    _wait([_vidtune("embed", *files, "--out", tmp / "ray", "--engine", "ray", "--ray-workers", "2", *common)])
    rows.append({"mode": "Ray, 2 CPU actors (local ray.init)", "workers": 2, "seconds": time.perf_counter() - t0,
                 "outs": [tmp / "ray"]})
    ref = _vectors(rows[0]["outs"])
    base = rows[0]["seconds"]
    print("\n| mode | workers | wall s | videos/s | speed-up | scaling efficiency | max vector diff |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        got = _vectors(r["outs"])
        assert set(got) == set(ref), "a mode lost or added videos"
        diff = max(float(np.abs(got[k] - ref[k]).max()) for k in ref)
        speed = base / r["seconds"]
        print(f"| {r['mode']} | {r['workers']} | {r['seconds']:.1f} | {len(files) / r['seconds']:.3f} | "
              f"{speed:.2f}x | {speed / r['workers']:.0%} | {diff:.1e} |")
    return rows


# -- train ------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_train(tmp: Path) -> None:
    data = tmp / "sample"
    _wait([_vidtune("sample-data", data, "--classes", "4", "--per-class", "6", "--json", "-q")])
    args = ["train", data, "--strategy", "partial", "--frames", "4", "--epochs", "2", "--batch-size", "8",
            "--workers", "0", "--device", "cpu", "--balance", "none", "--no-cache", "--json", "-q"]
    print("\ntrain: sample task (4 classes x 6 videos), Lite0 partial fine-tune, 4 frames, 2 epochs, batch 8")
    t0 = time.perf_counter()
    one = _wait([_vidtune(*args, "--out", tmp / "run1")])[0]
    t_one = time.perf_counter() - t0
    t0 = time.perf_counter()
    one_t1 = _wait([_vidtune(*args, "--out", tmp / "run1t", threads=1)])[0]
    t_one_t1 = time.perf_counter() - t0
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
                           "127.0.0.1", "--master-port", str(_free_port()), "-m", "vidtune",
                           *map(str, args), "--out", str(tmp / "run2")], env=_env(1), cwd=ROOT, capture_output=True,
                          text=True)
    t_two = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    two = json.loads(proc.stdout)
    from safetensors.torch import load_file

    a, b = load_file(str(tmp / "run1" / "last.safetensors")), load_file(str(tmp / "run2" / "last.safetensors"))
    diff = max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())
    print("\n| run | wall s | training s (in the run) | val top-1 | val mean class acc. |")
    print("|---|---|---|---|---|")
    for name, t, r in (("1 process (2 threads)", t_one, one), ("1 process (1 thread)", t_one_t1, one_t1),
                       ("torchrun 2 x gloo (1 thread each)", t_two, two)):
        print(f"| {name} | {t:.1f} | {r['seconds']:.1f} | {r['val']['top1']:.3f} | "
              f"{r['val']['mean_class_accuracy']:.3f} |")
    print(f"2 processes take {t_two / t_one:.2f}x the wall time of 1 process (2 threads), {t_two / t_one_t1:.2f}x "
          f"of 1 process (1 thread); largest weight difference after training "
          f"{diff:.1e} (dropout masks differ per rank)")


# -- index ------------------------------------------------------------------------------------------
def _data(kind: str, n: int, n_queries: int, dim: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """``(database, queries)`` as in ``bench/copydetect.py``'s latency test. ``clustered``: vectors
    around n/50 random centres (the segments of n/50 videos) and queries near stored vectors (copies);
    ``random``: i.i.d. Gaussian vectors and queries, the worst case for any approximate index."""
    out = np.empty((n, dim), np.float32)
    centres = rng.standard_normal((max(1, n // 50), dim), dtype=np.float32) if kind == "clustered" else None
    for lo in range(0, n, 100_000):
        m = min(100_000, n - lo)
        x = rng.standard_normal((m, dim), dtype=np.float32)
        if centres is not None:
            x = centres[rng.integers(0, len(centres), m)] + 0.7 * x
        out[lo : lo + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    if kind == "clustered":
        q = out[rng.choice(n, n_queries, replace=False)] + 0.05 * rng.standard_normal((n_queries, dim),
                                                                                          dtype=np.float32)
    else:
        q = rng.standard_normal((n_queries, dim), dtype=np.float32)
    return out, q / np.linalg.norm(q, axis=1, keepdims=True)


def _exact_top(data: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    best_s = np.full((len(q), k), -np.inf, np.float32)
    best_i = np.zeros((len(q), k), np.int64)
    for lo in range(0, len(data), 200_000):
        s = q @ data[lo : lo + 200_000].T
        idx = np.argpartition(-s, k, axis=1)[:, :k]
        cand_s = np.concatenate([best_s, np.take_along_axis(s, idx, 1)], 1)
        cand_i = np.concatenate([best_i, idx + lo], 1)
        order = np.argsort(-cand_s, 1)[:, :k]
        best_s, best_i = np.take_along_axis(cand_s, order, 1), np.take_along_axis(cand_i, order, 1)
    return best_i, (time.perf_counter() - t0) / len(q)


def bench_index(sizes: list[int], n_queries: int, dim: int = 1280) -> None:
    import faiss

    from vidtune.index.store import IVFPQ_NPROBE, ivfpq_params, train_ivfpq

    print(f"\nindex: {dim}-d L2-normalised vectors, {n_queries} queries, recall@k = share of the exact top k "
          f"found; {faiss.omp_get_max_threads()} FAISS threads")
    print("\n| vectors | data | index | bytes/vector | build s | recall@1 | recall@10 | p50 ms/query |")
    print("|---|---|---|---|---|---|---|---|")
    for n in sizes:
        for kind in ("clustered", "random"):
            rng = np.random.default_rng(0)
            data, q = _data(kind, n, n_queries, dim, rng)
            truth, exact_s = _exact_top(data, q, 10)
            print(f"| {n:,} | {kind} | exact (flat) | {4 * dim + 8} | 0 | 1.000 | 1.000 | "
                  f"{1000 * exact_s:.1f} (batched) |", flush=True)
            t0 = time.perf_counter()
            index = train_ivfpq(data, np.arange(n, dtype=np.int64))
            build = time.perf_counter() - t0
            size = len(faiss.serialize_index(index))
            nlist, m = ivfpq_params(n, dim)
            for nprobe in (8, IVFPQ_NPROBE, 128):
                index.nprobe = nprobe
                _, got = index.search(q, 10)
                recall = float(np.mean([len(set(got[i]) & set(truth[i])) / 10 for i in range(len(q))]))
                r1 = float(np.mean(got[:, 0] == truth[:, 0]))
                lat = []
                for i in range(min(len(q), 100)):
                    t0 = time.perf_counter()
                    index.search(q[i : i + 1], 10)
                    lat.append(time.perf_counter() - t0)
                print(f"| {n:,} | {kind} | IVF{nlist},PQ{m} nprobe {nprobe} | {size / n:.0f} | {build:.1f} | "
                      f"{r1:.3f} | {recall:.3f} | {1000 * statistics.median(lat):.2f} |", flush=True)
            # the 1B layout: PQ codes in RAM pick 100 candidates, their exact vectors (on disk there,
            # in RAM here) re-rank them
            index.nprobe = IVFPQ_NPROBE
            lat, hits, firsts = [], [], []
            for i in range(len(q)):
                t0 = time.perf_counter()
                _, cand = index.search(q[i : i + 1], 100)
                cand = cand[0][cand[0] >= 0]
                top = cand[np.argsort(-(data[cand] @ q[i]))[:10]]
                lat.append(time.perf_counter() - t0)
                hits.append(len(set(top) & set(truth[i])) / 10)
                firsts.append(bool(len(top)) and top[0] == truth[i][0])
            print(f"| {n:,} | {kind} | IVF{nlist},PQ{m} nprobe {IVFPQ_NPROBE}, top 100 re-ranked exactly | "
                  f"{size / n:.0f} + {4 * dim} on disk | {build:.1f} | {float(np.mean(firsts)):.3f} | "
                  f"{float(np.mean(hits)):.3f} | "
                  f"{1000 * statistics.median(lat):.2f} |", flush=True)
            del data, index


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="embed,train,index")
    ap.add_argument("--vectors", default="100000", help="index sizes, comma-separated")
    ap.add_argument("--queries", type=int, default=200)
    a = ap.parse_args()
    parts = a.parts.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="vidtune-scale-"))
    try:
        if "embed" in parts:
            bench_embed(tmp)
        if "train" in parts:
            bench_train(tmp)
        if "index" in parts:
            bench_index([int(x) for x in a.vectors.split(",")], a.queries)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
