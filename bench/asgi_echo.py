"""The ASGI floor: a bare Falcon ASGI app that echoes the body, served by gunicorn with uvicorn's
worker class (httptools parser), to set beside the WSGI floor (``bench/echo_app.py``).

    gunicorn -k bench.asgi_echo.HttptoolsWorker -w N bench.asgi_echo:app

Needs ``uvicorn`` and ``httptools`` (``pip install uvicorn httptools``: the benchmark only).
"""

from __future__ import annotations

import falcon.asgi
from uvicorn.workers import UvicornWorker


class HttptoolsWorker(UvicornWorker):
    """uvicorn's gunicorn worker with the httptools parser named (not left to "auto")."""

    CONFIG_KWARGS = {"loop": "auto", "http": "httptools"}


class Echo:
    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.data = await req.stream.read()
        resp.content_type = falcon.MEDIA_JSON


app = falcon.asgi.App()
app.add_route("/", Echo())
