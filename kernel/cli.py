"""The ``wfserve`` command: ``serve``, ``settings``, ``plugins``, ``check`` and plugin commands.

Settings come from the table in :mod:`wfserve.kernel.settings`; every setting is also a ``serve``
flag. TorchServe's own flags are accepted as aliases (``--ts-config``, ``--model-store``,
``--workflow-store``, ``--ncs``, ``--disable-token-auth``, ``--enable-model-api``).
"""

from __future__ import annotations

import argparse
import os
import sys
import typing
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import structlog

from wfserve.kernel.core import Kernel
from wfserve.kernel.errors import InvalidDAG
from wfserve.kernel.errors import NoPluginAnswered
from wfserve.kernel.errors import WfserveError
from wfserve.kernel.logs import configure_logging
from wfserve.kernel.plugins import Hooks
from wfserve.kernel.plugins import declared_settings
from wfserve.kernel.plugins import make_plugin_manager
from wfserve.kernel.plugins import plugin_names
from wfserve.kernel.redact import redact_url
from wfserve.kernel.settings import Settings
from wfserve.kernel.settings import load_settings
from wfserve.kernel.settings import settings_table
from wfserve.kernel.spec import parse_spec
from wfserve.kernel.torchserve_keys import every_key

Command = Callable[[argparse.Namespace, Settings], int]
_SOURCE_FLAGS = ("config", "ts_config")


def _version() -> str:
    try:
        return metadata.version("wfserve")
    except metadata.PackageNotFoundError:
        return "unknown"


def _add_setting_flags(parser: argparse.ArgumentParser, sections: Sequence[type] = ()) -> None:
    group = parser.add_argument_group(
        "settings (also WFSERVE_<NAME> and the YAML/properties files)"
    )
    group.add_argument("--config", type=Path, help="wfserve YAML settings file "
                       "(default: conf/wfserve.yaml of the project).")
    group.add_argument("--ts-config", type=Path, help="TorchServe config.properties to read.")
    for info in settings_table(sections):
        if typing.get_origin(info.type) is dict:
            continue
        help_text = f"{info.help} (default: {info.default!r})"
        if info.type is bool:
            group.add_argument(info.flag, dest=info.name, action=argparse.BooleanOptionalAction,
                               default=None, help=help_text)
        elif typing.get_origin(info.type) is list:
            group.add_argument(info.flag, dest=info.name, default=None, metavar="VALUE",
                               nargs="+", help=help_text)
        else:
            group.add_argument(info.flag, dest=info.name, default=None, metavar="VALUE",
                               help=help_text)
    aliases = parser.add_argument_group("TorchServe aliases")
    aliases.add_argument("--ncs", dest="snapshot", action="store_const", const=False,
                         help="No config snapshot: same as --no-snapshot.")
    aliases.add_argument("--disable-token-auth", dest="disable_token_authorization",
                         action="store_const", const=True,
                         help="Same as --disable-token-authorization.")


def build_parser(kernel_pm: Any = None, sections: Sequence[type] = ()) -> argparse.ArgumentParser:
    """The argument parser; plugins add sub-commands through ``wfserve_add_commands``, and
    their settings (``sections``) are flags of the commands that take settings."""
    parser = argparse.ArgumentParser(
        prog="wfserve",
        description="A TorchServe-compatible workflow server: serves .war/.mar archives over "
        "TorchServe's REST API.",
    )
    parser.add_argument("--version", action="version", version=f"wfserve {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="Start the server (inference, management, metrics).",
                           description="Start the server in the foreground.")
    _add_setting_flags(serve, sections)
    serve.set_defaults(func=cmd_serve)

    show = sub.add_parser("settings", help="List every setting: default, env variable, "
                          "TorchServe key, meaning.")
    _add_setting_flags(show, sections)
    show.set_defaults(func=cmd_settings)

    plugins = sub.add_parser("plugins", help="List the plugins loaded and the hooks they answer.")
    _add_setting_flags(plugins, sections)
    plugins.set_defaults(func=cmd_plugins)

    check = sub.add_parser("check", help="Validate a workflow spec YAML and its DAG.")
    check.add_argument("spec", type=Path, help="the spec file (as given to the archiver)")
    check.set_defaults(func=cmd_check)

    if kernel_pm is not None:
        kernel_pm.hook.wfserve_add_commands(subparsers=sub)
    return parser


def _settings_from(args: argparse.Namespace, sections: Sequence[type],
                   disabled: Mapping[type, str]) -> Settings:
    """The settings of a command with setting flags; the keys they do not use (TorchServe's,
    a disabled plugin's) are kept in ``args.ignored_keys`` for ``serve`` to report."""
    names = {info.name for info in settings_table(sections)}
    cli = {k: v for k, v in vars(args).items() if k in names and v is not None}
    args.ignored_keys = []
    return load_settings(cli=cli, env=os.environ, config=getattr(args, "config", None),
                         ts_config=getattr(args, "ts_config", None), sections=sections,
                         disabled=disabled, ignored=args.ignored_keys)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Start the server through the ``wfserve_serve`` hook; first report each
    config.properties key that is not used, and why (once per start)."""
    for key, why in getattr(args, "ignored_keys", ()):
        structlog.get_logger("wfserve").warning("setting ignored", key=key, reason=why)
    kernel = Kernel.create(settings, env=os.environ)
    try:
        return kernel.hooks.serve(kernel)
    except NoPluginAnswered:
        structlog.get_logger("wfserve").error(
            "no server plugin is installed: nothing answers wfserve_serve "
            "(the API plugin provides it)"
        )
        return 2


def cmd_settings(args: argparse.Namespace, settings: Settings) -> int:
    """Print the settings table with the values in effect."""
    out = sys.stdout
    table = settings_table(settings.sections.keys())
    for info in table:
        owner = settings.of(info.section) if info.section is not None else settings
        value = getattr(owner, info.name)
        ts = f"  config.properties: {info.ts_key}\n" if info.ts_key else ""
        shown = "(secret)" if info.secret and value != info.default else repr(value)
        out.write(f"{info.name} = {shown}\n  {info.help}\n  default {info.default!r}; "
                  f"env {info.env}; flag {info.flag}\n{ts}")
    setting_keys = {info.ts_key: info.name for info in table if info.ts_key}
    out.write("\nTorchServe 0.12.0 config.properties keys:\n")
    for key, what in every_key(setting_keys).items():
        out.write(f"{key}: {what}\n")
    return 0


def cmd_plugins(args: argparse.Namespace, settings: Settings) -> int:
    """Print each registered plugin and the hooks it implements."""
    pm = make_plugin_manager(settings, env=os.environ)
    for name in plugin_names(pm):
        hooks = sorted(c.name for c in pm.get_hookcallers(pm.get_plugin(name)) or [])
        sys.stdout.write(f"{name}: {', '.join(hooks) or '(no hooks)'}\n")
    return 0


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    """Parse a spec (wfserve's extensions included: ``edges:``, ``deadline-ms``) and validate
    its DAG; print a summary (a node a line, a conditional edge's child followed by ``[when
    <condition>]``, then the extensions set) or the error."""
    try:
        text = args.spec.read_text()
    except OSError as exc:
        sys.stderr.write(f"wfserve: cannot read {args.spec}: {exc.strerror}\n")
        return 2
    try:
        pm = make_plugin_manager(settings, env=os.environ)
        spec = parse_spec(text, source=args.spec.name,
                          sections=Hooks(pm, settings).spec_sections())
        dag = spec.dag()
    except (WfserveError, InvalidDAG) as exc:
        sys.stderr.write(f"wfserve: {args.spec.name}: {exc.message}\n")
        return 1
    for name in dag.order:
        node = spec.nodes[name]
        extra = f" url={redact_url(node.url)}" if node.url else ""
        children = ", ".join(
            f"{child} [when {spec.conditions[(name, child)].source}]"
            if (name, child) in spec.conditions
            else f"{child} [map]" if (name, child) in spec.maps else child
            for child in dag.children(name)) or "(leaf)"
        sys.stdout.write(
            f"{name}: {node.kind}{extra} -> {children}  {node.config.as_properties()}\n"
        )
    if spec.deadline_ms is not None:
        sys.stdout.write(f"deadline-ms: {spec.deadline_ms}\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wfserve`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        base = load_settings(env=os.environ, lenient=True)  # which plugins: kernel keys only
        pm = make_plugin_manager(base, env=os.environ)
        sections, disabled = declared_settings(Hooks(pm, base))
        parser = build_parser(pm, sections)
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 0
        settings = (_settings_from(args, sections, disabled) if hasattr(args, "ts_config")
                    else load_settings(env=os.environ, sections=sections, disabled=disabled))
        configure_logging(settings)
        return int(args.func(args, settings) or 0)
    except WfserveError as exc:
        sys.stderr.write(f"wfserve: error: {exc.message}\n")
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
