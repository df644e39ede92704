"""The Ray executor plugin's settings."""

from __future__ import annotations

from dataclasses import dataclass

from wfserve.kernel.settings import setting


@dataclass(frozen=True)
class RaySettings:
    """Where the Ray cluster is (``kernel.settings.of(RaySettings)``); ``plugins: {ray:
    {init:
    {...}, start_timeout_s: 300}}`` in the YAML adds ``ray.init`` keywords."""

    ray_address: str = setting(
        "local", "executor ray: the cluster to use: local (start one in this process), auto "
        "(the running cluster on this machine), or ray://host:port."
    )
    ray_num_cpus: int = setting(
        0, "executor ray, address local: CPUs the local Ray cluster may use (0: all)."
    )
