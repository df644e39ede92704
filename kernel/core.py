"""The kernel facade handed to plugins: settings, hooks and the registry, nothing else."""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass

import pluggy

from kernel.plugins import BUILTIN
from kernel.plugins import Hooks
from kernel.plugins import make_plugin_manager
from kernel.registry import Registry
from kernel.settings import Settings


@dataclass
class Kernel:
    """A thin façade: every capability is a plugin reached through :attr:`hooks`."""

    settings: Settings
    hooks: Hooks
    registry: Registry

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
        return cls(settings, Hooks(pm, settings), Registry(limit=settings.max_workflows))

    @property
    def pm(self) -> pluggy.PluginManager:
        """The underlying plugin manager (for listing and tracing, not for calling hooks)."""
        return self.hooks.pm
