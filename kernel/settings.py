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
import importlib.resources
import typing
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any
from typing import TypeVar

import yaml

from wfserve.kernel.errors import UsageError
from wfserve.kernel.properties import read_ts_config
from wfserve.kernel.properties import ts_config_file
from wfserve.kernel.torchserve_keys import ignored_reason

S = TypeVar("S")
ENV_PREFIX = "WFSERVE_"
#: the embedded default settings (package data of ``wfserve.conf``)
DEFAULT_CONFIG = Path(str(importlib.resources.files("wfserve.conf") / "wfserve.yaml"))
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
    model_store: str = setting(
        ".wfserve/model_store", "Folder model URLs (.mar) are resolved against.",
        ts_key="model_store",
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
    job_queue_size: int = setting(
        100, "Requests a node may queue before answering 503.", ts_key="job_queue_size"
    )
    max_archive_size: int = setting(
        4 * 1024**3, "Largest total uncompressed size of one archive, in bytes."
    )
    max_archive_entries: int = setting(10000, "Most entries one archive may hold.")
    max_workflows: int = setting(100, "Most workflows that may be registered at once.")
    max_versions_per_workflow: int = setting(
        10, "Most versions of one workflow that may be registered at once."
    )
    max_nodes_per_workflow: int = setting(100, "Most nodes one workflow spec may declare.")
    max_workers_per_node: int = setting(
        32, "Most workers one node may run (spec values and scale calls alike)."
    )
    max_map_items: int = setting(
        1000, "Most items one request may send over one map edge (more: 413)."
    )
    workflows: list[str] = setting(
        [], "Workflows to register at start-up, as NAME=URL (or just URL) entries."
    )
    executor: str = setting("threaded", "Executor plugin that runs workflows (threaded, ray).")
    run_dir: str = setting(".wfserve", "Folder for the pid file and the background server's log.")
    log_format: str = setting(
        "auto", "Log format: json, console, or auto (console on a terminal).",
        choices=("auto", "json", "console"),
    )
    log_level: str = setting(
        "info", "Lowest log level written.", choices=("debug", "info", "warning", "error")
    )
    plugins_disable: list[str] = setting(
        [], "Plugins (built-in or installed) to switch off, by name."
    )
    plugin_config: dict[str, Any] = setting(
        {}, "Per-plugin settings, the YAML's 'plugins: {<name>: {...}}' section."
    )
    #: the plugins' own settings: declared class -> its instance (:meth:`of`); not a setting
    sections: Mapping[type, Any] = field(default_factory=dict, repr=False,
                                         metadata={"section": True})

    @property
    def workflow_store_path(self) -> Path:
        """Where ``.war`` URLs resolve: ``workflow_store``, else ``model_store`` (TorchServe)."""
        return Path(self.workflow_store or self.model_store)

    @property
    def model_store_path(self) -> Path:
        """Where model URLs of a spec resolve."""
        return Path(self.model_store)

    def of(self, section: type[S]) -> S:
        """A plugin's settings: the instance of the class it declared through
        ``wfserve_settings``, as loaded; the class's defaults when it was not loaded (a
        :class:`Settings` built directly, in tests or embedding)."""
        found = self.sections.get(section)
        return found if found is not None else section()

    def with_section(self, value: Any) -> Settings:
        """These settings with one plugin section replaced (tests, embedding)."""
        return dataclasses.replace(self, sections={**self.sections, type(value): value})

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
    #: the plugin's settings class that declares it; None for a kernel setting
    section: type | None = None

    @property
    def env(self) -> str:
        """The environment variable that sets it."""
        return ENV_PREFIX + self.name.upper()

    @property
    def flag(self) -> str:
        """The command-line flag that sets it."""
        return "--" + self.name.replace("_", "-")


def settings_table(sections: Iterable[type] = ()) -> tuple[SettingInfo, ...]:
    """Every setting: the kernel's, then each plugin section's, in declaration order.

    :raises UsageError: a section redeclaring a name already in the table.
    """
    rows = list(_rows(Settings, None))
    for section in sections:
        rows.extend(_rows(section, section))
    seen: dict[str, SettingInfo] = {}
    for row in rows:
        if row.name in seen:
            owner = getattr(row.section, "__qualname__", "the kernel")
            raise UsageError(f"setting {row.name} is declared twice ({owner})", key=row.name)
        seen[row.name] = row
    return tuple(rows)


def _rows(cls: type, section: type | None) -> Iterator[SettingInfo]:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("section"):
            continue
        factory = f.default_factory  # a field has a default or a default_factory, not both
        default = f.default if factory is dataclasses.MISSING else factory()
        meta = f.metadata
        yield SettingInfo(f.name, hints[f.name], default, meta["help"], meta.get("ts_key"),
                          meta.get("choices", ()), meta.get("secret", False), section)


def flat_values(settings: Settings) -> dict[str, Any]:
    """Every setting's value by name, the plugin sections' included (``plugin_config``,
    ``plugins_disable`` as they are)."""
    values = {f.name: getattr(settings, f.name) for f in dataclasses.fields(Settings)
              if not f.metadata.get("section")}
    for section in settings.sections.values():
        values.update({f.name: getattr(section, f.name) for f in dataclasses.fields(section)})
    return values


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


def load_settings(
    *,
    cli: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config: Path | None = None,
    ts_config: Path | None = None,
    sections: Iterable[type] = (),
    disabled: Mapping[type, str] | None = None,
    ignored: list[tuple[str, str]] | None = None,
    lenient: bool = False,
) -> Settings:
    """Build :class:`Settings` from every source, lowest precedence first.

    :param cli: values given on the command line, by setting name (None values are ignored).
    :param env: the environment to read ``WFSERVE_*`` from (pass ``os.environ``); None reads none.
    :param config: a wfserve YAML file; defaults to the project's ``conf/wfserve.yaml`` when it
        exists (``WFSERVE_CONFIG`` in ``env`` may name another).
    :param ts_config: a TorchServe ``config.properties`` (``--ts-config``); found as
        :func:`ts_config_file` says (``TS_CONFIG_FILE`` first, as TorchServe).
    :param sections: the plugins' settings classes (``wfserve_settings``), loaded too.
    :param disabled: the settings classes of disabled plugins (class -> plugin name): their
        keys are reported in ``ignored``, not refused.
    :param ignored: gets ``(key, reason)`` for each key that is not used: a ``config.properties``
        key wfserve does not use (:func:`~wfserve.kernel.torchserve_keys.ignored_reason`), a key of
        a disabled plugin; for the caller to report.
    :param lenient: skip unknown keys instead of refusing them (the first, kernel-only read
        that finds which plugins are disabled).
    :raises UsageError: an unreadable file, an unknown key, or a value of the wrong type.
    """
    env = env or {}
    sections = tuple(sections)
    table = {s.name: s for s in settings_table(sections)}
    by_ts_key = {s.ts_key: s for s in table.values() if s.ts_key}
    off: dict[str, tuple[SettingInfo, str]] = {
        row.name: (row, plugin) for section, plugin in (disabled or {}).items()
        for row in _rows(section, section)}
    off_ts = {row.ts_key: (row, plugin) for row, plugin in off.values() if row.ts_key}
    notes = ignored if ignored is not None else []
    values: dict[str, Any] = {}

    def unknown(name: str, where: str) -> None:
        if name in off:
            notes.append((name, f"plugin {off[name][1]} is disabled"))
        elif not lenient:
            raise UsageError(f"{where}unknown setting '{name}'", key=name)

    default_config = DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None
    config = config or _env_path(env, "CONFIG") or default_config
    if config is not None:
        for name, value in read_yaml_config(Path(config)).items():
            if name in table:
                values[name] = coerce(table[name], value, str(config))
            else:
                unknown(name, f"{config}: ")

    ts_config = ts_config_file(ts_config, env)
    if ts_config is not None:
        values.update(_ts_values(ts_config, env, by_ts_key, off_ts, notes))

    for info in table.values():
        if info.env in env:
            values[info.name] = coerce(info, env[info.env], info.env)

    for name, value in (cli or {}).items():
        if value is not None:
            if name in table:
                values[name] = coerce(table[name], value, table[name].flag)
            else:
                unknown(name, "")
    kernel = {k: v for k, v in values.items() if table[k].section is None}
    loaded = {section: section(**{k: v for k, v in values.items()
                                  if table[k].section is section}) for section in sections}
    return Settings(**kernel, sections=loaded)


def _ts_values(path: Path, env: Mapping[str, str], by_ts_key: Mapping[str, SettingInfo],
               off_ts: Mapping[str, tuple[SettingInfo, str]],
               notes: list[tuple[str, str]]) -> dict[str, Any]:
    """The settings a ``config.properties`` sets, by name; the keys it sets that are not
    used go to ``notes`` with the reason."""
    values: dict[str, Any] = {}
    for key, value in read_ts_config(path, env).items():
        info = by_ts_key.get(key)
        if info is not None:
            values[info.name] = coerce(info, value, f"{path} ({key})")
        elif key in off_ts:
            notes.append((key, f"plugin {off_ts[key][1]} is disabled"))
        elif why := ignored_reason(key, by_ts_key.keys()):
            notes.append((key, why))
    return values


def _env_path(env: Mapping[str, str], name: str) -> Path | None:
    value = env.get(ENV_PREFIX + name)
    return Path(value) if value else None
