"""wfserve: a TorchServe-compatible model-pipeline server on a pluggy microkernel.

Plugin authors need one import::

    from wfserve import hookimpl

The code lives in two subpackages, ``wfserve.kernel`` (hook specs, settings, registry, CLI)
and ``wfserve.plugins`` (everything that does work). In a wheel they are installed inside this
package; in a source tree they stay at the repository's top level (``kernel/``, ``plugins/``,
the project's layout), and this package's path is extended to reach them, so both are
imported as ``wfserve.kernel`` and ``wfserve.plugins`` and never under a second name.
"""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent
if not (_HERE / "kernel").is_dir() and (_HERE.parent / "kernel" / "hookspecs.py").is_file():
    # NOTE: a source tree (editable install, a checkout on PYTHONPATH): kernel/ and plugins/
    # are the repository's top-level folders
    __path__.append(str(_HERE.parent))

from wfserve.kernel import hookimpl  # noqa: E402 - after the path is known

__all__ = ["hookimpl"]
