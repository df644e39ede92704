"""Client commands (httpx) for a running server: register, list, describe, unregister, predict.

Each prints the server's answer (JSON pretty-printed, other bodies as they are) and exits 0 on
a 2xx status, 1 on an error status (the TorchServe error message goes to standard error) and
2 when the server cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

import httpx

from wfserve.plugins.api.tls import client_verify
from wfserve.plugins.auth.settings import AuthSettings

if TYPE_CHECKING:
    from wfserve.kernel.settings import Settings

TIMEOUT = httpx.Timeout(300.0, connect=5.0)


def _base(args: argparse.Namespace, settings: Settings, surface: str) -> str:
    given = getattr(args, "url", None)
    if given:
        return given.rstrip("/")
    address = settings.management_address if surface == "management" else (
        settings.inference_address)
    return address.rstrip("/")


def _headers(args: argparse.Namespace, settings: Settings | None = None,
             surface: str = "") -> dict[str, str]:
    """``Authorization: Bearer``: ``--token``, else the surface's key from the key file."""
    token = getattr(args, "token", None)
    if not token and settings is not None and surface:
        from wfserve.plugins.auth.keys import read_key

        token = read_key(Path(settings.of(AuthSettings).key_file), surface)
    return {"Authorization": f"Bearer {token}"} if token else {}


def _show(response: httpx.Response) -> int:
    try:
        text = json.dumps(response.json(), indent=2) + "\n"
    except ValueError:
        text = response.text if response.text.endswith("\n") else response.text + "\n"
    if response.is_success:
        sys.stdout.write(text)
        return 0
    sys.stderr.write(f"HTTP {response.status_code}: {text}")
    return 1


def _call(method: str, url: str, args: argparse.Namespace, *, settings: Settings | None = None,
          surface: str = "", **kwargs: Any) -> int:
    try:
        verify = client_verify(settings) if settings is not None else True
        with httpx.Client(timeout=TIMEOUT, verify=verify) as client:
            response = client.request(method, url, headers=_headers(
                args, settings, surface) | kwargs.pop("headers", {}), **kwargs)
    except httpx.HTTPError as exc:
        sys.stderr.write(f"wfserve: cannot reach {url}: {exc}\n")
        return 2
    return _show(response)


def cmd_register(args: argparse.Namespace, settings: Settings) -> int:
    params = {"url": args.archive_url}
    if args.name:
        params["workflow_name"] = args.name
    return _call("POST", _base(args, settings, "management") + "/workflows", args, params=params,
                 settings=settings, surface="management")


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    return _call("GET", _base(args, settings, "management") + "/workflows", args,
                 params={"limit": args.limit, "next_page_token": args.next_page_token},
                 settings=settings, surface="management")


def cmd_describe(args: argparse.Namespace, settings: Settings) -> int:
    return _call("GET", f"{_base(args, settings, 'management')}/workflows/{args.name}", args,
                 settings=settings, surface="management")


def cmd_unregister(args: argparse.Namespace, settings: Settings) -> int:
    return _call("DELETE", f"{_base(args, settings, 'management')}/workflows/{args.name}", args,
                 settings=settings, surface="management")


def cmd_predict(args: argparse.Namespace, settings: Settings) -> int:
    if args.file == "-":
        data = sys.stdin.buffer.read()
    else:
        try:
            with open(args.file, "rb") as f:
                data = f.read()
        except OSError as exc:
            sys.stderr.write(f"wfserve: cannot read {args.file}: {exc.strerror}\n")
            return 2
    headers = {"Content-Type": args.content_type} if args.content_type else {}
    return _call("POST", f"{_base(args, settings, 'inference')}/wfpredict/{args.name}", args,
                 content=data, headers=headers, settings=settings, surface="inference")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """The client sub-commands."""

    def parser(name: str, help_text: str, func: Any, surface: str) -> argparse.ArgumentParser:
        p = subparsers.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--url", help=f"{surface} API base URL (default: from the settings)")
        p.add_argument("--token", help="token for 'Authorization: Bearer' (default: this "
                       "surface's key from the key file, when it exists)")
        p.set_defaults(func=func)
        return p

    p = parser("register", "Register a workflow archive (.war) by URL or store name.",
               cmd_register, "management")
    p.add_argument("archive_url", metavar="URL")
    p.add_argument("--name", help="register under this name (TorchServe's workflow_name)")
    p = parser("list", "List registered workflows.", cmd_list, "management")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--next-page-token", type=int, default=0)
    p = parser("describe", "Describe a workflow.", cmd_describe, "management")
    p.add_argument("name")
    p = parser("unregister", "Unregister a workflow.", cmd_unregister, "management")
    p.add_argument("name")
    p = parser("predict", "Send FILE (or - for standard input) to /wfpredict/NAME.",
               cmd_predict, "inference")
    p.add_argument("name")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--content-type", help="e.g. application/json (default: none, raw bytes)")
