"""Settings: one declaration per setting, read from four sources in a fixed precedence.

Each field of :class:`Settings` is a setting: its type is the annotation, its metadata holds
the help text and the TorchServe ``config.properties`` key it answers to. The same table gives
the typed object, the CLI flags (``--inference-address``) and ``wfserve settings`` (the docs).

Precedence, lowest first: ``conf/wfserve.yaml`` (or ``--config``) < ``config.properties``
(``--ts-config``, TorchServe keys) < environment ``WFSERVE_<NAME>`` < command-line flags.
Plugin-specific settings live under ``plugins: {<name>: {...}}`` in the YAML and are read with
:meth:`Settings.plugin`.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

import yaml

from kernel.errors import UsageError
from kernel.properties import PropertiesError
from kernel.properties import apply_ts_variables
from kernel.properties import parse_properties
from kernel.properties import resolve_env_references
from kernel.torchserve_keys import ignored_reason

ENV_PREFIX = "WFSERVE_"
#: read when no other config.properties is named and it exists, as TorchServe does
TS_DEFAULT_CONFIG = "config.properties"
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "conf" / "wfserve.yaml"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def setting(
    default: Any, help: str, *, ts_key: str | None = None, choices: tuple[str, ...] = (),
    secret: bool = False,
) -> Any:
    """Declare one setting (a dataclass field with its documentation); a ``secret`` one is
    never printed."""
    meta = {"help": help, "ts_key": ts_key, "choices": choices, "secret": secret}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Settings:
    """Typed server settings. Build with :func:`load_settings`; never mutated after."""

    inference_address: str = setting(
        "http://127.0.0.1:8080", "Inference API bind address.", ts_key="inference_address"
    )
    management_address: str = setting(
        "http://127.0.0.1:8081", "Management API bind address.", ts_key="management_address"
    )
    metrics_address: str = setting(
        "http://127.0.0.1:8082", "Metrics API bind address.", ts_key="metrics_address"
    )
    allow_remote_management: bool = setting(
        False, "Allow the management API to bind a non-loopback address."
    )
    model_store: str = setting(
        "model_store", "Folder model URLs (.mar) are resolved against.", ts_key="model_store"
    )
    workflow_store: str | None = setting(
        None, "Folder workflow URLs (.war) are resolved against; defaults to model_store.",
        ts_key="workflow_store",
    )
    allowed_urls: list[str] = setting(
        ["file://.*", "http(s)?://.*"],
        "Regexes a registration URL must match (comma-separated in config.properties).",
        ts_key="allowed_urls",
    )
    max_request_size: int = setting(
        6553500, "Largest request body accepted, in bytes.", ts_key="max_request_size"
    )
    max_response_size: int = setting(
        6553500, "Largest response body sent, in bytes.", ts_key="max_response_size"
    )
    default_response_timeout: int = setting(
        120, "Seconds a request may take end to end.", ts_key="default_response_timeout"
    )
    enable_model_api: bool = setting(
        False, "Accepted as torchserve's flag; wfserve registers models only inside workflows "
        "(POST and DELETE /models answer 405 either way)."
    )
    limit_max_image_pixels: bool = setting(
        True, "Handlers see it in context.system_properties; TorchServe's vision handler "
        "lifts Pillow's decompression-bomb limit when it is false.",
        ts_key="limit_max_image_pixels",
    )
    disable_token_authorization: bool = setting(
        False, "Turn token authorization off.", ts_key="disable_token_authorization"
    )
    token_expiration_min: float = setting(
        60.0, "Minutes an inference or management key stays valid after it is made.",
        ts_key="token_expiration_min",
    )
    key_file: str = setting(
        "key_file.json", "Where the token keys are written (TorchServe's key_file.json; "
        "relative paths are under the current folder)."
    )
    request_read_timeout: float = setting(
        30.0, "Seconds a client may stall while sending a request before it is dropped."
    )
    job_queue_size: int = setting(
        100, "Requests a node may queue before answering 503.", ts_key="job_queue_size"
    )
    download_timeout: float = setting(60.0, "Seconds an archive download may take.")
    max_download_size: int = setting(
        2 * 1024**3, "Largest archive a URL may download, in bytes."
    )
    max_archive_size: int = setting(
        4 * 1024**3, "Largest total uncompressed size of one archive, in bytes."
    )
    max_archive_entries: int = setting(10000, "Most entries one archive may hold.")
    cors_allowed_origin: str = setting(
        "", "Access-Control-Allow-Origin sent on every answer, as written (empty: none).",
        ts_key="cors_allowed_origin",
    )
    cors_allowed_methods: str = setting(
        "", "Access-Control-Allow-Methods sent on every answer, as written (empty: none).",
        ts_key="cors_allowed_methods",
    )
    cors_allowed_headers: str = setting(
        "", "Access-Control-Allow-Headers sent on every answer, as written (empty: none).",
        ts_key="cors_allowed_headers",
    )
    certificate_file: str = setting(
        "", "PEM certificate (chain) of the https:// addresses; with private_key_file.",
        ts_key="certificate_file",
    )
    private_key_file: str = setting(
        "", "PEM private key of the https:// addresses; with certificate_file.",
        ts_key="private_key_file",
    )
    keystore: str = setting(
        "", "PKCS12 keystore holding the key and certificate of the https:// addresses (used "
        "before certificate_file; neither: a self-signed certificate is made).",
        ts_key="keystore",
    )
    keystore_pass: str = setting(
        "changeit", "Password of the keystore.", ts_key="keystore_pass", secret=True
    )
    keystore_type: str = setting(
        "PKCS12", "Type of the keystore: PKCS12 (JKS is refused: convert it with keytool).",
        ts_key="keystore_type",
    )
    max_workflows: int = setting(100, "Most workflows that may be registered at once.")
    max_versions_per_workflow: int = setting(
        10, "Most versions of one workflow that may be registered at once."
    )
    max_nodes_per_workflow: int = setting(100, "Most nodes one workflow spec may declare.")
    max_workers_per_node: int = setting(
        32, "Most workers one node may run (spec values and scale calls alike)."
    )
    block_private_addresses: bool = setting(
        False, "Refuse downloads from loopback, link-local and private addresses (checked "
        "after DNS resolution; the download connects to the address checked)."
    )
    max_multipart_parts: int = setting(
        1000, "Most parts a multipart/form-data request body may hold."
    )
    max_multipart_depth: int = setting(
        4, "Deepest nesting of multipart parts inside a multipart/form-data request body."
    )
    request_body_timeout: float = setting(
        60.0, "Seconds a client may take to send a whole request body (after the headers)."
    )
    request_min_rate: int = setting(
        1024, "Bytes per second a request body must average once request_read_timeout has "
        "passed; a slower sender is dropped (0: no minimum)."
    )
    response_write_timeout: float = setting(
        30.0, "Seconds a client may take to read a response before it is dropped."
    )
    workflows: list[str] = setting(
        [], "Workflows to register at start-up, as NAME=URL (or just URL) entries."
    )
    example: bool = setting(
        True, "Build (first start) and register the bundled 'example' workflow at start-up."
    )
    executor: str = setting("threaded", "Executor plugin that runs workflows (threaded, ray).")
    ray_address: str = setting(
        "local", "executor ray: the cluster to use: local (start one in this process), auto "
        "(the running cluster on this machine), or ray://host:port."
    )
    ray_num_cpus: int = setting(
        0, "executor ray, address local: CPUs the local Ray cluster may use (0: all)."
    )
    snapshot: bool = setting(True, "Write registrations to a snapshot and restore them at start.")
    snapshot_dir: str = setting("snapshots", "Folder snapshots are written to.")
    snapshot_keep: int = setting(5, "Newest snapshot files kept in snapshot_dir (at least 1).")
    foreground: bool = setting(
        False, "Stay attached to the terminal (default: start in the background, as "
        "torchserve --start does, and return once the server answers)."
    )
    run_dir: str = setting(".wfserve", "Folder for the pid file and the background server's log.")
    workers: int = setting(1, "gunicorn worker processes (must be 1: models live in one process).")
    threads: int = setting(32, "HTTP threads per worker process.")
    gc_freeze: bool = setting(
        True, "Keep loaded workflows out of the garbage collector's scans (gc.freeze after "
        "start-up and registrations): no full-collection stalls over the loaded models."
    )
    http_linger_ms: float = setting(
        1.0, "Milliseconds an HTTP thread waits for the next request on the keep-alive "
        "connection it just answered, while no other connection waits for a thread (0: every "
        "kept-alive connection goes back to the poller, as in stock gunicorn)."
    )
    log_format: str = setting(
        "auto", "Log format: json, console, or auto (console on a terminal).",
        choices=("auto", "json", "console"),
    )
    log_level: str = setting(
        "info", "Lowest log level written.", choices=("debug", "info", "warning", "error")
    )
    log_batch_ms: float = setting(
        100.0, "The server writes debug and info lines (the access log) in batches at most "
        "this many milliseconds apart; warnings and errors at once (0: every line at once)."
    )
    plugins_disable: list[str] = setting(
        [], "Plugins (built-in or installed) to switch off, by name."
    )
    plugin_config: dict[str, Any] = setting(
        {}, "Per-plugin settings, the YAML's 'plugins: {<name>: {...}}' section."
    )

    @property
    def workflow_store_path(self) -> Path:
        """Where ``.war`` URLs resolve: ``workflow_store``, else ``model_store`` (TorchServe)."""
        return Path(self.workflow_store or self.model_store)

    @property
    def model_store_path(self) -> Path:
        """Where model URLs of a spec resolve."""
        return Path(self.model_store)

    def plugin(self, name: str) -> Mapping[str, Any]:
        """The settings of one plugin (``plugins: {name: {...}}``), empty when none."""
        value = self.plugin_config.get(name, {})
        return value if isinstance(value, Mapping) else {}


@dataclass(frozen=True)
class SettingInfo:
    """One row of the settings table."""

    name: str
    type: Any
    default: Any
    help: str
    ts_key: str | None
    choices: tuple[str, ...]
    secret: bool = False

    @property
    def env(self) -> str:
        """The environment variable that sets it."""
        return ENV_PREFIX + self.name.upper()

    @property
    def flag(self) -> str:
        """The command-line flag that sets it."""
        return "--" + self.name.replace("_", "-")


def settings_table() -> tuple[SettingInfo, ...]:
    """Every setting, in declaration order."""
    hints = typing.get_type_hints(Settings)
    rows = []
    for f in dataclasses.fields(Settings):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        meta = f.metadata
        rows.append(
            SettingInfo(f.name, hints[f.name], default, meta["help"], meta["ts_key"],
                        meta["choices"], meta["secret"])
        )
    return tuple(rows)


# --- coercion -------------------------------------------------------------------------------


def _base_type(tp: Any) -> Any:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, type(int | None)) and len(args) == 1:
        return args[0]
    return tp


def coerce(info: SettingInfo, value: Any, source: str) -> Any:
    """Convert a raw value (a string from a file, env or CLI, or a YAML value) to the type.

    :raises UsageError: naming the setting and the source when the value does not fit.
    """
    tp = _base_type(info.type)
    try:
        if value is None:
            if tp is not info.type:  # Optional
                return None
            raise ValueError("a value is required")
        if tp is bool:
            value = _to_bool(value)
        elif tp in (int, float):
            if isinstance(value, bool):
                raise ValueError("expected a number")
            value = tp(value)
        elif typing.get_origin(tp) is list:
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, list):
                raise ValueError("expected a list")
            value = [str(v) for v in value]
        elif typing.get_origin(tp) is dict:
            if not isinstance(value, dict):
                raise ValueError("expected a mapping")
        else:
            value = str(value)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"setting {info.name} from {source}: {exc} (got {value!r})",
                         key=info.name) from None
    if info.choices and value not in info.choices:
        raise UsageError(
            f"setting {info.name} from {source}: {value!r} is not one of {', '.join(info.choices)}",
            key=info.name,
        )
    return value


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("expected true or false")


# --- sources ---------------------------------------------------------------------------------


def _flatten(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in doc.items():
        name = f"{prefix}{key}".replace("-", "_").replace(".", "_")
        if key == "plugins" and not prefix and isinstance(value, Mapping):
            rest = {k: v for k, v in value.items() if k != "disable"}
            out["plugin_config"] = dict(rest)
            if "disable" in value:
                out["plugins_disable"] = value["disable"]
        else:
            out[name] = value
    return out


def read_yaml_config(path: Path) -> dict[str, Any]:
    """Read a wfserve YAML settings file into ``{setting name: value}``."""
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"cannot read settings file {path}: {exc}") from None
    if not isinstance(doc, Mapping):
        raise UsageError(f"settings file {path} must hold a mapping")
    return _flatten(doc)


def read_properties(path: Path) -> dict[str, str]:
    """Read a Java ``.properties`` file (TorchServe's ``config.properties``): ``{key: value}``,
    escapes processed as ``java.util.Properties`` does (:mod:`kernel.properties`).

    :raises UsageError: the file cannot be read, or holds a malformed ``\\uXXXX`` escape.
    """
    try:
        return parse_properties(path.read_text(encoding="latin-1"))
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None
    except PropertiesError as exc:
        raise UsageError(f"{path}: {exc}") from None


def ts_config_file(given: Path | None, env: Mapping[str, str]) -> Path | None:
    """The ``config.properties`` to read, found as TorchServe finds it: ``TS_CONFIG_FILE``,
    else ``given`` (``--ts-config``), else ``WFSERVE_TS_CONFIG``, else ``./config.properties``
    when it exists; None when there is none."""
    named = env.get("TS_CONFIG_FILE") or given or _env_path(env, "TS_CONFIG")
    if named:
        return Path(named)
    default = Path(TS_DEFAULT_CONFIG)
    return default if default.is_file() else None


def read_ts_config(path: Path, env: Mapping[str, str]) -> dict[str, str]:
    """A TorchServe ``config.properties`` as its ConfigManager ends up with it: read as Java
    reads it, ``$$NAME$$`` values resolved, ``TS_<KEY>`` variables applied when
    ``enable_envvars_config`` is true.

    :raises UsageError: unreadable, a malformed escape, or an unset ``$$NAME$$``.
    """
    props = read_properties(path)
    try:
        props = resolve_env_references(props, env)
    except PropertiesError as exc:
        raise UsageError(f"{path}: {exc}") from None
    props = apply_ts_variables(props, env)
    _refuse_unsupported(path, props)
    return props


def _refuse_unsupported(path: Path, props: Mapping[str, str]) -> None:
    """Keys that change what handlers receive in TorchServe, which wfserve does not
    implement: a non-default value is refused rather than silently ignored."""
    decode = props.get("decode_input_request", "true").strip()
    if decode.lower() != "true":
        raise UsageError(
            f"{path}: decode_input_request={decode} is not supported: wfserve decodes JSON and "
            "text request bodies for handlers as TorchServe does by default; remove the key",
            key="decode_input_request")
    envelope = props.get("service_envelope", "").strip()
    if envelope:
        raise UsageError(
            f"{path}: service_envelope={envelope} is not supported: wfserve passes request "
            "bodies to handlers without an envelope (TorchServe's default); remove the key",
            key="service_envelope")


def load_settings(
    *,
    cli: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config: Path | None = None,
    ts_config: Path | None = None,
    ignored: list[tuple[str, str]] | None = None,
) -> Settings:
    """Build :class:`Settings` from every source, lowest precedence first.

    :param cli: values given on the command line, by setting name (None values are ignored).
    :param env: the environment to read ``WFSERVE_*`` from (pass ``os.environ``); None reads none.
    :param config: a wfserve YAML file; defaults to the project's ``conf/wfserve.yaml`` when it
        exists (``WFSERVE_CONFIG`` in ``env`` may name another).
    :param ts_config: a TorchServe ``config.properties`` (``--ts-config``); found as
        :func:`ts_config_file` says (``TS_CONFIG_FILE`` first, as TorchServe).
    :param ignored: gets ``(key, reason)`` for each key of that file wfserve does not use
        (:func:`~kernel.torchserve_keys.ignored_reason`), for the caller to report.
    :raises UsageError: an unreadable file, an unknown key, or a value of the wrong type.
    """
    env = env or {}
    table = {s.name: s for s in settings_table()}
    by_ts_key = {s.ts_key: s for s in table.values() if s.ts_key}
    values: dict[str, Any] = {}

    default_config = DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None
    config = config or _env_path(env, "CONFIG") or default_config
    if config is not None:
        for name, value in read_yaml_config(Path(config)).items():
            if name not in table:
                raise UsageError(f"{config}: unknown setting '{name}'", key=name)
            values[name] = coerce(table[name], value, str(config))

    ts_config = ts_config_file(ts_config, env)
    if ts_config is not None:
        for key, value in read_ts_config(ts_config, env).items():
            info = by_ts_key.get(key)
            if info is not None:
                values[info.name] = coerce(info, value, f"{ts_config} ({key})")
            elif ignored is not None and (why := ignored_reason(key, by_ts_key.keys())):
                ignored.append((key, why))

    for info in table.values():
        if info.env in env:
            values[info.name] = coerce(info, env[info.env], info.env)

    for name, value in (cli or {}).items():
        if value is not None:
            if name not in table:
                raise UsageError(f"unknown setting '{name}'", key=name)
            values[name] = coerce(table[name], value, table[name].flag)
    return Settings(**values)


def _env_path(env: Mapping[str, str], name: str) -> Path | None:
    value = env.get(ENV_PREFIX + name)
    return Path(value) if value else None
