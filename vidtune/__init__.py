"""vidtune: transfer learning for video analysis.

The public facade: ``open_video``/``probe`` (I/O), ``train``/``evaluate``/``predict`` (classification),
``load_run`` (rebuild a trained model with its validated :class:`RunConfig`), ``create_backbone`` (pretrained frame encoders).
"""

__version__ = "0.1.0"

from vidtune.errors import VidtuneError  # noqa: E402


def __getattr__(name):  # lazy facade: `import vidtune` stays fast, torch loads on first use
    if name in ("open_video", "probe"):
        from vidtune import io

        return getattr(io, name)
    if name in ("train", "TrainConfig"):
        from vidtune.train import trainer

        return getattr(trainer, name)
    if name in ("evaluate", "predict"):
        from vidtune.runs import inference

        return getattr(inference, name)
    if name in ("load_run", "RunConfig"):
        from vidtune import runs

        return getattr(runs, name)
    if name == "create_backbone":
        from vidtune.models.backbones import create_backbone

        return create_backbone
    if name == "write_sample_dataset":
        from vidtune.data.sample import write_sample_dataset

        return write_sample_dataset
    raise AttributeError(f"module 'vidtune' has no attribute {name!r}")


__all__ = ["VidtuneError", "open_video", "probe", "train", "TrainConfig", "evaluate", "predict", "load_run", "RunConfig",
           "create_backbone", "write_sample_dataset"]
