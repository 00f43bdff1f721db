"""Text queries that match frames (zero-shot), with open_clip weights the user has locally.

No package ships CLIP weights offline, so this path runs only with ``--clip-weights FILE`` (a
``.safetensors`` state dict; pickled checkpoints are refused, convert them once with
``safetensors.torch.save_file``) and ``--clip-model`` (an open_clip model name such as ``ViT-B-32``,
or an open_clip model-config JSON file for an architecture of your own).

Frames sampled at ``fps`` are embedded with the image tower into ``INDEX_DIR/clip.sqlite``; a query
is embedded with the text tower and frames are ranked by cosine similarity. Results have the shape of
word results with ``"modality": "visual"`` and ``"text": ""``; their ``score`` is CLIP's cosine.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
from pathlib import Path

import numpy as np

from vidtune.errors import ConfigError, IndexStoreError, ModelMismatchError, VideoDecodeError, WeightsError
from vidtune.extras import require
from vidtune.progress import NullProgress, Progress

log = logging.getLogger(__name__)

DB_NAME = "clip.sqlite"
FORMAT = "vidtune-clip-frames"
DEFAULT_MODEL = "ViT-B-32"
BATCH = 32


class ClipEncoder:
    """An open_clip model with local weights: image tower for frames, text tower for queries."""

    def __init__(self, weights, model: str = DEFAULT_MODEL, device: str = "cpu"):
        open_clip = require("open_clip", "text-to-frame search (--clip-weights)", "clip", "open-clip-torch")
        import torch
        from safetensors.torch import load_file

        from vidtune.utils import file_digest

        weights = Path(weights)
        if not weights.is_file():
            raise WeightsError(f"--clip-weights {weights}: file not found")
        if weights.suffix != ".safetensors":
            raise WeightsError(f"--clip-weights {weights}: only .safetensors is read (pickled checkpoints can run "
                               "code); convert it once: safetensors.torch.save_file(torch.load(F)['state_dict'], "
                               "'clip.safetensors')")
        name = str(model)
        if name.endswith(".json"):
            cfg = Path(name)
            if not cfg.is_file():
                raise ConfigError("clip_model", f"{cfg}: model config file not found")
            open_clip.add_model_config(cfg)
            name = cfg.stem
        elif name not in open_clip.list_models():
            raise ConfigError("clip_model", f"{name!r} is not an open_clip model name (e.g. ViT-B-32) or a .json "
                                            "model config")
        self.model, _, self.preprocess = open_clip.create_model_and_transforms(name, pretrained=None, device=device)
        try:
            state = load_file(str(weights))
            self.model.load_state_dict(state, strict=True)
        except (RuntimeError, OSError, ValueError) as exc:
            raise WeightsError(f"--clip-weights {weights} does not fit the open_clip model {name}: "
                               f"{str(exc).splitlines()[0][:300]}") from None
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(name)
        self.device = torch.device(device)
        self.name = name
        self.model_id = f"{name}:{file_digest(weights)[:16]}"
        self.weights = str(weights.resolve())
        self.config = str(Path(model).resolve()) if str(model).endswith(".json") else name

    def encode_images(self, frames: np.ndarray) -> np.ndarray:
        """``(N, D)`` float32, L2-normalised, for RGB uint8 frames ``(N, H, W, 3)``."""
        import torch
        from PIL import Image

        out = []
        with torch.inference_mode():
            for i in range(0, len(frames), BATCH):
                x = torch.stack([self.preprocess(Image.fromarray(f)) for f in frames[i:i + BATCH]]).to(self.device)
                out.append(torch.nn.functional.normalize(self.model.encode_image(x).float(), dim=-1).cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    def encode_text(self, texts: list[str]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            v = self.model.encode_text(self.tokenizer(list(texts)).to(self.device)).float()
            return torch.nn.functional.normalize(v, dim=-1).cpu().numpy().astype(np.float32)


def has_frame_index(index_dir) -> bool:
    return (Path(index_dir) / DB_NAME).is_file()


def _open(index_dir, create: bool = False, meta: dict | None = None) -> sqlite3.Connection:
    path = Path(index_dir) / DB_NAME
    if create:
        Path(index_dir).mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        db = sqlite3.connect(str(path))
        with db:
            db.executescript("""
                CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                CREATE TABLE videos (path TEXT PRIMARY KEY, digest TEXT NOT NULL);
                CREATE TABLE frames (id INTEGER PRIMARY KEY, path TEXT NOT NULL, start REAL NOT NULL,
                                     "end" REAL NOT NULL, vector BLOB NOT NULL);
                CREATE INDEX frames_path ON frames(path);""")
            db.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in (meta or {}).items()])
        return db
    if not path.is_file():
        raise IndexStoreError(f"{index_dir} holds no CLIP frame embeddings; build it with --clip-weights FILE")
    db = sqlite3.connect(str(path))
    row = db.execute("SELECT value FROM meta WHERE key='format'").fetchone()
    if row is None or json.loads(row[0]) != FORMAT:
        db.close()
        raise IndexStoreError(f"{path} is not a vidtune CLIP frame index; rebuild the index")
    return db


def _meta(db: sqlite3.Connection) -> dict:
    return {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM meta")}


def stored_encoder_args(index_dir) -> dict:
    """The weights file and model an index's frames were embedded with (for ``index add``)."""
    db = _open(index_dir)
    try:
        m = _meta(db)
    finally:
        db.close()
    return {"weights": m["weights"], "model": m["config"]}


def index_frames(index_dir, paths, clip: ClipEncoder, fps: float = 1.0, create: bool = False,
                 progress: Progress | None = None) -> dict:
    """Embed frames sampled at ``fps`` of new or changed ``paths`` with CLIP's image tower."""
    from vidtune.index.changes import Changes
    from vidtune.io import open_video

    if not (math.isfinite(fps) and fps > 0):
        raise ConfigError("fps", f"must be a positive number of frames per second, got {fps}")
    progress = progress or NullProgress()
    meta = {"format": FORMAT, "model_id": clip.model_id, "weights": clip.weights, "config": clip.config, "fps": fps}
    db = _open(index_dir, create=create, meta=meta)
    try:
        m = _meta(db)
        if m["model_id"] != clip.model_id:
            raise ModelMismatchError(f"{index_dir}'s frames were embedded with {m['model_id']}, not {clip.model_id}; "
                                     "use the same --clip-weights or rebuild the index")
        fps = float(m["fps"])
        changes = Changes(dict(db.execute("SELECT path, digest FROM videos")))
        with progress.task("embedding frames (CLIP)", total=len(paths)) as task:
            for p, key, digest in changes.new_or_changed(paths):
                try:
                    with open_video(p) as reader:
                        step = 1.0 / fps
                        times = np.arange(step / 2, reader.info.duration, step).tolist() or [0.0]
                        vecs = np.concatenate([clip.encode_images(reader.frames_at(times[i:i + BATCH]))
                                               for i in range(0, len(times), BATCH)])
                except (VideoDecodeError, OSError) as exc:
                    changes.skip(key, exc)
                else:
                    with db:
                        db.execute("DELETE FROM frames WHERE path=?", (key,))
                        db.execute("INSERT OR REPLACE INTO videos VALUES (?, ?)", (key, digest))
                        db.executemany('INSERT INTO frames (path, start, "end", vector) VALUES (?, ?, ?, ?)',
                                       [(key, max(0.0, t - step / 2), t + step / 2, v.tobytes())
                                        for t, v in zip(times, vecs)])
                    changes.added.append(key)
                task.advance()
        frames = db.execute("SELECT COUNT(*) FROM frames").fetchone()[0]
    finally:
        db.close()
    return {"added": changes.added, "unchanged": changes.unchanged, "skipped": changes.skipped, "frames": frames,
            "bytes": (Path(index_dir) / DB_NAME).stat().st_size}


def search_frames(index_dir, query: str, clip: ClipEncoder, k: int = 10) -> list[dict]:
    """Frames ranked by CLIP cosine with ``query``: ``[{"path", "start", "end", "score", "modality", "text"}]``."""
    db = _open(index_dir)
    try:
        m = _meta(db)
        if m["model_id"] != clip.model_id:
            raise ModelMismatchError(f"{index_dir}'s frames were embedded with {m['model_id']}, not {clip.model_id}; "
                                     "give the --clip-weights the index was built with")
        rows = db.execute('SELECT path, start, "end", vector FROM frames').fetchall()
    finally:
        db.close()
    if not rows:
        return []
    sims = np.stack([np.frombuffer(r[3], dtype=np.float32) for r in rows]) @ clip.encode_text([query])[0]
    order = np.argsort(-sims, kind="stable")[:k]
    return [{"path": rows[i][0], "start": round(rows[i][1], 3), "end": round(rows[i][2], 3),
             "score": round(float(sims[i]), 6), "modality": "visual", "text": ""} for i in order]
