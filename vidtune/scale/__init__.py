"""Scale out: sharded work that merges (:mod:`.shards`), and the Ray engine (:mod:`.ray_engine`).

Training across processes (torchrun/DDP) lives in :mod:`vidtune.train.distributed`; merging shard
indexes in :mod:`vidtune.index.merge`.
"""

from vidtune.scale.shards import Shard, select_shard, shard_key

__all__ = ["Shard", "select_shard", "shard_key"]
