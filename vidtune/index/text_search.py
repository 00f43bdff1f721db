"""Search by words: transcript and on-screen text spans beside the visual index, ranked by a hybrid of
lexical (SQLite FTS5, BM25) and semantic (sentence-embedding cosine) similarity.

Layout, next to the visual index's files in ``INDEX_DIR``::

    text.sqlite   meta (modalities, sentence model), videos (path, digest), spans (path, modality
                  "speech" | "text", start, end, text, 384-d float32 vector), spans_fts (FTS5 over text)

One SQLite transaction writes a video's spans, so a killed write leaves the old state or the new one.

Ranking: ``raw = W_SEM * max(cos, 0) + W_LEX * lexical`` over the union of the best BM25 hits and
the best semantic hits, where ``lexical`` is the share of the query's words the span holds, each word
weighted by its BM25 inverse document frequency (see :meth:`TextIndex._lexical`). The lexical part
rewards the exact words (a name, a number, a sign's text); the semantic part finds paraphrases and
survives transcription and OCR errors.

The score shown is a confidence in [0, 1]: ``1 / (1 + exp(-CONF_SLOPE * (raw - CONF_MID)))``, a logistic
fit (Platt scaling) of "this span is the one the query is about" on the spoken sentences and signs of
``bench/multimodal_search.py`` queried with their paraphrases, exact words and sign texts, against every
other span and against nonsense queries (``bench/words_calibration.py`` prints the fit). There the right
spans scored raw 0.26-1.0 (confidence 0.78-1.0) and the best span for a nonsense query ("xylophone
quantum", "banana helicopter") at most 0.19 (confidence 0.21). Results under ``min_score``
(:data:`MIN_SCORE`, 0.5) are left out, so a query about nothing in the index returns nothing, and ``k``
is an upper bound, not a count to fill. The order is the raw score's (the map is monotonic).
"""

from __future__ import annotations

import json
import logging
import math
import re
import sqlite3
from pathlib import Path

import numpy as np

from vidtune.errors import ConfigError, IndexStoreError, MissingModalityError, VideoDecodeError
from vidtune.progress import NullProgress, Progress, seconds_reporter

log = logging.getLogger(__name__)

DB_NAME = "text.sqlite"
FORMAT = "vidtune-text-index"
VERSION = 1
TEXT_MODALITIES = ("speech", "text")  # what this store holds; "visual" is the FAISS index beside it
ALL_MODALITIES = ("visual",) + TEXT_MODALITIES
W_SEM, W_LEX = 0.6, 0.4
CANDIDATES = 200  # best lexical and best semantic hits considered per query
CONF_MID, CONF_SLOPE = 0.225, 35.0  # raw score of confidence 0.5, and the logistic slope (see above)
MIN_SCORE = 0.5  # default relevance floor (confidence)
# English function words: left out of the lexical part (a query of only such words keeps them), so that
# "photosynthesis in plants" gets no lexical credit from a span that merely says "in".
STOPWORDS = frozenset("""a an and are as at be been but by do does for from had has have he her his i if in into
is it its me my no not of on or our she so that the their them they this to was we were what when where which who
will with you your""".split())

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS videos (path TEXT PRIMARY KEY, digest TEXT NOT NULL, duration REAL NOT NULL,
                                   language TEXT);
CREATE TABLE IF NOT EXISTS spans (id INTEGER PRIMARY KEY, path TEXT NOT NULL, modality TEXT NOT NULL,
                                  start REAL NOT NULL, "end" REAL NOT NULL, text TEXT NOT NULL, vector BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS spans_path ON spans(path);
CREATE VIRTUAL TABLE IF NOT EXISTS spans_fts USING fts5(text, content='spans', content_rowid='id',
                                                        tokenize='porter unicode61 remove_diacritics 2');
CREATE TRIGGER IF NOT EXISTS spans_ai AFTER INSERT ON spans BEGIN
  INSERT INTO spans_fts(rowid, text) VALUES (new.id, new.text); END;
CREATE TRIGGER IF NOT EXISTS spans_ad AFTER DELETE ON spans BEGIN
  INSERT INTO spans_fts(spans_fts, rowid, text) VALUES ('delete', old.id, old.text); END;
"""


def parse_modalities(value) -> tuple[str, ...]:
    """``"visual,speech"`` or a sequence -> a tuple in canonical order; unknown names are refused."""
    names = [m.strip().lower() for m in (value.split(",") if isinstance(value, str) else value) if m.strip()]
    bad = [m for m in names if m not in ALL_MODALITIES]
    if bad or not names:
        raise ConfigError("modalities", f"must be a comma-separated list of {', '.join(ALL_MODALITIES)}, "
                                        f"got {value!r}")
    return tuple(m for m in ALL_MODALITIES if m in names)


def has_text_index(index_dir) -> bool:
    return (Path(index_dir) / DB_NAME).is_file()


def _vec(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=np.float32)


class TextIndex:
    """An open ``text.sqlite``. :meth:`create` makes one, :meth:`open` opens an existing one."""

    def __init__(self, path: Path, db: sqlite3.Connection):
        self.path = path
        self.db = db

    @classmethod
    def create(cls, index_dir, modalities, encoder_name: str, dim: int) -> TextIndex:
        root = Path(index_dir)
        root.mkdir(parents=True, exist_ok=True)
        path = root / DB_NAME
        path.unlink(missing_ok=True)
        db = sqlite3.connect(str(path))
        try:
            db.executescript(_SCHEMA)
        except sqlite3.OperationalError as exc:  # an SQLite built without FTS5
            db.close()
            path.unlink(missing_ok=True)
            raise IndexStoreError(f"this Python's SQLite cannot create a full-text index ({exc}); use a Python "
                                  "whose sqlite3 has FTS5 (the python.org and Debian builds do)") from None
        meta = {"format": FORMAT, "version": VERSION, "modalities": [m for m in modalities if m in TEXT_MODALITIES],
                "encoder": encoder_name, "dim": dim}
        with db:
            db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()])
        return cls(path, db)

    @classmethod
    def open(cls, index_dir) -> TextIndex:
        path = Path(index_dir) / DB_NAME
        if not path.is_file():
            raise MissingModalityError(f"the index {index_dir} has no text modality (no transcripts or on-screen "
                                       "text), so it cannot be searched with words; build it with `vidtune index "
                                       f"build {index_dir} VIDEO... --modalities visual,speech,text`")
        db = sqlite3.connect(str(path))
        try:
            fmt = db.execute("SELECT value FROM meta WHERE key='format'").fetchone()
        except sqlite3.DatabaseError as exc:
            db.close()
            raise IndexStoreError(f"{path} is damaged ({exc}); rebuild the index") from None
        if fmt is None or json.loads(fmt[0]) != FORMAT:
            db.close()
            raise IndexStoreError(f"{path} is not a vidtune text index; rebuild the index")
        return cls(path, db)

    def meta(self, key: str):
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.meta("modalities") or ())

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def digests(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT path, digest FROM videos"))

    def replace_video(self, path: str, digest: str, duration: float, language: str | None,
                      spans: list[tuple[str, float, float, str]], vectors: np.ndarray) -> None:
        """Replace every span of ``path`` by ``spans`` ``(modality, start, end, text)`` in one transaction."""
        with self.db:
            self.db.execute("DELETE FROM spans WHERE path=?", (path,))
            self.db.execute("INSERT OR REPLACE INTO videos VALUES (?, ?, ?, ?)", (path, digest, duration, language))
            self.db.executemany('INSERT INTO spans (path, modality, start, "end", text, vector) VALUES (?,?,?,?,?,?)',
                                [(path, m, s, e, t, np.asarray(v, np.float32).tobytes())
                                 for (m, s, e, t), v in zip(spans, vectors)])

    def remove(self, paths: list[str]) -> list[str]:
        removed = []
        with self.db:
            for p in paths:
                prefix = p.rstrip("/") + "/"
                rows = [r[0] for r in self.db.execute("SELECT path FROM videos WHERE path=? OR substr(path, 1, ?)=?",
                                                      (p, len(prefix), prefix))]
                for r in rows:
                    self.db.execute("DELETE FROM spans WHERE path=?", (r,))
                    self.db.execute("DELETE FROM videos WHERE path=?", (r,))
                removed.extend(rows)
        return removed

    def info(self) -> dict:
        videos = self.db.execute("SELECT COUNT(*), COALESCE(SUM(duration), 0) FROM videos").fetchone()
        by = dict(self.db.execute("SELECT modality, COUNT(*) FROM spans GROUP BY modality"))
        return {"videos": videos[0], "seconds": round(float(videos[1]), 3), "spans": by,
                "modalities": list(self.modalities), "encoder": self.meta("encoder"),
                "bytes": self.path.stat().st_size}

    # -- ranking ------------------------------------------------------------------------------------
    def search(self, query: str, qvec: np.ndarray, k: int = 10, modalities=None,
               min_score: float = MIN_SCORE) -> list[dict]:
        """Up to ``k`` spans with a confidence of at least ``min_score``, best first."""
        if k < 1:
            raise ConfigError("k", f"must be at least 1, got {k}")
        if not (math.isfinite(min_score) and 0 <= min_score <= 1):
            raise ConfigError("min_score", f"must be a confidence between 0 and 1, got {min_score}")
        mods = tuple(modalities or TEXT_MODALITIES)
        marks = ",".join("?" * len(mods))
        rows = self.db.execute(f"SELECT id, vector FROM spans WHERE modality IN ({marks})", mods).fetchall()
        if not rows:
            return []
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        sem = np.stack([_vec(r[1]) for r in rows]) @ qvec  # (N,)
        cand = {int(i): 0.0 for i in ids[np.argsort(-sem)[:CANDIDATES]]}
        cand.update(self._lexical(query, mods))
        pos = {int(i): j for j, i in enumerate(ids)}
        scored = sorted(((W_SEM * max(float(sem[pos[i]]), 0.0) + W_LEX * lx, i) for i, lx in cand.items()
                         if i in pos), reverse=True)
        scored = [(c, i) for c, i in ((confidence(raw), i) for raw, i in scored[:k]) if c >= min_score]
        out = []
        for score, i in scored:
            path, modality, start, end, text = self.db.execute(
                'SELECT path, modality, start, "end", text FROM spans WHERE id=?', (i,)).fetchone()
            out.append({"path": path, "start": round(start, 3), "end": round(end, 3), "score": round(score, 6),
                        "modality": modality, "text": text})
        return out

    def _lexical(self, query: str, mods: tuple[str, ...]) -> dict[int, float]:
        """Span id -> lexical score in [0, 1] of the best BM25 hits (spans holding any query word).

        The score is the share of the query's words a span holds, each word weighted by its BM25
        inverse document frequency (Lucene's ``ln(1 + (N - df + 0.5) / (df + 0.5))``, stemmed by
        FTS5's porter tokenizer): "the" in every span adds almost nothing, a rare name or number a lot.
        """
        words = list(dict.fromkeys(re.findall(r"\w+", query.lower())))
        words = [w for w in words if w not in STOPWORDS] or words  # "in", "the": no evidence of a match
        if not words:
            return {}
        quoted = ['"' + w.replace('"', '""') + '"' for w in words]
        marks = ",".join("?" * len(mods))
        rows = self.db.execute(
            f"SELECT f.rowid FROM spans_fts f JOIN spans s ON s.id = f.rowid "
            f"WHERE spans_fts MATCH ? AND s.modality IN ({marks}) ORDER BY bm25(spans_fts) LIMIT ?",
            (" OR ".join(quoted), *mods, CANDIDATES)).fetchall()
        if not rows:
            return {}
        n = self.db.execute("SELECT COUNT(*) FROM spans").fetchone()[0]
        hits = [int(r[0]) for r in rows]
        score = dict.fromkeys(hits, 0.0)
        total = 0.0
        for q in quoted:
            holding = {int(r[0]) for r in self.db.execute("SELECT rowid FROM spans_fts WHERE spans_fts MATCH ?", (q,))}
            idf = math.log(1 + (n - len(holding) + 0.5) / (len(holding) + 0.5))
            total += idf
            for i in holding & score.keys():
                score[i] += idf
        return {i: s / total for i, s in score.items()} if total > 0 else {}


def confidence(raw: float) -> float:
    """The hybrid score mapped to a calibrated confidence in [0, 1] (see the module docstring)."""
    return 1.0 / (1.0 + math.exp(-CONF_SLOPE * (raw - CONF_MID)))


# -- building -----------------------------------------------------------------------------------------
def _digest(p) -> str:
    from vidtune.utils import file_digest

    return file_digest(p)


def index_text(index_dir, paths, modalities=None, recognizer=None, reader=None, encoder=None,
               speech_model=None, ocr_fps: float = 1.0, progress: Progress | None = None,
               create: bool = False) -> dict:
    """Transcribe and/or OCR new or changed ``paths`` and store their spans in ``INDEX_DIR/text.sqlite``.

    ``create`` starts a new store for ``modalities``; otherwise the store's own modalities are used
    (``modalities`` given must match them). Unchanged files (same path and content) are not read again.
    """
    from vidtune.index.changes import Changes
    from vidtune.io import durations
    from vidtune.text.embed import SentenceEncoder
    from vidtune.utils import hold_lock

    progress = progress or NullProgress()
    encoder = encoder or SentenceEncoder.default()
    Path(index_dir).mkdir(parents=True, exist_ok=True)
    lock = hold_lock(Path(index_dir) / ".lock", f"index {index_dir}", "vidtune index (words)")
    try:
        if create:
            mods = tuple(m for m in parse_modalities(modalities or "speech,text") if m in TEXT_MODALITIES)
            tix = TextIndex.create(index_dir, mods, encoder.name, encoder.dim)
        else:
            tix = TextIndex.open(index_dir)
            mods = tix.modalities
            if modalities is not None:
                wanted = tuple(m for m in parse_modalities(modalities) if m in TEXT_MODALITIES)
                if wanted and wanted != mods:
                    tix.close()
                    raise ConfigError("modalities", f"the index holds {','.join(mods) or 'no words'}; "
                                                    f"cannot add {','.join(wanted)} to it (rebuild it instead)")
        with tix:
            if tix.meta("encoder") != encoder.name or tix.meta("dim") != encoder.dim:
                raise IndexStoreError(f"{index_dir} was built with the sentence model {tix.meta('encoder')}, "
                                      f"not {encoder.name}; rebuild it")
            if "speech" in mods and recognizer is None:
                from vidtune.audio.speech import SpeechRecognizer

                recognizer = SpeechRecognizer(model=speech_model)
            if "text" in mods and reader is None:
                from vidtune.text.ocr import TextReader

                reader = TextReader(fps=ocr_fps)
            changes = Changes(tix.digests(), digest=_digest)
            unique = list(dict.fromkeys(paths))
            seconds = durations(unique)  # progress counts seconds of video, not files
            starts, at = {}, 0.0
            for p, d in zip(unique, seconds):
                starts[str(p)] = (at, d)
                at += d
            with progress.task("reading words (" + ", ".join(mods) + ")", total=at or None, unit="s") as task:
                for p, key, digest in changes.new_or_changed(unique):
                    base, d = starts[str(p)]
                    task.update(completed=base)
                    try:
                        spans, language, duration = _read_words(p, mods, recognizer, reader, (task, base, d))
                    except (VideoDecodeError, OSError) as exc:
                        changes.skip(key, exc)
                    else:
                        tix.replace_video(key, digest, duration, language, spans,
                                          encoder.encode([s[3] for s in spans]))
                        changes.added.append(key)
                    task.update(completed=base + d)
                task.update(completed=at)
            info = tix.info()
    finally:
        lock.close()
    return {"added": changes.added, "unchanged": changes.unchanged, "skipped": changes.skipped, **info}


def _read_words(path, mods, recognizer, reader, where=None) -> tuple[list[tuple[str, float, float, str]],
                                                                     str | None, float]:
    """``where``: ``(task, seconds before this video, its seconds)`` for progress in seconds of video (each
    pass, speech then text, counts for its share of the video's seconds)."""
    spans: list[tuple[str, float, float, str]] = []
    language, duration = None, 0.0
    passes = [m for m in TEXT_MODALITIES if m in mods]

    def reporter(m: str):
        if where is None:
            return None
        task, base, d = where
        share = 1 / len(passes)
        return seconds_reporter(task, base, d, share=share, offset=passes.index(m) * share * d)

    if "speech" in mods:
        t = recognizer.transcribe(path, on_progress=reporter("speech"))
        language, duration = t.language, t.duration
        spans += [("speech", s.start, s.end, s.text) for s in t.segments]
    if "text" in mods:
        r = reader.read_video(path, on_progress=reporter("text"))
        duration = max(duration, r.duration)
        spans += [("text", s.start, s.end, s.text) for s in r.spans]
    return spans, language, duration


def remove_text(index_dir, paths) -> list[str]:
    """Remove ``paths`` (a folder: everything below it) from the words index, if there is one."""
    if not has_text_index(index_dir):
        return []
    with TextIndex.open(index_dir) as tix:
        return tix.remove([str(p) for p in paths])


def text_index_info(index_dir) -> dict | None:
    if not has_text_index(index_dir):
        return None
    with TextIndex.open(index_dir) as tix:
        return tix.info()


# -- searching ----------------------------------------------------------------------------------------
def search_text(index_dir, query: str, k: int = 10, modalities=None, encoder=None,
                min_score: float = MIN_SCORE) -> dict:
    """``{"query", "results": [{"path", "start", "end", "score", "modality", "text"}]}``, best first: up to
    ``k`` spans whose confidence (``score``, 0-1) is at least ``min_score``."""
    from vidtune.text.embed import SentenceEncoder

    if not query or not query.strip():
        raise ConfigError("text", "must be some words to search for, got an empty query")
    mods = None
    if modalities is not None:
        mods = tuple(m for m in parse_modalities(modalities) if m in TEXT_MODALITIES) or None
    with TextIndex.open(index_dir) as tix:
        encoder = encoder or SentenceEncoder.default()
        if tix.meta("encoder") != encoder.name:
            raise IndexStoreError(f"{index_dir} was built with the sentence model {tix.meta('encoder')}, "
                                  f"not {encoder.name}; rebuild it")
        q = encoder.encode([query])[0]
        results = tix.search(query, q, k=k, modalities=mods, min_score=min_score)
    return {"query": query, "results": results}
