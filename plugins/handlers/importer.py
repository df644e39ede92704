"""Import handler code from an archive folder, isolated per load.

TorchServe runs every worker in its own process with ``model_dir`` on ``sys.path``; here many
workers share one process, so each load imports its own copy of the handler module under a
unique name (``wfserve_h<n>_<module>``). Two workflows whose handler files share a name never
see each other's module, and two workers never share module globals (the peer's
``model_handler.py`` keeps its model in one).

While the handler module runs (and while its ``initialize`` runs, see :func:`isolated`), the
archive folder is first on ``sys.path`` and modules of the same names as the folder's own
``.py`` files are hidden, so ``import helper`` finds this archive's ``helper.py``; afterwards
such modules leave ``sys.modules`` again and the hidden ones come back. A process-wide lock
serialises this, as ``sys.path`` and ``sys.modules`` are process-wide.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from wfserve.kernel.errors import RegistrationFailed

_LOCK = threading.RLock()
_COUNTER = itertools.count(1)
JIT_DEPRECATION = r"`torch\.jit\.(load|trace|script)` is deprecated"


class HandlerError(RegistrationFailed):
    """A node's handler could not be loaded (fields: node, file, module, cause, extra...).

    A ``RegistrationFailed``: the workflow is not registered, as TorchServe answers when a
    node's workers fail to start.
    """


def _local_names(root: Path) -> set[str]:
    names = {p.stem for p in root.glob("*.py")}
    names |= {p.name for p in root.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    return names


@contextlib.contextmanager
def isolated(root: Path) -> Iterator[None]:
    """Run the body with ``root`` first on ``sys.path`` and its own module names unshadowed.

    torch deprecates ``torch.jit.load`` (2.13 with a DeprecationWarning, 2.14 with a
    FutureWarning), which TorchServe handlers and TorchScript archives rely on; that warning
    is not the user's to act on at load time, so it is silenced here (and only that one).
    """
    with _LOCK, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=JIT_DEPRECATION)  # Deprecation or Future
        local = _local_names(root)
        hidden = {n: sys.modules.pop(n) for n in list(sys.modules) if n.split(".")[0] in local}
        entry = str(root)
        sys.path.insert(0, entry)
        try:
            yield
        finally:
            with contextlib.suppress(ValueError):
                sys.path.remove(entry)
            for name in [n for n in sys.modules if n.split(".")[0] in local]:
                del sys.modules[name]
            sys.modules.update(hidden)


def import_file(path: Path, root: Path) -> ModuleType:
    """Import ``path`` (a ``.py`` under ``root``) as a fresh module with a unique name.

    :raises HandlerError: the file is absent, or executing it raised (the cause is kept
        as a field and as ``__cause__``); an ``ImportError`` for ``ts`` names the extra.
    """
    if not path.is_file():
        raise HandlerError(f"handler file {path.name} is not in the archive",
                                 file=str(path), module=path.stem)
    unique = f"wfserve_h{next(_COUNTER)}_{path.stem}"
    spec = importlib.util.spec_from_file_location(unique, path)
    if spec is None or spec.loader is None:  # pragma: no cover - a .py path always has one
        raise HandlerError(f"cannot import {path.name}", file=str(path), module=path.stem)
    module = importlib.util.module_from_spec(spec)
    with isolated(root):
        sys.modules[unique] = module
        try:
            spec.loader.exec_module(module)
        except ModuleNotFoundError as exc:
            del sys.modules[unique]
            raise missing_module(exc, path) from exc
        except Exception as exc:
            del sys.modules[unique]
            raise HandlerError(
                f"importing {path.name} failed: {type(exc).__name__}: {exc}",
                file=str(path), module=path.stem, cause=repr(exc),
            ) from exc
    return module


def missing_module(exc: ModuleNotFoundError, path: Path) -> HandlerError:
    """The error for a handler whose import needs a module that is not installed."""
    name = (exc.name or "").split(".")[0]
    if name == "ts":
        return HandlerError(
            f"{path.name} imports TorchServe's 'ts' package, which is not installed; "
            "install the extra: pip install 'wfserve[ts]'",
            file=str(path), module=path.stem, missing="ts", extra="wfserve[ts]",
        )
    return HandlerError(
        f"importing {path.name} failed: no module named {exc.name!r} (is it in the archive's "
        "requirements?)", file=str(path), module=path.stem, missing=exc.name,
    )
