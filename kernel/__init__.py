"""The wfserve microkernel: hook specifications, plugin manager, spec, DAG, registry, settings.

Plugins import one name from here: ``from kernel import hookimpl``.
"""

from __future__ import annotations

import pluggy

from kernel.hookspecs import PROJECT

hookimpl = pluggy.HookimplMarker(PROJECT)

__all__ = ["PROJECT", "hookimpl"]
