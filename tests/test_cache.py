"""The `cache` stage's anchor cache, from the pipeline run on a temporary copy under tiny parameters."""
import json

import yaml
from conftest import TINY

from craft.anchor_cache import AnchorCacheDataset
from craft.config import CraftConfig, from_section


def test_cache_serves_the_configured_run(repo):
    craft = from_section(CraftConfig, yaml.safe_load((repo / "params.yaml").read_text())["craft"], "craft")
    width = TINY["policy"]["vla"]["width"]
    cache = AnchorCacheDataset(repo / craft.anchor_cache_dir, repo / "models" / "teacher", craft, width)
    assert len(cache) == TINY["cache"]["num_anchors"]
    assert {r["dataset"] for r in cache.references} == {"data/insertion"}
    assert len(cache.manifest["shards"]) == 3                       # 20 anchors in shards of 8
    report = json.loads((repo / "metrics" / "cache.json").read_text())
    features = len(craft.retention_layers) * len(craft.retention_pools)
    per_anchor = features * width * 2                                  # float16
    assert per_anchor <= report["target_bytes_per_anchor"] <= per_anchor + 3 * 1024 / len(cache)   # + headers
