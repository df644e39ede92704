"""The plugin manager: built-in plugins, entry points, disabling by name, and the typed facade.

Steps, in order (:func:`make_plugin_manager`): block every name in ``plugins_disable``;
import and register each ``BUILTIN`` module under its short name; load the ``wfserve``
entry-point group unless ``WFSERVE_DISABLE_PLUGIN_AUTOLOAD`` is set; ``check_pending`` so a
misspelt hook fails at start-up naming its plugin. Built-ins are ordinary plugins: their
first-result impls are ``trylast``, so any installed plugin answers first.

Kernel code calls hooks only through :class:`Hooks`, by keyword; a first-result hook nobody
answers becomes a named kernel error instead of a silent None.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

import pluggy

from wfserve.kernel import hookspecs
from wfserve.kernel.contracts import Fetched
from wfserve.kernel.errors import NoPluginAnswered
from wfserve.kernel.errors import UnknownArchiveFormat
from wfserve.kernel.errors import UnsupportedURL
from wfserve.kernel.errors import UsageError

if TYPE_CHECKING:
    import argparse

    from wfserve.kernel.contracts import Archive
    from wfserve.kernel.contracts import ArchiveKind
    from wfserve.kernel.contracts import Batcher
    from wfserve.kernel.contracts import Executor
    from wfserve.kernel.contracts import LoadContext
    from wfserve.kernel.contracts import NodeHandler
    from wfserve.kernel.contracts import Serializer
    from wfserve.kernel.contracts import Workflow
    from wfserve.kernel.core import Kernel
    from wfserve.kernel.settings import Settings
    from wfserve.kernel.spec import NodeSpec
    from wfserve.kernel.store import RegistrationStore

ENTRY_POINT_GROUP = hookspecs.PROJECT
AUTOLOAD_ENV = "WFSERVE_DISABLE_PLUGIN_AUTOLOAD"

#: The default plugins, by module name, registered under the name without ``plugins.``.
BUILTIN: tuple[str, ...] = (
    "wfserve.plugins.serializers",
    "wfserve.plugins.archives",
    "wfserve.plugins.archives.command",
    "wfserve.plugins.fetchers.local",
    "wfserve.plugins.fetchers.http",
    "wfserve.plugins.handlers",
    "wfserve.plugins.api",
    "wfserve.plugins.auth",
    "wfserve.plugins.cors",
    "wfserve.plugins.metrics",
    "wfserve.plugins.snapshot",
    "wfserve.plugins.batching",
    "wfserve.plugins.executors.threaded",
    "wfserve.plugins.executors.ray",
    "wfserve.plugins.example",
    "wfserve.plugins.gc_freeze",
    "wfserve.plugins.store",
)


def declared_settings(hooks: Hooks, builtin: Iterable[str] = BUILTIN
                      ) -> tuple[list[type], dict[type, str]]:
    """The settings classes of the registered plugins (``wfserve_settings``), and those of the
    disabled built-ins (class -> plugin name), whose keys are then ignored, not refused."""
    pm = hooks.pm
    active = hooks.settings_sections()
    disabled: dict[type, str] = {}
    for module_name in builtin:
        name = short_name(module_name)
        if not pm.is_blocked(name):
            continue
        declare = getattr(importlib.import_module(module_name), "wfserve_settings", None)
        section = declare() if callable(declare) else None
        if section is not None and section not in active:
            disabled.setdefault(section, name)
    return active, disabled


def short_name(module: str) -> str:
    """``wfserve.plugins.fetchers.http`` -> ``fetchers.http``: the name a built-in is registered
    under."""
    return module.removeprefix("wfserve.plugins.")


class PluginError(UsageError):
    """A plugin could not be loaded or does not fit the hook specifications (field: plugin)."""


def make_plugin_manager(
    settings: Settings,
    *,
    builtin: Iterable[str] = BUILTIN,
    env: Mapping[str, str] | None = None,
    extra: Iterable[tuple[str, object]] = (),
) -> pluggy.PluginManager:
    """Build a fresh plugin manager; nothing is loaded at import time.

    :param settings: ``plugins_disable`` names the plugins to block.
    :param builtin: the built-in modules to register (tests pass a smaller list).
    :param env: where ``WFSERVE_DISABLE_PLUGIN_AUTOLOAD`` is looked up (None: no autoload switch).
    :param extra: ``(name, plugin)`` pairs to register after the built-ins (tests, embedding).
    :raises PluginError: a built-in that does not import, a hookimpl with no matching spec or
        with arguments its spec lacks; the message names the plugin.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in settings.plugins_disable:
        pm.set_blocked(name)
        pm.set_blocked(short_name(name))
    for module_name in builtin:
        name = short_name(module_name)
        if pm.is_blocked(name):
            continue
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            message = f"built-in plugin {name} failed to import: {exc}"
            raise PluginError(message, plugin=name) from exc
        _register(pm, module, name)
    for name, plugin in extra:
        if not pm.is_blocked(name):
            _register(pm, plugin, name)
    if not (env or {}).get(AUTOLOAD_ENV):
        try:
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        except pluggy.PluginValidationError as exc:
            raise PluginError(_describe(exc), plugin=_plugin_name(pm, exc.plugin)) from exc
        except Exception as exc:  # an installed plugin that fails to import must not pass silently
            raise PluginError(f"an installed wfserve plugin failed to load: {exc!r}") from exc
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(_describe(exc), plugin=_plugin_name(pm, exc.plugin)) from exc
    return pm


def _register(pm: pluggy.PluginManager, plugin: object, name: str) -> None:
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {name}: {exc}", plugin=name) from exc


def _plugin_name(pm: pluggy.PluginManager, plugin: object) -> str:
    return pm.get_name(plugin) or str(getattr(plugin, "__name__", repr(plugin)))


def _describe(exc: pluggy.PluginValidationError) -> str:
    return f"plugin {getattr(exc.plugin, '__name__', exc.plugin)!s}: {exc}"


def plugin_names(pm: pluggy.PluginManager) -> list[str]:
    """Names of the registered plugins, built-ins included, in registration order."""
    return [name for name, plugin in pm.list_name_plugin() if plugin is not None]


class Hooks:
    """The typed facade: one method per hook, calling it by keyword."""

    __slots__ = ("_serializers", "pm", "settings")

    def __init__(self, pm: pluggy.PluginManager, settings: Settings) -> None:
        self.pm = pm
        self.settings = settings
        self._serializers: dict[tuple[str, type], Serializer] = {}

    # loading
    def fetch(self, url: str, store: Path, kind: ArchiveKind,
              reuse: str | None = None) -> Fetched:
        """Resolve ``url`` to a local path (a ``kind`` archive); ``UnsupportedURL`` if no
        fetcher takes it."""
        fetched = self.pm.hook.wfserve_fetch(url=url, store=store, settings=self.settings,
                                             kind=kind, reuse=reuse)
        if fetched is None:
            message = f"No fetcher handles the URL: {url}"
            raise UnsupportedURL(message, hook="wfserve_fetch", url=url)
        if isinstance(fetched, str | Path):  # NOTE: a fetcher written for the old contract
            return Fetched(Path(fetched))
        return fetched

    def open_archive(self, path: Path, workdir: Path) -> Archive:
        """Open an archive; ``UnknownArchiveFormat`` if no plugin recognises it."""
        archive = self.pm.hook.wfserve_open_archive(
            path=path, workdir=workdir, settings=self.settings
        )
        if archive is None:
            raise UnknownArchiveFormat(
                f"Not a workflow or model archive: {path.name}",
                hook="wfserve_open_archive", path=str(path),
            )
        return archive

    def load_handler(self, node: NodeSpec, archive: Archive, context: LoadContext) -> NodeHandler:
        """Load one worker's handler for ``node``; ``NoPluginAnswered`` if none can."""
        handler = self.pm.hook.wfserve_load_handler(node=node, archive=archive, context=context)
        return _answered(handler, "wfserve_load_handler", f"node {node.name}")

    # execution
    def make_batcher(self, node: NodeSpec) -> Batcher:
        """The batcher for ``node``."""
        batcher = self.pm.hook.wfserve_make_batcher(node=node, settings=self.settings)
        return _answered(batcher, "wfserve_make_batcher", f"node {node.name}")

    def make_executor(self, workflow: Workflow, kernel: Kernel) -> Executor:
        """The executor for ``workflow`` (the one ``settings.executor`` chooses)."""
        executor = self.pm.hook.wfserve_make_executor(
            workflow=workflow, settings=self.settings, kernel=kernel
        )
        return _answered(executor, "wfserve_make_executor", f"executor {self.settings.executor!r}")

    def handler_ran(self, workflow: str, node: str, rows: int, seconds: float,
                    error: str | None) -> None:
        """Tell every plugin that ``node``'s handler ran one batch where this server's
        handler wrappers do not apply (see ``wfserve_handler_ran``)."""
        self.pm.hook.wfserve_handler_ran(workflow=workflow, node=node, rows=rows,
                                         seconds=seconds, error=error)

    def serializer(self, content_type: str, obj: Any) -> Serializer:
        """The serializer for a content type or object, cached per (content type, type).

        PERF: this runs for every node output in compatibility mode; a hook call costs
        microseconds, a dict lookup nanoseconds (the hook's contract allows the cache).
        """
        key = (content_type, type(obj))
        found = self._serializers.get(key)
        if found is None:
            found = self.pm.hook.wfserve_serializer(content_type=content_type, obj=obj)
            found = _answered(found, "wfserve_serializer", f"content type {content_type!r}")
            self._serializers[key] = found
        return found

    # API and serving
    def add_routes(self, app: Any, kernel: Kernel, surface: str) -> None:
        """Let every plugin add its routes for ``surface``."""
        self.pm.hook.wfserve_add_routes(app=app, kernel=kernel, surface=surface)

    def middleware(self, kernel: Kernel, surfaces: list[str]) -> list[Any]:
        """Every plugin's middleware for the app serving ``surfaces``, in call order."""
        found = self.pm.hook.wfserve_middleware(kernel=kernel, surfaces=surfaces)
        return [item for items in found for item in items or ()]

    def serve(self, kernel: Kernel) -> int:
        """Run the server; ``NoPluginAnswered`` if no server plugin is installed."""
        code = self.pm.hook.wfserve_serve(kernel=kernel)
        return _answered(code, "wfserve_serve", "serving")

    def spec_sections(self) -> dict[str, Callable[[Any], Any]]:
        """``wfserve_spec_sections``: every plugin's per-model spec sections and their checks.

        :raises PluginError: two plugins owning one key.
        """
        owned: dict[str, Callable[[Any], Any]] = {}
        for sections in self.pm.hook.wfserve_spec_sections():
            for key, check in (sections or {}).items():
                if key in owned:
                    raise PluginError(f"two plugins own the spec section '{key}'")
                owned[key] = check
        return owned

    def settings_sections(self) -> list[type]:
        """``wfserve_settings``: each plugin's settings class, once, in call order."""
        sections: list[type] = []
        for section in self.pm.hook.wfserve_settings():
            if section is not None and section not in sections:
                sections.append(section)
        return sections

    def add_commands(self, subparsers: argparse._SubParsersAction) -> None:
        """Let every plugin add sub-commands."""
        self.pm.hook.wfserve_add_commands(subparsers=subparsers)

    # lifecycle
    def registration_store(self, settings: Settings) -> RegistrationStore | None:
        """The registration store a plugin provides (None: none does)."""
        store: RegistrationStore | None = self.pm.hook.wfserve_registration_store(
            settings=settings)
        return store

    def preload(self, kernel: Kernel) -> None:
        """Before forking the server processes: plugins make what they share."""
        self.pm.hook.wfserve_preload(kernel=kernel)

    def process_exited(self, kernel: Kernel, pid: int) -> None:
        """In the parent: server process ``pid`` ended; plugins forget what it held."""
        self.pm.hook.wfserve_process_exited(kernel=kernel, pid=pid)

    def startup(self, kernel: Kernel) -> None:
        """Start-up phase 1 only: every plugin prepares its state. A server starts with
        :func:`wfserve.kernel.startup.start`, which runs every phase in order."""
        self.pm.hook.wfserve_startup(kernel=kernel)

    def restore(self, kernel: Kernel) -> None:
        """Start-up phase 2: plugins register again what an earlier run saved."""
        self.pm.hook.wfserve_restore(kernel=kernel)

    def register_configured(self, kernel: Kernel) -> None:
        """Start-up phase 3: plugins register the workflows the settings name."""
        self.pm.hook.wfserve_register_configured(kernel=kernel)

    def register_defaults(self, kernel: Kernel) -> None:
        """Start-up phase 4: plugins register default workflows whose name is still free."""
        self.pm.hook.wfserve_register_defaults(kernel=kernel)

    def ready(self, kernel: Kernel) -> None:
        """Start-up phase 5: every start-up registration is done."""
        self.pm.hook.wfserve_ready(kernel=kernel)

    def shutdown(self, kernel: Kernel) -> None:
        """Tell every plugin the server is stopping."""
        self.pm.hook.wfserve_shutdown(kernel=kernel)

    def workflow_event(self, kernel: Kernel, event: str, workflow: Workflow) -> None:
        """Tell every plugin something happened to ``workflow``."""
        self.pm.hook.wfserve_workflow_event(kernel=kernel, event=event, workflow=workflow)


def _answered(result: Any, hook: str, what: str) -> Any:
    if result is None:
        raise NoPluginAnswered(f"No plugin answered {hook} for {what}", hook=hook)
    return result
