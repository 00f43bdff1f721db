"""Video probing and decoding.

Backends live behind :class:`~vidtune.io.base.VideoReader`; third-party decoder types never leave
this package. Times are seconds relative to the first frame of the video stream.
"""

from vidtune.io.base import VIDEO_EXTENSIONS, VideoInfo, VideoReader, is_video_path
from vidtune.io.pyav_backend import PyAVReader

BACKENDS = {"pyav": PyAVReader}


def open_video(path, backend: str = "pyav", interpolation: str = "bicubic") -> VideoReader:
    """Open ``path`` for frame-accurate random access. Raises ``VideoDecodeError`` on bad files.

    ``interpolation`` is the resize filter for ``frames_at(..., short_side=...)``: bicubic, bilinear,
    area or nearest (use the backbone's pretrained config).
    """
    try:
        cls = BACKENDS[backend]
    except KeyError:
        raise ValueError(f"unknown video backend {backend!r}; available: {sorted(BACKENDS)}") from None
    return cls(path, interpolation=interpolation)


def probe(path, scan_packets: bool = True, backend: str = "pyav") -> VideoInfo:
    """Return :class:`VideoInfo` for ``path``; ``scan_packets`` also detects variable frame rate."""
    with open_video(path, backend) as reader:
        info = reader.info
        if scan_packets:
            info = reader.scan()
    return info


def durations(paths) -> list[float]:
    """Header duration in seconds of each path (0.0 for a file that cannot be probed: the job itself
    reports it); what progress counts so that one long video among short ones moves the count."""
    from vidtune.errors import VidtuneError

    out = []
    for p in paths:
        try:
            out.append(max(0.0, float(probe(p, scan_packets=False).duration)))
        except (VidtuneError, OSError, ValueError):
            out.append(0.0)
    return out


__all__ = ["VideoInfo", "VideoReader", "open_video", "probe", "durations", "is_video_path", "VIDEO_EXTENSIONS"]
