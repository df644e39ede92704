"""Every wfserve hook specification. Each docstring is the hook's contract.

Hooks are called by keyword through :class:`wfserve.kernel.plugins.Hooks`; an implementation may
take fewer arguments than its specification (pluggy's opt-in arguments), never more. Built-in
implementations of first-result hooks are ``trylast`` so that any installed plugin answers first.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

import pluggy

if TYPE_CHECKING:
    import argparse

    from wfserve.kernel.contracts import Archive
    from wfserve.kernel.contracts import Batcher
    from wfserve.kernel.contracts import Executor
    from wfserve.kernel.contracts import Fetched
    from wfserve.kernel.contracts import LoadContext
    from wfserve.kernel.contracts import NodeHandler
    from wfserve.kernel.contracts import Serializer
    from wfserve.kernel.contracts import Workflow
    from wfserve.kernel.core import Kernel
    from wfserve.kernel.settings import Settings
    from wfserve.kernel.spec import NodeSpec
    from wfserve.kernel.store import RegistrationStore

PROJECT = "wfserve"
hookspec = pluggy.HookspecMarker(PROJECT)


# --- loading: URLs, archives, handlers --------------------------------------------------------


@hookspec(firstresult=True)
def wfserve_fetch(url: str, store: Path, settings: Settings, kind: str, reuse: str | None
                  ) -> Fetched | None:
    """Resolve a workflow or model URL to a local file or folder.

    :param url: the URL as the client gave it (a bare name, ``file://``, ``https://``...).
    :param store: the folder bare names are resolved against and downloads are written to
        (``workflow_store`` for ``.war`` URLs, ``model_store`` for a spec's model ``url``).
    :param settings: the server settings (``allowed_urls``; a fetcher's own settings through
        ``settings.of``).
    :param kind: ``"war"`` (a workflow archive is wanted) or ``"mar"`` (a model archive): it
        decides TorchServe's not-found errors (``WorkflowNotFound`` or ``ModelNotFound``).
    :param reuse: what this fetcher's ``Fetched.keep`` was for the same URL when a snapshot
        was written, or None; return that download again when it is still there and still
        yours, instead of fetching.
    :returns: a :class:`~wfserve.kernel.contracts.Fetched` (the path; how to delete what you made;
        what to keep for reuse), or None when the URL's scheme is not this plugin's. Raise a
        ``WfserveError`` (``WorkflowNotFound``, ``DownloadFailed``...) when it is yours but fails.
        First non-None result wins; if none answers the kernel raises ``UnsupportedURL``.
        Called from the registering thread.
    """


@hookspec(firstresult=True)
def wfserve_open_archive(path: Path, workdir: Path, settings: Settings) -> Archive | None:
    """Open a ``.war`` or ``.mar`` (file or folder) and extract it safely under ``workdir``.

    :param path: the local archive file or unpacked folder returned by ``wfserve_fetch``.
    :param workdir: an empty folder owned by the caller; nothing may be written outside it.
    :param settings: the server settings (``max_archive_size``, ``max_archive_entries``).
    :returns: the opened :class:`~wfserve.kernel.contracts.Archive`, or None when the format is not
        this plugin's. Raise ``BadArchive`` for a file that is yours but corrupt or unsafe.
        First non-None result wins; if none answers the kernel raises ``UnknownArchiveFormat``.
        Called from the registering thread.
    """


@hookspec(firstresult=True)
def wfserve_load_handler(
    node: NodeSpec, archive: Archive, context: LoadContext
) -> NodeHandler | None:
    """Turn one DAG node into a callable over a batch, for one worker.

    :param node: the node's spec (name, kind ``model``/``function``, properties).
    :param archive: the ``.mar`` of a model node, or the workflow's ``.war`` for a function node.
    :param context: the worker being loaded: model name, model dir, settings, worker index, gpu.
    :returns: a callable taking a list of input rows and returning one output per row, or None
        when this plugin cannot load that kind of handler. Raise a ``WfserveError`` when loading
        fails. First non-None result wins; if none answers the node fails to register.
        Called once per worker, from the registering thread.
    """


# --- execution: batching, executors, serialization ---------------------------------------------


@hookspec(firstresult=True)
def wfserve_make_batcher(node: NodeSpec, settings: Settings) -> Batcher | None:
    """Build the batcher that feeds one node's workers.

    :param node: the node's spec; ``node.config`` holds batch-size, max-batch-delay, workers.
    :param settings: the server settings (``job_queue_size`` bounds the queue).
    :returns: a :class:`~wfserve.kernel.contracts.Batcher`, or None to leave it to another plugin.
        First non-None result wins. Called by the executor when it starts a workflow.
    """


@hookspec(firstresult=True)
def wfserve_make_executor(
    workflow: Workflow, settings: Settings, kernel: Kernel
) -> Executor | None:
    """Build the executor that runs one workflow.

    :param workflow: the workflow being registered, its spec, DAG and opened archives.
    :param settings: the server settings (``executor`` names the one the user chose).
    :param kernel: the kernel facade; the executor loads handlers and batchers and finds
        serializers through ``wfserve.kernel.hooks``.
    :returns: an :class:`~wfserve.kernel.contracts.Executor` (not yet started), or None when this
        plugin is not the chosen executor. First non-None result wins. Called from the
        registering thread.
    """


@hookspec
def wfserve_handler_ran(workflow: str, node: str, rows: int, seconds: float,
                        error: str | None) -> None:
    """A node's handler ran one batch in a process where this server's ``wfserve_load_handler``
    wrappers do not apply (a Ray actor): observe it as a wrapper of the handler would have.

    An engine whose handlers load through this server's plugin manager (threaded) never calls
    this (wrap the handler in ``wfserve_load_handler`` to see those calls). An engine whose
    handlers run elsewhere calls it once per handler call whose outcome came back; a batch
    whose worker died or timed out first, or whose inputs could not be fetched, is not
    reported.

    :param workflow: the workflow's name.
    :param node: the node's name in the DAG.
    :param rows: the rows of the batch (the batch size), >= 1.
    :param seconds: how long the handler call took, measured where it ran.
    :param error: the class name of the exception the handler raised (``type(exc).__name__``),
        or None when it returned (even an output the engine then refuses).
    :returns: nothing; every plugin is called. Called from the engine's thread that received
        the batch's outcome, before the batch's requests are settled (a request's calls are
        observed by the time its answer is); an implementation must not block or raise.
    """


@hookspec(firstresult=True)
def wfserve_serializer(content_type: str, obj: Any) -> Serializer | None:
    """Find the serializer for a content type (request decoding) or an object (encoding).

    :param content_type: the media type without parameters, lower case (``application/json``),
        or ``""`` when unknown.
    :param obj: when encoding, the object to encode (lets a plugin pick by type, e.g. tensors);
        when decoding, the raw ``bytes``.
    :returns: a :class:`~wfserve.kernel.contracts.Serializer`, or None when neither the type nor the
        object is this plugin's. First non-None result wins. The kernel caches the answer per
        ``(content_type, type(obj))``: decide by type, never by value. Called from request
        threads.
    """


# --- API and serving ------------------------------------------------------------------------


@hookspec
def wfserve_add_routes(app: Any, kernel: Kernel, surface: str) -> None:
    """Add routes to the app of one API surface.

    :param app: the ``falcon.App`` being built for that surface.
    :param kernel: the kernel facade (settings, hooks, registry) the resources use.
    :param surface: ``"inference"``, ``"management"`` or ``"metrics"``; add only routes that
        belong to it, so that a route answers only on its own surface's port.
    :returns: nothing; every plugin is called. Called once per surface per server process.
    """


@hookspec
def wfserve_middleware(kernel: Kernel, surfaces: list[str]) -> list[Any] | None:
    """Falcon middleware for the app that serves ``surfaces`` (request-scoped concerns).

    :param kernel: the kernel facade.
    :param surfaces: the surfaces that app serves (one, or several sharing a port); a
        middleware learns the surface of each request from ``req.context.surface`` (set in
        ``process_resource``, None when no route matched and the port serves several).
    :returns: middleware objects (Falcon's ``process_request``/``process_resource``/
        ``process_response`` methods), or None for none; every plugin is called and the lists
        are installed in call order, after the API's own request-context middleware.
        Called once per app, from the thread that builds the apps.
    """


@hookspec(firstresult=True)
def wfserve_serve(kernel: Kernel) -> int | None:
    """Run the server in the foreground until it is stopped.

    :param kernel: the kernel facade, not started: the plugin runs the start-up phases
        (:func:`wfserve.kernel.startup.start`) in the process that serves, and
        ``kernel.hooks.shutdown`` when it stops.
    :returns: the process exit code, or None when this plugin does not serve. First non-None
        result wins; if none answers ``wfserve serve`` says no server plugin is installed.
        Called from the main thread of ``wfserve serve``.
    """


@hookspec
def wfserve_spec_sections() -> dict[str, Callable[[Any], Any]] | None:
    """Declare the per-model spec sections this plugin owns (``m1: {url: ..., ray: {...}}``).

    :returns: ``{key: check}``, or None for none. ``check(value)`` returns the section as the
        node keeps it (``NodeSpec.extensions[key]``) or raises ``ValueError`` with the reason,
        which becomes a ``SpecError`` naming the model and the key. A key no enabled plugin
        owns is a ``SpecError`` naming it; two plugins owning one key is a ``PluginError``.
        Every plugin is called. Called from the thread that parses a spec (a registration, or
        ``wfserve check``).
    """


@hookspec
def wfserve_settings() -> type | None:
    """Declare this plugin's settings.

    :returns: a frozen dataclass whose fields are declared with
    :func:`wfserve.kernel.settings.setting`
        (type, default, help, TorchServe key), or None. Its fields join the one settings table:
        flags, ``WFSERVE_<NAME>`` variables, YAML and ``config.properties`` keys and
        ``wfserve settings``; names are unique across the table. Read the values with
        ``kernel.settings.of(TheClass)``. A disabled plugin's keys are reported as ignored,
        not refused. Every plugin is called. Called from the main thread, before the
        command line is parsed.
    """


@hookspec
def wfserve_add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add sub-commands to the ``wfserve`` command line.

    :param subparsers: the ``argparse`` sub-parser collection; set ``func`` on each parser to a
        callable taking ``(args, settings)`` and returning an exit code.
    :returns: nothing; every plugin is called. Called once, before the command line is parsed.
    """


# --- lifecycle ------------------------------------------------------------------------------


@hookspec(firstresult=True)
def wfserve_registration_store(settings: Settings) -> RegistrationStore | None:
    """Where the registrations shared by all server processes live.

    :param settings: the server's settings.
    :returns: a :class:`~wfserve.kernel.store.RegistrationStore`, or None to let another
        plugin answer (the built-in one: SQLite in ``run_dir``). First non-None result wins.
        Called once per server start, in the parent process, before the server processes are
        forked.
    """


@hookspec
def wfserve_preload(kernel: Kernel) -> None:
    """Once per server start, in the parent process, before the server processes are forked:
    make what they share (key files, a metrics folder) and import what they all use, so it is
    shared copy-on-write.

    Start no thread here (threads do not survive a fork) and register no workflow.

    :param kernel: the kernel facade; the registration store is open.
    :returns: nothing; every plugin is called. Called from the parent's main thread; not
        called for a kernel that serves in the process that made it (tests, embedding).
    """


@hookspec
def wfserve_process_exited(kernel: Kernel, pid: int) -> None:
    """A server process ended, whichever way (stopped, crashed, killed): forget what was
    only true while it lived (its gauges in a metrics folder). The parent may start another
    in its place.

    Be quick and do not raise: the parent supervises the other processes meanwhile.

    :param kernel: the kernel facade, as :func:`wfserve_preload` left it.
    :param pid: the process id of the server process that ended.
    :returns: nothing; every plugin is called. Called in the parent process (the one that
        ran ``wfserve_preload``), from its main thread, once per server process that ended,
        after it ended; not called for a kernel that serves in the process that made it.
    """


# Start-up runs in phases, in the order of :data:`wfserve.kernel.startup.PHASES`: startup (prepare),
# restore, register_configured, register_defaults, ready. Within one phase plugins are called
# in pluggy's order, which must not matter; what must come first belongs to an earlier phase.


@hookspec
def wfserve_startup(kernel: Kernel) -> None:
    """Start-up phase 1, prepare: make this server's plugin state, before any registration.

    Keep the state in ``kernel.stash`` and register stateful plugin objects (their hooks
    then see every later phase and every registration event); write key files, start background
    work. Register no workflow here: every registration event must find the state in place.

    :param kernel: the kernel facade.
    :returns: nothing; every plugin is called. Called once per server process, from the thread
        that starts it (the server worker's main thread), before any request is served.
    """


@hookspec
def wfserve_restore(kernel: Kernel) -> None:
    """Start-up phase 2, restore: register again what an earlier run of this server saved
    (versions, defaults, scale), before any configured workflow.

    :param kernel: the kernel facade, prepared (``wfserve_startup`` has run).
    :returns: nothing; every plugin is called. A workflow that fails is logged, not raised.
        Called once per server run: in the first server process to start (the others
        catch up from the registration store), from the thread that starts it.
    """


@hookspec
def wfserve_register_configured(kernel: Kernel) -> None:
    """Start-up phase 3: register the workflows the settings name (``workflows``).

    A name that the restore phase registered is left as it was restored (not fetched, no
    version added): the snapshot holds the newer state.

    :param kernel: the kernel facade, restored.
    :returns: nothing; every plugin is called. A workflow that fails is logged, not raised.
        Called once per server run: in the first server process to start (the others
        catch up from the registration store), from the thread that starts it.
    """


@hookspec
def wfserve_register_defaults(kernel: Kernel) -> None:
    """Start-up phase 4: register the workflows served only when their name is still free
    (the bundled example), after everything restored or configured.

    :param kernel: the kernel facade, with the restored and configured workflows registered.
    :returns: nothing; every plugin is called. A workflow that fails is logged, not raised.
        Called once per server run: in the first server process to start (the others
        catch up from the registration store), from the thread that starts it.
    """


@hookspec
def wfserve_ready(kernel: Kernel) -> None:
    """Start-up phase 5, ready: every start-up registration is done, no request served yet
    (freeze what was loaded).

    :param kernel: the kernel facade, with every start-up workflow registered.
    :returns: nothing; every plugin is called. Called once per server process, from the
        thread that starts it, last.
    """


@hookspec
def wfserve_shutdown(kernel: Kernel) -> None:
    """The server process is stopping: drain executors, flush, close.

    :param kernel: the kernel facade.
    :returns: nothing; every plugin is called. Called once, from the stopping thread.
    """


@hookspec
def wfserve_workflow_event(kernel: Kernel, event: str, workflow: Workflow) -> None:
    """Something happened to a workflow.

    :param kernel: the kernel facade.
    :param event: ``"registered"``, ``"unregistered"``, ``"scaled"``, ``"updated"`` or
        ``"node_failed"``.
    :param workflow: the workflow concerned.
    :returns: nothing; every plugin is called. Called from the thread that caused the event,
        in the server process that made the change (the other server processes apply it from
        the registration store without an event); an implementation must not block.
    """
