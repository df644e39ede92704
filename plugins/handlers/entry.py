"""Find a handler's entry point as TorchServe's ``TsModelLoader.load`` does, and wrap it.

The handler string is ``module[.py][:function]``. The module is the archive's ``<module>.py``;
when the archive has no such file, it is a TorchServe built-in (``ts.torch_handler.<module>``).
If the module has an attribute of the function's name (default ``handle``), that attribute is
the entry point, callable or not, and it is called once with ``(None, context)`` to initialize
(an attribute that is not callable fails there); only when there is no such attribute must
the module define exactly one class, which is instantiated, ``initialize(context)``-ed and
whose ``handle`` is the entry point. A function node's handler is the ``.war``'s handler file
with the node's name as function.

:class:`TsHandler` calls the entry point with what TorchServe's backend hands a handler: in
compatibility mode every raw value (``bytes`` or ``bytearray``) as a fresh ``bytearray`` per
call, so a handler may change its input without touching a sibling's or a retry's.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from wfserve.kernel.contracts import Archive
from wfserve.kernel.contracts import RowMeta
from wfserve.kernel.errors import WfserveError
from wfserve.plugins.archives.build import TS_BUILTINS
from wfserve.plugins.handlers.context import Context
from wfserve.plugins.handlers.importer import HandlerError
from wfserve.plugins.handlers.importer import import_file
from wfserve.plugins.handlers.importer import isolated
from wfserve.plugins.handlers.native import NativeBaseHandler

EXTRA = "wfserve[ts]"

Entry = Callable[[Any, Any], Any]
#: the raw value types (a tuple: faster in ``isinstance`` than a union)
RAW = (bytes, bytearray)


def split_handler(handler: str) -> tuple[str, str | None]:
    """``"dir/my_h.py:fn"`` -> ``("my_h", "fn")``; ``"my_h"`` -> ``("my_h", None)``."""
    module, _, function = handler.partition(":")
    module = module.removesuffix(".py").rsplit("/", 1)[-1]
    return module, function or None


def _builtin(module_name: str, archive: Archive) -> ModuleType | NativeBaseHandler:
    try:
        return importlib.import_module(f"ts.torch_handler.{module_name}")
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] != "ts" or module_name not in TS_BUILTINS:
            raise HandlerError(
                f"{archive.source.name}: handler {module_name} is neither a file of the "
                "archive nor a TorchServe built-in handler",
                file=f"{module_name}.py", module=module_name,
            ) from None
    if module_name == "base_handler":
        return NativeBaseHandler(archive)
    raise HandlerError(
        f"{archive.source.name}: handler {module_name} is a TorchServe built-in handler; "
        f"install the extra that provides it: pip install '{EXTRA}'",
        module=module_name, extra=EXTRA,
    )


def _classes(module: ModuleType) -> list[type]:
    return [c for _, c in inspect.getmembers(module, inspect.isclass)
            if c.__module__ == module.__name__]


def resolve(module: ModuleType | NativeBaseHandler, function: str | None,
            context: Context, root: Path, where: str) -> Entry:
    """The entry point of ``module``, already initialized with ``context``.

    :param where: the file and node, for error messages.
    :raises HandlerError: neither the function nor exactly one class with ``handle``, or the
        initialization raised.
    """
    name = function or "handle"
    entry: Entry
    init: Callable[[Any], Any]
    if isinstance(module, NativeBaseHandler):
        entry, init = module.handle, module.initialize
    elif hasattr(module, name):  # TorchServe: hasattr, not callable (a non-callable fails init)
        fn = getattr(module, name)
        entry, init = fn, lambda ctx: fn(None, ctx)
    else:
        classes = _classes(module)
        if len(classes) != 1:
            message = (f"no function {name!r} in the handler file" if function and not classes
                       else "Expected only one class in custom service code or a function "
                       f"entry point {[c.__name__ for c in classes]}")
            raise HandlerError(f"{where}: {message}", function=name)
        try:
            service = classes[0]()
        except Exception as exc:
            raise HandlerError(f"{where}: {classes[0].__name__}() failed: {exc}",
                               cause=repr(exc)) from exc
        if not callable(getattr(service, "handle", None)):
            raise HandlerError(f"{where}: Expect handle method in class {classes[0].__name__}")
        entry = service.handle
        init = getattr(service, "initialize", None) or (lambda ctx: None)
    try:
        with isolated(root):
            init(context)
    except WfserveError:
        raise
    except Exception as exc:
        raise HandlerError(f"{where}: initialization failed: {type(exc).__name__}: {exc}",
                           cause=repr(exc)) from exc
    return entry


def load_entry(archive: Archive, function: str | None, context: Context,
               where: str) -> Entry:
    """Import the archive's handler module and return its initialized entry point.

    :param function: the function to use (a function node's name), or None to take the one
        the handler string names (default ``handle``).
    """
    if not archive.handler:
        raise HandlerError(f"{where}: {archive.source.name} names no handler",
                           file=str(archive.source))
    module_name, named = split_handler(archive.handler)
    path = archive.root / f"{module_name}.py"
    module = import_file(path, archive.root) if path.is_file() else _builtin(module_name, archive)
    return resolve(module, function or named, context, archive.root, where)


def raw_as_bytearray(row: dict[str, Any]) -> dict[str, Any]:
    """A new row with every ``bytes`` or ``bytearray`` value a new ``bytearray``."""
    out = dict(row)
    for key, value in row.items():
        if isinstance(value, RAW):
            out[key] = bytearray(value)
    return out


class TsHandler:
    """A :class:`~wfserve.kernel.contracts.NodeHandler` calling a TorchServe-style entry point.

    Per call: the context gets the batch's request ids and per-request headers, the entry
    point gets new rows (raw values as new ``bytearray`` objects, unless ``typed``), the output
    is checked, and what the handler set for each row's answer is copied into
    ``meta[i].response``.
    """

    __slots__ = ("context", "entry", "node", "typed")

    def __init__(self, entry: Entry, context: Context, node: str, typed: bool = False) -> None:
        self.entry = entry
        self.context = context
        self.node = node
        self.typed = typed

    def __call__(self, batch: list[dict[str, Any]], meta: list[RowMeta]) -> Sequence[Any]:
        """Set the batch on the context, call the entry point, check its output, copy the
        responses the handler set."""
        self.context.begin_batch(batch, meta)
        rows = [dict(row) for row in batch] if self.typed else [raw_as_bytearray(row)
                                                                 for row in batch]
        output = self.entry(rows, self.context)
        if not isinstance(output, list | tuple):
            raise WfserveError(f"Invalid model predict output: node {self.node} returned "
                               f"{type(output).__name__}, not a list", node=self.node)
        if len(output) != len(batch):
            raise WfserveError(
                f"number of batch response mismatched: node {self.node} returned "
                f"{len(output)} outputs for {len(batch)} inputs", node=self.node,
            )
        self.context.record_responses(meta)
        return list(output)
