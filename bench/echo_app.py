"""The floor: a bare WSGI app that echoes the body, served by gunicorn exactly as wfserve is
(one gthread worker, the same thread count and keep-alive), to measure what HTTP costs alone."""


def app(environ, start_response):
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
