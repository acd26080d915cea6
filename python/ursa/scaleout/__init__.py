"""Scale-out primitives, free of any cluster engine (SPEC §10): ``shards`` splits a
download into picklable shards and runs one shard; ``tracker`` turns the shards' reports
back into one call's ``DownloadProgress`` events. ``ursa.ray`` drives them on Ray; the
same functions drive them from Dask or any task runner (docs/scale-out.md)."""

from ursa.scaleout.shards import Batch, FileDone, Shard, ShardResult, plan_shards, run_shard
from ursa.scaleout.tracker import ShardTracker

__all__ = ["Batch", "FileDone", "Shard", "ShardResult", "ShardTracker", "plan_shards", "run_shard"]
