"""The index: FAISS for the segment vectors, SQLite for everything else, no server.

Layout of ``INDEX_DIR``::

    index.sqlite        meta (model, embedding params, kind, dim, generation), videos, segments
    vectors.<G>.faiss   the FAISS index of generation G (ids are ``segments.id``)
    .lock               taken (flock) by writers so that two ``index add`` never interleave: a second
                        writer fails at once, naming the process that holds it

SQLite is the source of truth, and the generation number lives in it. A write builds the new FAISS
file ``vectors.<G+1>.faiss`` completely (temporary name, fsync, rename) *before* the SQLite
transaction that inserts the rows and sets ``generation = G+1`` commits; only then is
``vectors.<G>.faiss`` deleted. A process killed at any point therefore leaves either the old state
(the transaction rolls back, SQLite's journal restores the file, ``vectors.<G>.faiss`` is still
there) or the new one, and running the command again completes the work. Orphaned files of a
killed write are removed by the next writer.

Every FAISS file's checksum (BLAKE2b of all its bytes) is recorded in ``meta`` (``vectors_checksum``) in
the same transaction that makes its generation current, and checked each time a process first reads
the file (search, add, merge, dedupe...): a file whose bytes changed on disk is refused with an error
naming it (:class:`~vidtune.errors.IndexStoreError`, exit 2), never searched. Indexes written before
checksums were recorded are read unverified until their next write records one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vidtune.errors import IndexError_, ModelMismatchError
from vidtune.utils import CHECKSUM, file_checksum, hold_lock, is_io_error, output_error

log = logging.getLogger(__name__)

FORMAT = "vidtune-index"
VERSION = 1
KINDS = ("flat", "hnsw", "ivfpq")  # ivfpq: PQ codes in RAM, exact vectors in SQLite for re-ranking
# ivfpq: vectors stay exact (flat) until the index holds this many, then the next commit trains an
# IVF-PQ index on them (k-means needs ~40 points per list) and re-encodes everything into it.
IVFPQ_MIN_TRAIN = 20_000
IVFPQ_NPROBE = 32  # inverted lists visited per query (recall/latency trade-off; bench/scale.py measures it)
IVFPQ_RERANK = 100  # candidates per query re-scored with their exact vectors (kept in SQLite)
DB_NAME = "index.sqlite"


def _faiss():
    import faiss

    return faiss


def new_faiss_index(kind: str, dim: int, hnsw_m: int = 32):
    """Inner product on L2-normalised vectors (= cosine), wrapped in an id map (ids = segment rows)."""
    faiss = _faiss()
    if kind == "flat":
        inner = faiss.IndexFlatIP(dim)
    elif kind == "ivfpq":  # until there is enough data to train it: exact (see IVFPQ_MIN_TRAIN)
        inner = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        inner = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = 40
        # recall@10 vs exact on 1M clustered vectors (bench/copydetect.py): 0.926 at 512 (12 ms p50),
        # 0.952 at 2048 (32 ms): the default meets both targets (>= 0.95, < 50 ms on 2 cores)
        inner.hnsw.efSearch = 2048
    else:
        raise IndexError_(f"unknown index kind {kind!r}; use one of {', '.join(KINDS)}")
    return faiss.IndexIDMap2(inner)


def ivfpq_params(n: int, dim: int) -> tuple[int, int]:
    """``(nlist, m)`` for ``n`` vectors of ``dim``: about sqrt(n) inverted lists (a power of two, at
    most 65,536 and at most n/39 so k-means has data; 1,024 at 1M), and sub-quantizers of at least 8
    dimensions (the largest such divisor of ``dim`` up to 64 codes: 64 bytes per 1280-d vector instead
    of 5,120)."""
    nlist = 1 << max(4, int(round(math.log2(max(16.0, math.sqrt(n))))))
    nlist = max(16, min(nlist, 65_536, 1 << int(math.log2(max(16, n // 39)))))
    m = next((m for m in (64, 48, 40, 32, 24, 16, 8, 4, 2, 1) if dim % m == 0 and dim // m >= 8), 1)
    return nlist, m


def train_ivfpq(vectors: np.ndarray, ids: np.ndarray, nprobe: int = IVFPQ_NPROBE, seed: int = 0):
    """An IVF-PQ index (inner product) trained on ``vectors`` and holding them under ``ids``.

    Native ids (no id map): the inverted lists keep them, and a hash-table direct map serves
    ``reconstruct`` (decoded, approximate vectors) and ``remove_ids``."""
    faiss = _faiss()
    n, dim = vectors.shape
    nlist, m = ivfpq_params(n, dim)
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFPQ(quantizer, dim, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    index.pq.cp.seed = seed
    rng = np.random.default_rng(seed)
    # k-means on 64 points per list (faiss warns under 39); the PQ codebooks need >= 256 points
    size = max(64 * nlist, 10_000)
    sample = vectors if n <= size else vectors[np.sort(rng.choice(n, size, replace=False))]
    index.train(np.ascontiguousarray(sample, np.float32))
    index.set_direct_map_type(faiss.DirectMap.Hashtable)
    index.add_with_ids(np.ascontiguousarray(vectors, np.float32), np.ascontiguousarray(ids, np.int64))
    index.nprobe = min(nprobe, nlist)
    index.own_fields = True  # the index owns (and frees) its coarse quantizer
    quantizer.this.disown()
    return index


def is_ivf(index) -> bool:
    return "IVF" in type(index).__name__


def with_direct_map(index):
    """IVF indexes read from disk or cloned lose their id -> entry map: rebuild it (reconstruct, remove)."""
    if is_ivf(index):
        faiss = _faiss()
        if index.direct_map.type != faiss.DirectMap.Hashtable:
            index.set_direct_map_type(faiss.DirectMap.Hashtable)
    return index


VECTORS_CHECKSUM = "vectors_checksum"  # meta key: {"generation", "file", "algo", "checksum"} of the FAISS file


def vectors_checksum(written: Path, gen: int) -> dict:
    """The checksum record of generation ``gen``'s FAISS file, from the file ``written`` (its final name,
    or the temporary one it is renamed from)."""
    return {"generation": gen, "file": f"vectors.{gen}.faiss", "algo": CHECKSUM, "checksum": file_checksum(written)}


def db_path(path: str) -> str | bytes:
    """A path as stored in SQLite: text, or its exact bytes when it is not UTF-8 (an ``os.fsdecode``
    string with surrogates, which SQLite cannot hold as text)."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return os.fsencode(path)


def py_path(value) -> str:
    """Inverse of :func:`db_path`."""
    return os.fsdecode(value) if isinstance(value, bytes) else value


@dataclass
class VideoRow:
    id: int
    path: str
    digest: str
    duration: float
    segments: int


class VideoIndex:
    """An open index folder. Use :meth:`create` or :meth:`open`; writers use :meth:`writing`."""

    def __init__(self, root: Path, db: sqlite3.Connection):
        self.root = root
        self.db = db
        self._faiss = None
        self._faiss_gen = None
        self._exact: bool | None = None

    # -- opening ----------------------------------------------------------------------------------
    @classmethod
    def create(cls, root, model_id: str, model_desc: dict, params: dict, dim: int, kind: str = "flat",
               overwrite: bool = False) -> VideoIndex:
        root = Path(root)
        if kind not in KINDS:
            raise IndexError_(f"unknown --kind {kind!r}; use one of {', '.join(KINDS)}")
        if root.exists() and not root.is_dir():
            raise IndexError_(f"{root} exists and is not a folder; pick another INDEX_DIR")
        if (root / DB_NAME).exists():
            if not overwrite:
                raise IndexError_(f"{root} already holds an index; use `vidtune index add {root} ...` to add videos, "
                                  "or --overwrite to replace it")
            for p in list(root.glob("vectors.*.faiss")) + [root / DB_NAME]:
                p.unlink()
            for suffix in ("-journal", "-wal", "-shm"):
                (root / (DB_NAME + suffix)).unlink(missing_ok=True)
        elif root.is_dir() and any(p for p in root.iterdir() if not p.name.startswith(".")):
            raise IndexError_(f"{root} is not empty and holds no index; pick an empty or new folder")
        try:
            root.mkdir(parents=True, exist_ok=True)
            tmp_db = root / f".{DB_NAME}.creating"
            tmp_db.unlink(missing_ok=True)
            db = sqlite3.connect(tmp_db)
            with db:
                db.executescript("""
                    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                    CREATE TABLE videos (id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL, digest TEXT NOT NULL,
                                         duration REAL NOT NULL, added REAL NOT NULL, vector BLOB NOT NULL);
                    CREATE TABLE segments (id INTEGER PRIMARY KEY, video_id INTEGER NOT NULL
                                           REFERENCES videos(id) ON DELETE CASCADE,
                                           start REAL NOT NULL, end REAL NOT NULL);
                    CREATE INDEX segments_video ON segments(video_id);
                    CREATE INDEX videos_digest ON videos(digest);
                """)
                if kind == "ivfpq":  # the exact vectors, on disk: search re-ranks the codes' candidates with them
                    db.execute("CREATE TABLE exact (id INTEGER PRIMARY KEY REFERENCES segments(id) ON DELETE CASCADE, "
                               "vector BLOB NOT NULL)")
                _faiss().write_index(new_faiss_index(kind, dim), str(root / "vectors.0.faiss"))
                meta = {"format": FORMAT, "version": VERSION, "model_id": model_id, "model": model_desc,
                        "params": params, "dim": int(dim), "kind": kind, "generation": 0,
                        "created": time.time(), VECTORS_CHECKSUM: vectors_checksum(root / "vectors.0.faiss", 0)}
                db.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()])
            db.close()
            os.replace(tmp_db, root / DB_NAME)  # the index exists once its database does
        except (OSError, sqlite3.Error, RuntimeError) as exc:
            if not isinstance(exc, OSError) and not is_io_error(exc):
                raise
            raise IndexError_(str(output_error(root, exc))) from None
        return cls.open(root)

    @classmethod
    def open(cls, root) -> VideoIndex:
        root = Path(root)
        path = root / DB_NAME
        if not path.is_file():
            raise IndexError_(f"no index in {root}: build one with `vidtune index build {root} VIDEOS...`")
        try:
            db = sqlite3.connect(path, timeout=60, isolation_level=None)
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA synchronous=FULL")
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as exc:
            raise IndexError_(f"{path}: damaged index database ({exc}); rebuild it with `vidtune index build`") from None
        if json.loads(meta.get("format", "null")) != FORMAT:
            raise IndexError_(f"{path}: not a vidtune index")
        if json.loads(meta["version"]) > VERSION:
            raise IndexError_(f"{path}: written by a newer vidtune; upgrade vidtune")
        return cls(root, db)

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- metadata ---------------------------------------------------------------------------------
    def meta(self, key: str):
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    @property
    def model_id(self) -> str:
        return self.meta("model_id")

    @property
    def params(self) -> dict:
        return self.meta("params")

    @property
    def dim(self) -> int:
        return int(self.meta("dim"))

    @property
    def kind(self) -> str:
        return self.meta("kind")

    def check_compatible(self, model_id: str, params: dict) -> None:
        """Refuse vectors that were not made like the index's (other weights or other segments)."""
        if model_id != self.model_id:
            raise ModelMismatchError(
                f"{self.root} was built with model {self.model_id!r}, but these vectors come from {model_id!r}. "
                "Vectors of different models are not comparable: use the index's model (see `vidtune index info`) "
                "or build a new index for this model")
        mine = {k: v for k, v in self.params.items()}
        if mine != params:
            raise ModelMismatchError(f"{self.root} was built with embedding parameters {mine}, these are {params}; "
                                     "use the same --window/--stride/--fps/--tta or build a new index")

    def videos(self) -> list[VideoRow]:
        rows = self.db.execute("SELECT v.id, v.path, v.digest, v.duration, COUNT(s.id) FROM videos v "
                               "LEFT JOIN segments s ON s.video_id = v.id GROUP BY v.id ORDER BY v.id").fetchall()
        return [VideoRow(r[0], py_path(r[1]), *r[2:]) for r in rows]

    def video_by_path(self, path: str) -> VideoRow | None:
        r = self.db.execute("SELECT v.id, v.path, v.digest, v.duration, (SELECT COUNT(*) FROM segments s WHERE "
                            "s.video_id = v.id) FROM videos v WHERE v.path = ?", (db_path(path),)).fetchone()
        return VideoRow(r[0], py_path(r[1]), *r[2:]) if r else None

    def video_segments(self, video_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(ids, starts, ends)`` of one video's segments, in time order."""
        rows = self.db.execute("SELECT id, start, end FROM segments WHERE video_id = ? ORDER BY start, id",
                               (video_id,)).fetchall()
        a = np.array(rows, dtype=np.float64).reshape(-1, 3)
        return a[:, 0].astype(np.int64), a[:, 1], a[:, 2]

    def stored_embedding(self, video_id: int):
        """A video's embedding as stored (segments, their spans, the pooled vector), to copy it."""
        from vidtune.index.embed import VideoEmbedding

        row = self.db.execute("SELECT path, digest, duration, vector FROM videos WHERE id = ?", (video_id,)).fetchone()
        ids, starts, ends = self.video_segments(video_id)
        return VideoEmbedding(py_path(row[0]), row[1], row[2], starts, ends, self.vectors(ids),
                              np.frombuffer(row[3], np.float32))

    def segment_videos(self, ids) -> dict[int, int]:
        """Segment id -> video id."""
        ids = [int(i) for i in ids if i >= 0]
        out: dict[int, int] = {}
        for lo in range(0, len(ids), 900):
            chunk = ids[lo : lo + 900]
            q = f"SELECT id, video_id FROM segments WHERE id IN ({','.join('?' * len(chunk))})"
            out.update(self.db.execute(q, chunk).fetchall())
        return out

    def video_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """``(video ids, (V, D) pooled video vectors)``."""
        rows = self.db.execute("SELECT id, vector FROM videos ORDER BY id").fetchall()
        ids = np.array([r[0] for r in rows], np.int64)
        vecs = np.stack([np.frombuffer(r[1], np.float32) for r in rows]) if rows else np.zeros((0, self.dim), np.float32)
        return ids, vecs

    def info(self) -> dict:
        n_videos = self.db.execute("SELECT COUNT(*) FROM videos").fetchone()[0]
        n_segments = self.db.execute("SELECT COUNT(*) FROM segments").fetchone()[0]
        size = sum(p.stat().st_size for p in self.root.iterdir() if p.is_file())
        return {"index": str(self.root), "videos": n_videos, "segments": n_segments, "model": self.model_id,
                "model_source": self.meta("model"), "params": self.params, "dim": self.dim, "kind": self.kind,
                "generation": self.meta("generation"), "bytes": size}

    # -- vectors ----------------------------------------------------------------------------------
    def faiss_index(self):
        """The FAISS index of the committed generation (re-read after another process wrote one)."""
        for _ in range(20):
            rows = dict(self.db.execute("SELECT key, value FROM meta WHERE key IN ('generation', ?)",
                                        (VECTORS_CHECKSUM,)).fetchall())  # one statement: one consistent state
            gen = json.loads(rows["generation"])
            if self._faiss is not None and self._faiss_gen == gen:
                return self._faiss
            path = self.root / f"vectors.{gen}.faiss"
            try:
                self._verify(path, gen, json.loads(rows.get(VECTORS_CHECKSUM, "null")))
                self._faiss = with_direct_map(_faiss().read_index(str(path)))
                self._faiss_gen = gen
                return self._faiss
            except (RuntimeError, FileNotFoundError) as exc:
                if path.exists():
                    raise IndexError_(f"{path}: damaged vector file ({str(exc).splitlines()[0][:160]}); "
                                      "rebuild the index with `vidtune index build`") from None
                time.sleep(0.05)  # a writer committed a new generation and removed this one: re-read
        raise IndexError_(f"{self.root}: vector file of generation {gen} is missing; rebuild the index")

    @staticmethod
    def _verify(path: Path, gen: int, record: dict | None) -> None:
        """Check ``path`` against the checksum recorded when it was written (none: an older index)."""
        if not isinstance(record, dict) or record.get("generation") != gen:
            log.debug("%s has no recorded checksum (written by an older vidtune): read unverified", path)
            return
        if record.get("algo") != CHECKSUM or file_checksum(path) != record.get("checksum"):
            raise IndexError_(f"{path}: damaged vector file: its bytes no longer match the checksum recorded when "
                              "it was written, so it is not used; restore the index folder from a backup or "
                              "rebuild it with `vidtune index build --overwrite`")

    @property
    def has_exact(self) -> bool:
        """Whether the exact vectors are kept in SQLite (``ivfpq``: the FAISS index holds only codes)."""
        if self._exact is None:
            self._exact = self.db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'exact'"
                                          ).fetchone() is not None
        return self._exact

    def exact_vectors(self, ids) -> dict[int, np.ndarray]:
        """Segment id -> its exact stored vector (``ivfpq`` indexes)."""
        ids = sorted({int(i) for i in ids if i >= 0})
        out: dict[int, np.ndarray] = {}
        for lo in range(0, len(ids), 900):
            chunk = ids[lo : lo + 900]
            q = f"SELECT id, vector FROM exact WHERE id IN ({','.join('?' * len(chunk))})"
            out.update((i, np.frombuffer(v, np.float32)) for i, v in self.db.execute(q, chunk).fetchall())
        return out

    def vectors(self, ids) -> np.ndarray:
        """Stored vectors of segment ``ids`` ``(N, D)``."""
        if self.has_exact:
            found = self.exact_vectors(ids)
            return np.stack([found[int(i)] for i in ids]) if len(ids) else np.zeros((0, self.dim), np.float32)
        index = self.faiss_index()
        out = np.empty((len(ids), self.dim), np.float32)
        for k, i in enumerate(ids):
            out[k] = index.reconstruct(int(i))
        return out

    def search_segments(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """FAISS kNN over all segments: ``(scores, ids)`` of shape ``(Q, k)`` (ids -1 past the end)."""
        index = self.faiss_index()
        k = max(1, min(k, index.ntotal)) if index.ntotal else 1
        if index.ntotal == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        queries = np.ascontiguousarray(queries, np.float32)
        if not (self.has_exact and is_ivf(index)):
            return index.search(queries, k)
        # IVF-PQ: the codes pick IVFPQ_RERANK candidates, their exact vectors decide (bench/scale.py: recall@1
        # 0.655 -> 0.995 at 100k clustered 1280-d vectors)
        _, cand = index.search(queries, min(max(4 * k, IVFPQ_RERANK), index.ntotal))
        exact = self.exact_vectors(cand.ravel())
        scores = np.full((len(queries), k), -np.inf, np.float32)
        ids = np.full((len(queries), k), -1, np.int64)
        for qi, row in enumerate(cand):
            row = np.array([i for i in row if int(i) in exact], np.int64)
            if not len(row):
                continue
            sims = np.stack([exact[int(i)] for i in row]) @ queries[qi]
            top = np.argsort(-sims, kind="stable")[:k]
            scores[qi, : len(top)], ids[qi, : len(top)] = sims[top], row[top]
        return scores, ids

    # -- writing ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def writing(self):
        """Exclusive writer: a lock file, the current vectors in memory, one commit at the end."""
        lock = hold_lock(self.root / ".lock", f"the index {self.root}", "vidtune index writer")
        try:
            self._cleanup_orphans()
            yield _Writer(self)
        finally:
            lock.close()

    def _cleanup_orphans(self) -> None:
        gen = self.meta("generation")
        for p in self.root.glob("vectors.*.faiss"):
            if p.name != f"vectors.{gen}.faiss":
                p.unlink(missing_ok=True)
        for p in self.root.glob(".vectors.*.tmp.faiss"):
            p.unlink(missing_ok=True)


class _Writer:
    """Stages additions and removals; :meth:`commit` makes them visible atomically."""

    def __init__(self, index: VideoIndex):
        self.ix = index
        self.faiss = with_direct_map(_faiss().clone_index(index.faiss_index()))
        self.ops: list[tuple] = []
        self.removed_ids: list[int] = []

    def add(self, emb, path: str | None = None) -> None:
        """Stage one :class:`~vidtune.index.embed.VideoEmbedding` under ``path`` (default ``emb.path``)."""
        if emb.segments.shape[1] != self.ix.dim:
            raise ModelMismatchError(f"vector size {emb.segments.shape[1]} differs from the index's {self.ix.dim}")
        self.ops.append(("add", path or emb.path, emb))

    def remove(self, video: VideoRow) -> None:
        self.ops.append(("remove", video))

    def commit(self) -> None:
        if not self.ops:
            return
        ix, db = self.ix, self.ix.db
        gen = ix.meta("generation")
        faiss = _faiss()
        db.execute("BEGIN IMMEDIATE")
        try:
            remove_ids: list[int] = []
            next_id = None
            for op in self.ops:
                if op[0] == "remove":
                    ids, _, _ = ix.video_segments(op[1].id)
                    remove_ids.extend(int(i) for i in ids)
                    db.execute("DELETE FROM segments WHERE video_id = ?", (op[1].id,))
                    db.execute("DELETE FROM videos WHERE id = ?", (op[1].id,))
            if remove_ids:
                self._remove_vectors(np.array(remove_ids, np.int64))
            for op in self.ops:
                if op[0] != "add":
                    continue
                _, path, emb = op
                old = db.execute("SELECT id FROM videos WHERE path = ?", (db_path(path),)).fetchone()
                if old is not None:  # changed content at a known path: replace
                    ids, _, _ = ix.video_segments(old[0])
                    self._remove_vectors(ids)
                    db.execute("DELETE FROM segments WHERE video_id = ?", (old[0],))
                    db.execute("DELETE FROM videos WHERE id = ?", (old[0],))
                cur = db.execute("INSERT INTO videos (path, digest, duration, added, vector) VALUES (?, ?, ?, ?, ?)",
                                 (db_path(path), emb.digest, emb.duration, time.time(),
                                  np.ascontiguousarray(emb.video, np.float32).tobytes()))
                vid = cur.lastrowid
                if next_id is None:
                    next_id = max(db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM segments").fetchone()[0],
                                  self._max_faiss_id() + 1)
                ids = np.arange(next_id, next_id + len(emb.starts), dtype=np.int64)
                next_id += len(emb.starts)
                db.executemany("INSERT INTO segments (id, video_id, start, end) VALUES (?, ?, ?, ?)",
                               [(int(i), vid, float(a), float(b)) for i, a, b in zip(ids, emb.starts, emb.ends)])
                if ix.has_exact:
                    db.executemany("INSERT INTO exact (id, vector) VALUES (?, ?)",
                                   [(int(i), np.ascontiguousarray(v, np.float32).tobytes())
                                    for i, v in zip(ids, emb.segments)])
                self.faiss.add_with_ids(np.ascontiguousarray(emb.segments, np.float32), ids)
            if ix.kind == "ivfpq" and not is_ivf(self.faiss) and self.faiss.ntotal >= IVFPQ_MIN_TRAIN:
                ids = faiss.vector_to_array(self.faiss.id_map).astype(np.int64)
                vecs = self.faiss.index.reconstruct_n(0, self.faiss.ntotal)
                log.info("training the IVF-PQ index on %d vectors", len(ids))
                self.faiss = train_ivfpq(vecs, ids)
            new_gen = gen + 1
            final = ix.root / f"vectors.{new_gen}.faiss"
            tmp = ix.root / f".vectors.{new_gen}.tmp.faiss"
            faiss.write_index(self.faiss, str(tmp))
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            record = vectors_checksum(tmp, new_gen)
            os.replace(tmp, final)
            db.execute("UPDATE meta SET value = ? WHERE key = 'generation'", (json.dumps(new_gen),))
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (VECTORS_CHECKSUM, json.dumps(record)))
            db.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            with contextlib.suppress(OSError):
                (ix.root / f"vectors.{gen + 1}.faiss").unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                (ix.root / f".vectors.{gen + 1}.tmp.faiss").unlink(missing_ok=True)
            if isinstance(exc, OSError) or is_io_error(exc):  # disk full, read-only: the index is unchanged
                raise IndexError_(f"{output_error(ix.root, exc)}; the index is unchanged") from None
            raise
        (ix.root / f"vectors.{gen}.faiss").unlink(missing_ok=True)
        ix._faiss, ix._faiss_gen = self.faiss, new_gen
        self.ops.clear()

    def _max_faiss_id(self) -> int:
        faiss = _faiss()
        if is_ivf(self.faiss):  # removed ids are gone from it too: SQLite's ids are the only ones in use
            return 0
        ids = faiss.vector_to_array(self.faiss.id_map)
        return int(ids.max()) if len(ids) else 0

    def _remove_vectors(self, ids: np.ndarray) -> None:
        if len(ids) == 0:
            return
        faiss = _faiss()
        try:
            if is_ivf(self.faiss):  # a hash-table direct map removes only through an IDSelectorArray
                ids = np.ascontiguousarray(ids, np.int64)
                self.faiss.remove_ids(faiss.IDSelectorArray(len(ids), faiss.swig_ptr(ids)))
            else:
                self.faiss.remove_ids(faiss.IDSelectorBatch(ids))
            return
        except RuntimeError:  # HNSW cannot delete: rebuild from the stored vectors
            pass
        all_ids = faiss.vector_to_array(self.faiss.id_map).astype(np.int64)
        keep = ~np.isin(all_ids, ids)
        vecs = self.faiss.index.reconstruct_n(0, self.faiss.ntotal)[keep]
        fresh = new_faiss_index(self.ix.kind, self.ix.dim)
        if keep.any():
            fresh.add_with_ids(np.ascontiguousarray(vecs), all_ids[keep])
        self.faiss = fresh

