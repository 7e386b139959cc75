"""Start or join Ray.

`init_ray(cfg.ray)` joins a cluster when `ray.address` (or the `RAY_ADDRESS` environment variable, which
`ray job submit` sets) names one; otherwise it starts a local Ray with the dashboard on
`ray.dashboard_host` (127.0.0.1 by default). Ray 2.60 turns token authentication on by default for a
local start; we keep it (a `ray job submit` to it needs `RAY_AUTH_MODE=token` in the submitting shell).
"""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger(__name__)


_dashboard_url = ""  # set by the init_ray call that started or joined Ray in this process


def init_ray(ray_cfg: Any, log_to_driver: bool = True) -> str:
    """Start or join Ray once per process; returns the dashboard URL ("" when there is none)."""
    import ray

    global _dashboard_url
    if ray.is_initialized():
        return _dashboard_url
    address = ray_cfg.address or os.environ.get("RAY_ADDRESS")
    if address:
        ctx = ray.init(address=address, log_to_driver=log_to_driver, configure_logging=False)
    else:
        # "local": always a new instance, even when `ray start` left a cluster on this machine (a plain
        # ray.init() would silently join the latest one); join one with ray.address=auto instead.
        ctx = ray.init(
            address="local",
            num_cpus=ray_cfg.num_cpus,
            include_dashboard=ray_cfg.include_dashboard,
            dashboard_host=ray_cfg.dashboard_host,
            log_to_driver=log_to_driver,
            configure_logging=False,
        )
    url = ctx.dashboard_url or ""
    _dashboard_url = url if not url or url.startswith("http") else f"http://{url}"
    log.info(
        "Ray %s; dashboard %s",
        f"joined at {address}" if address else "started locally",
        _dashboard_url or "off",
    )
    return _dashboard_url


def shutdown_ray() -> None:
    """Disconnect (and stop a locally started Ray); a no-op when Ray is not running."""
    import ray

    global _dashboard_url
    if ray.is_initialized():
        ray.shutdown()
    _dashboard_url = ""
