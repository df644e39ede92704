"""Request bodies to the root node's input row, as TorchServe builds it (research §3.2).

- ``multipart/form-data``: one entry per field, named after the field; a part with its own
  content type is decoded by it (JSON parsed, ``text/*`` to ``str``), a plain field stays bytes.
  Parsed by :mod:`plugins.api.multipart`, bounded by ``max_multipart_parts`` and
  ``max_multipart_depth``; a body it cannot take is a 400, never a server error.
- ``application/x-www-form-urlencoded``: one entry per field, values as bytes.
- anything else: one entry ``body`` holding the raw bytes decoded by the request's content
  type (JSON parsed, ``text/*`` to ``str``, others bytes). An empty body stays ``b""``.

Query-string parameters are not added for ``/wfpredict`` (observed on 0.12.0); ``/predictions``
adds them, as TorchServe does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING
from typing import Any
from urllib.parse import parse_qsl

from kernel.errors import BadRequest
from kernel.errors import TooLarge
from kernel.errors import WfserveError
from kernel.redact import clip
from plugins.api.multipart import MultipartLimits
from plugins.api.multipart import parse_form
from plugins.serializers.pretty_json import dumps_indent2

if TYPE_CHECKING:
    import falcon

Decoder = Callable[[str, bytes], Any]
#: the settings' defaults, for callers without settings at hand
DEFAULT_LIMITS = MultipartLimits()


def media_type(content_type: str | None) -> str:
    """``"Application/JSON; charset=utf-8"`` -> ``"application/json"``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def decode_value(content_type: str, data: bytes, decode: Decoder) -> Any:
    """Decode one value by its content type; a value that does not parse is a 400 (nesting
    too deep for the decoder, ``RecursionError``, included: ``[[[[...`` is bad input, not a
    server error)."""
    if not data:
        return data
    try:
        return decode(content_type, data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BadRequest(f"Cannot decode the {content_type} body: {exc}") from None


def build_row(content_type: str | None, body: bytes, decode: Decoder,
              limits: MultipartLimits = DEFAULT_LIMITS) -> dict[str, Any]:
    """The root input row for a request body.

    :param content_type: the request's Content-Type header (may be None).
    :param body: the whole body, already bounded by ``max_request_size``.
    :param decode: ``(media_type, bytes) -> object`` (the serializer hooks' decoder).
    :param limits: the caps on a ``multipart/form-data`` body (parts, nesting depth).
    :raises TooLarge: a form of more than ``limits.parts`` parts.
    :raises BadRequest: a malformed form or a body its content type cannot decode.
    """
    kind = media_type(content_type)
    if kind == "multipart/form-data":
        return _multipart(content_type or "", body, decode, limits)
    if kind == "application/x-www-form-urlencoded":
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("The form body is not UTF-8") from None
        return {k: v.encode() for k, v in parse_qsl(text, keep_blank_values=True)}
    return {"body": decode_value(kind, body, decode)}


def _multipart(content_type: str, body: bytes, decode: Decoder,
               limits: MultipartLimits) -> dict[str, Any]:
    try:
        parts = parse_form(content_type, body, limits)
    except WfserveError:
        raise
    except Exception as exc:  # NOTE: the parser is linear and not recursive; should it still
        # fail on some input, that input is the client's, and a 400 is the answer
        raise BadRequest(f"Malformed multipart/form-data body: {clip(exc, 200)}") from None
    row: dict[str, Any] = {}
    for part in parts:
        if not part.name:
            raise BadRequest("A multipart part has no field name")
        if part.content_type is None:
            row[part.name] = part.data  # a plain field: bytes, as TorchServe's backend gives it
        else:
            row[part.name] = decode_value(_part_type(part.content_type), part.data, decode)
    if not row:
        raise BadRequest("The multipart/form-data body has no fields")
    return row


def _part_type(content_type: str) -> str:
    """A part's media type; ``text/plain`` when it is not ``type/subtype`` (as the email
    package read it)."""
    kind = media_type(content_type)
    return kind if kind.count("/") == 1 else "text/plain"


def json_pretty(obj: Any) -> bytes:
    """TorchServe's status bodies: 2-space indented JSON and a trailing newline."""
    return (dumps_indent2(obj) + "\n").encode()


def read_body(req: falcon.Request, limit: int) -> bytes:
    """The whole request body, refused with 413 past ``limit`` bytes (chunked bodies too);
    a body that cannot be read to its end (the client broke off) is a 400."""
    if req.content_length is not None and req.content_length > limit:
        raise TooLarge(f"Request body of {req.content_length} bytes exceeds max_request_size "
                       f"({limit})", limit=limit)
    # NOTE: a chunked body has no Content-Length, so Falcon's bounded_stream reads nothing;
    # the server marks such input terminated (PEP 3333 extension). read(n) may return less
    # than n: read until EOF or past the limit.
    chunked = req.content_length is None and req.env.get("wsgi.input_terminated")
    stream = req.stream if chunked else req.bounded_stream
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        try:
            chunk = stream.read(limit + 1 - size)
        except Exception as exc:  # NOTE: the WSGI server's own errors (a chunked body cut
            # midway, a read past the read timeout): the client's fault, not a server error
            raise BadRequest(f"The request body could not be read: {type(exc).__name__}") \
                from None
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise TooLarge(f"Request body exceeds max_request_size ({limit})", limit=limit)
    return b"".join(chunks)
