"""The kernel facade handed to plugins: settings, hooks and the registry, nothing else."""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field

import pluggy

from wfserve.kernel.plugins import BUILTIN
from wfserve.kernel.plugins import Hooks
from wfserve.kernel.plugins import make_plugin_manager
from wfserve.kernel.registry import Registered
from wfserve.kernel.registry import Registry
from wfserve.kernel.settings import Settings
from wfserve.kernel.stash import Stash


@dataclass
class Kernel:
    """A thin façade: every capability is a plugin reached through :attr:`hooks`.

    :attr:`stash` holds plugins' per-server state under typed keys (:mod:`wfserve.kernel.stash`).
    """

    settings: Settings
    hooks: Hooks
    registry: Registry[Registered]
    stash: Stash = field(default_factory=Stash, repr=False, compare=False)

    @classmethod
    def create(
        cls,
        settings: Settings,
        *,
        pm: pluggy.PluginManager | None = None,
        builtin: Iterable[str] = BUILTIN,
        env: Mapping[str, str] | None = None,
    ) -> Kernel:
        """Build a kernel with a fresh plugin manager (or the one given)."""
        pm = pm or make_plugin_manager(settings, builtin=builtin, env=env)
        return cls(settings, Hooks(pm, settings), Registry[Registered](
            limit=settings.max_workflows, max_versions=settings.max_versions_per_workflow))

    @property
    def pm(self) -> pluggy.PluginManager:
        """The underlying plugin manager (for listing and tracing, not for calling hooks)."""
        return self.hooks.pm
