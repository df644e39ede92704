"""Request bodies to the root node's input row, and request headers to the ones handlers
see, as TorchServe builds them (research §3.2; ``otf_message_handler._retrieve_input_data``).

The row is an :class:`~wfserve.kernel.contracts.InputRow`: each parameter with its content type.

- ``multipart/form-data``: one entry per field, named after the field; a part with its own
  content type (a file part) is decoded by it, a plain field stays raw (type ``""``). Parsed
  by :mod:`wfserve.plugins.api.multipart`, bounded by ``max_multipart_parts`` and
  ``max_multipart_depth``; a body whose framing it cannot parse is a 400, never a server error.
- ``application/x-www-form-urlencoded``: one entry per field, raw (type ``""``).
- anything else: one entry ``body`` (type: the request's media type without parameters)
  holding the body decoded by that type.

Decoding (:func:`decode_value`): ``application/json`` is parsed, ``text*`` becomes a ``str``,
anything else stays raw; a value that does not decode stays raw too (TorchServe logs a warning
and passes it on: no 400). Raw means a ``bytearray``, what TorchServe's backend reads off its
socket. Media types are compared without case.

Query-string parameters are not added for ``/wfpredict`` (observed on 0.12.0).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from collections.abc import Mapping
from typing import TYPE_CHECKING
from typing import Any
from urllib.parse import parse_qsl

import structlog

from wfserve.kernel.contracts import InputRow
from wfserve.kernel.errors import BadRequest
from wfserve.kernel.errors import TooLarge
from wfserve.kernel.errors import WfserveError
from wfserve.kernel.redact import clip
from wfserve.plugins.api.multipart import MultipartLimits
from wfserve.plugins.api.multipart import parse_form
from wfserve.plugins.serializers.pretty_json import dumps_indent2

if TYPE_CHECKING:
    import falcon

log = structlog.get_logger(__name__)

Decoder = Callable[[str, bytes], Any]
#: the settings' defaults, for callers without settings at hand
DEFAULT_LIMITS = MultipartLimits()


def media_type(content_type: str | None) -> str:
    """``"Application/JSON; charset=utf-8"`` -> ``"application/json"``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def parameter_type(content_type: str | None) -> str:
    """A parameter's content type as TorchServe passes it to its backend: the media type
    without parameters, as sent (``"Application/JSON; charset=utf-8"`` -> ``"Application/JSON"``;
    ``""`` when there is none)."""
    return (content_type or "").split(";", 1)[0].strip()


def decode_value(content_type: str, data: bytes, decode: Decoder) -> Any:
    """Decode one value by its (lower-case) media type with ``decode``; a value the decoder
    cannot take (bad JSON, bad UTF-8, nesting too deep, an empty JSON body) is passed on raw,
    as a ``bytearray``, as TorchServe does."""
    try:
        return decode(content_type, data)
    except Exception as exc:  # NOTE: TorchServe catches every decoding error and goes on
        log.warning("input not decoded, passed on raw", content_type=content_type,
                    reason=f"{type(exc).__name__}: {clip(exc, 200)}")
        return bytearray(data)


def build_row(content_type: str | None, body: bytes, decode: Decoder,
              limits: MultipartLimits = DEFAULT_LIMITS) -> InputRow:
    """The root input row for a request body.

    :param content_type: the request's Content-Type header (may be None).
    :param body: the whole body, already bounded by ``max_request_size``.
    :param decode: ``(media_type, bytes) -> object`` (the serializer hooks' decoder; it
        raises on a value it cannot decode).
    :param limits: the caps on a ``multipart/form-data`` body (parts, nesting depth).
    :raises TooLarge: a form of more than ``limits.parts`` parts.
    :raises BadRequest: a form whose framing cannot be parsed; a url-encoded form that is not
        UTF-8.
    """
    kind = media_type(content_type)
    if kind == "multipart/form-data":
        return _multipart(content_type or "", body, decode, limits)
    if kind == "application/x-www-form-urlencoded":
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("The form body is not UTF-8") from None
        fields = parse_qsl(text, keep_blank_values=True)
        return InputRow({k: bytearray(v.encode()) for k, v in fields}, dict.fromkeys(
            (k for k, _ in fields), ""))
    return InputRow({"body": decode_value(kind, body, decode)},
                    {"body": parameter_type(content_type)})


@functools.lru_cache(maxsize=256)
def canonical(name: str) -> str:
    """A header name as HTTP spells it by convention: ``X-CUSTOM`` -> ``X-Custom``."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def handler_headers(headers: Mapping[str, str], body_length: int) -> dict[str, str]:
    """The request headers handlers see (the Netty aggregator's view of the request).

    Names are canonical (``Content-Type``, ``X-Custom``): behind WSGI the client's spelling is
    lost. A chunked request loses its ``Transfer-Encoding: chunked``; a request without
    ``Content-Length`` gets a lower-case ``content-length`` of ``body_length``.
    """
    out = {canonical(name): value for name, value in headers.items()}
    if out.get("Transfer-Encoding", "").strip().lower() == "chunked":
        del out["Transfer-Encoding"]
    if "Content-Length" not in out:
        out["content-length"] = str(body_length)
    return out


def _multipart(content_type: str, body: bytes, decode: Decoder,
               limits: MultipartLimits) -> InputRow:
    try:
        parts = parse_form(content_type, body, limits)
    except WfserveError:
        raise
    except Exception as exc:  # NOTE: the parser is linear and not recursive; should it still
        # fail on some input, that input is the client's, and a 400 is the answer
        raise BadRequest(f"Malformed multipart/form-data body: {clip(exc, 200)}") from None
    row = InputRow()
    for part in parts:
        if not part.name:
            raise BadRequest("A multipart part has no field name")
        if part.content_type is None:  # a plain field: raw, no content type
            row[part.name] = bytearray(part.data)
            row.content_types[part.name] = ""
        else:
            row[part.name] = decode_value(_part_type(part.content_type), part.data, decode)
            row.content_types[part.name] = parameter_type(part.content_type)
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
