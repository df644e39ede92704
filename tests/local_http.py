"""Small helpers for tests that fetch: a threaded HTTP server of the test's own on 127.0.0.1,
and the fetch hooks of the default fetchers alone."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from wfserve.kernel.plugins import Hooks
from wfserve.kernel.plugins import make_plugin_manager
from wfserve.kernel.settings import Settings
from wfserve.plugins.fetchers.common import FetchSettings

FETCHERS = ("wfserve.plugins.archives", "wfserve.plugins.fetchers.local",
            "wfserve.plugins.fetchers.http")
NO_AUTOLOAD = {"WFSERVE_DISABLE_PLUGIN_AUTOLOAD": "1"}


@contextlib.contextmanager
def local_server(handler: type[http.server.BaseHTTPRequestHandler], **attributes: Any
                 ) -> Iterator[tuple[str, http.server.ThreadingHTTPServer]]:
    """Serve ``handler`` on an ephemeral 127.0.0.1 port; ``attributes`` are set on the server
    (handlers read them as ``self.server.<name>``). Yields the base URL and the server."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    for name, value in attributes.items():
        setattr(httpd, name, value)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def fetch_hooks(store: Path, **overrides: Any) -> Hooks:
    """The hooks of the default fetchers, with ``model_store`` = ``store`` and ``overrides``."""
    fetch = {k: v for k, v in overrides.items() if k in FetchSettings.__dataclass_fields__}
    kernel = {k: v for k, v in overrides.items() if k not in fetch}
    settings = Settings(model_store=str(store), **kernel).with_section(FetchSettings(**fetch))
    return Hooks(make_plugin_manager(settings, builtin=FETCHERS, env=NO_AUTOLOAD), settings)


def store_folder(tmp_path: Path) -> Path:
    """A new, empty ``store`` folder under ``tmp_path``."""
    path = tmp_path / "store"
    path.mkdir()
    return path
