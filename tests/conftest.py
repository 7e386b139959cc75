"""Shared fixtures. Ray starts once per test session (about 8 s) and is shared by every `ray` test."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray instance for the whole session (dashboard on 127.0.0.1, token auth as Ray defaults)."""
    ray = pytest.importorskip("ray")
    from actors.cluster import init_ray, shutdown_ray
    from conf.schema import RayConfig

    # 4 logical CPUs: lets actors with fractional num_cpus co-exist on a 2-core box.
    init_ray(RayConfig(num_cpus=4), log_to_driver=False)
    yield ray
    shutdown_ray()


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    """The untrained tiny backbone (policy and PRM base), built once per session in a temp cache."""
    from conf.load import compose
    from models.backbones import resolve_backbone

    cfg = compose([])
    cache = tmp_path_factory.mktemp("cache")
    return resolve_backbone(cfg.backbone, cfg.task, str(cache), seed=0)
