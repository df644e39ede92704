"""The error hierarchy of wfserve, named for outcomes.

Every error is a :class:`WfserveError` carrying a human message plus structured fields
(``workflow``, ``node``, ``attempt``, ``key``, ``line``... whatever is known where it is raised).
``ts_type`` is the exception name TorchServe 0.12.0 puts in the ``type`` field of its JSON error
body for the same outcome; the API plugin maps classes to HTTP statuses in one place, and never
the raising code.

No error carries megabytes: the message, and any text field, longer than :data:`MESSAGE_LIMIT`
is cut there (:func:`wfserve.kernel.redact.clip`), whatever outside text went into it.
"""

from __future__ import annotations

from typing import Any

from wfserve.kernel.redact import clip

#: the longest message, or text field, an error keeps (what is longer is clipped)
MESSAGE_LIMIT = 4096


def _bounded(value: Any) -> Any:
    return clip(value, MESSAGE_LIMIT) if isinstance(value, str) else value


class WfserveError(Exception):
    """Root of every error the kernel and plugins raise on purpose."""

    #: TorchServe's exception name for this error: a class default that ``ts_type=`` overrides
    ts_type: str = "InternalServerException"

    def __init__(self, message: str, *, ts_type: str | None = None, **fields: Any) -> None:
        message = _bounded(message)
        super().__init__(message)
        self.message = message
        self.fields: dict[str, Any] = {k: _bounded(v) for k, v in fields.items()}
        if ts_type is not None:
            self.ts_type = ts_type

    def __getattr__(self, name: str) -> Any:
        fields = self.__dict__.get("fields", {})
        if name in fields:
            return fields[name]
        raise AttributeError(name)

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self.fields.items())
        return f"{type(self).__name__}({self.message!r}{extra})"


# --- client mistakes -------------------------------------------------------------------------


class BadRequest(WfserveError):
    """The request itself is wrong (missing parameter, malformed value)."""

    ts_type = "BadRequestException"


class InvalidDAG(BadRequest):
    """The spec's ``dag:`` is not a DAG TorchServe would accept (cycle, self loop, two roots)."""

    ts_type = "InvalidDAGException"


class DownloadFailed(BadRequest):
    """A URL was allowed but its content could not be fetched."""

    ts_type = "DownloadArchiveException"


class InvalidKey(BadRequest):
    """A token was missing, wrong or expired (TorchServe answers 400, not 401)."""

    ts_type = "InvalidKeyException"


class TooLarge(BadRequest):
    """A body, download or archive exceeds a configured size limit."""

    ts_type = "RequestEntityTooLargeException"


class NotFound(WfserveError):
    """The thing named does not exist."""

    ts_type = "ResourceNotFoundException"


class WorkflowNotFound(NotFound):
    """No workflow (or archive in the store) under that name or URL."""

    ts_type = "WorkflowNotFoundException"


class ModelNotFound(NotFound):
    """No model (workflow node) under that name, or a model URL that resolves to nothing."""

    ts_type = "ModelNotFoundException"


class ModelVersionNotFound(NotFound):
    """A model (workflow node) exists but not in that version (fields: model, version)."""

    ts_type = "ModelVersionNotFoundException"


class MethodNotAllowed(WfserveError):
    """The path exists but not for this HTTP method."""

    ts_type = "MethodNotAllowedException"


class Conflict(WfserveError):
    """The name is already taken."""

    ts_type = "ConflictStatusException"


# --- bad artefacts ---------------------------------------------------------------------------


class InvalidWorkflow(WfserveError):
    """The workflow archive or its spec cannot be turned into a workflow."""

    ts_type = "InvalidWorkflowException"


class BadArchive(InvalidWorkflow):
    """A file is not a readable archive, or it is unsafe to extract (fields: path, reason)."""


class SpecError(InvalidWorkflow):
    """The spec YAML is malformed or has a bad key or value (fields: key, line)."""


# --- runtime outcomes ------------------------------------------------------------------------


class RegistrationFailed(WfserveError):
    """One or more nodes of a workflow could not be loaded; nothing was registered."""

    ts_type = "WorkflowException"


class NodeFailed(WfserveError):
    """A node exhausted its attempts for one request (fields: workflow, node, attempt, cause)."""

    ts_type = "InternalServerException"


class ConditionFailed(NodeFailed):
    """A conditional edge's ``when`` could not be evaluated over its parent's output for one
    request (fields: workflow, node (the parent), edge (``parent -> child``), cause)."""


class MapFailed(NodeFailed):
    """A map edge could not split its parent's output, or gather its child's outputs, for one
    request, or one item failed after its retries (fields: workflow, node, edge
    (``parent -> child``), item (its index, when one item is to blame), cause)."""


class NoLeafRan(WfserveError):
    """Conditional edges skipped every leaf of the DAG for one request (fields: workflow,
    skipped (the leaves))."""


class PredictionFailed(WfserveError):
    """A node called as a model (``/predictions/<wf>__<node>``) failed; ``http_status`` is the
    HTTP status TorchServe answers for that failure (a ``PredictionException``'s own code, 503,
    507...), which the API uses instead of its class table (fields: http_status, node)."""

    ts_type = "InternalServerException"


class Timeout(WfserveError):
    """One attempt of a node, or a whole request, ran past its deadline."""

    ts_type = "RequestTimeoutException"


class Unavailable(WfserveError):
    """The server cannot take the request now (queue full, workflow draining)."""

    ts_type = "ServiceUnavailableException"


# --- configuration and plugins ----------------------------------------------------------------


class UsageError(WfserveError):
    """The command line, a setting or the plugin selection is wrong."""

    ts_type = "BadRequestException"


class NoPluginAnswered(WfserveError):
    """A first-result hook returned None from every plugin (field: hook)."""


class UnsupportedURL(NoPluginAnswered, BadRequest):
    """No fetcher plugin handles this URL's scheme (field: url)."""

    ts_type = "DownloadArchiveException"


class UnknownArchiveFormat(NoPluginAnswered, InvalidWorkflow):
    """No archive plugin can open this file (field: path)."""

    ts_type = "InvalidWorkflowException"
