"""The wfserve microkernel: hook specifications, plugin manager, spec, DAG, registry, settings.

Plugins import one name: ``from wfserve import hookimpl`` (re-exported from here).
"""

from __future__ import annotations

import pluggy

from wfserve.kernel.hookspecs import PROJECT

hookimpl = pluggy.HookimplMarker(PROJECT)

__all__ = ["PROJECT", "hookimpl"]
