"""A small ``multipart/form-data`` parser: linear in the body, never recursive, bounded.

The email package's parser recurses on nested multipart parts and on RFC 822 comments in
header parameters (``x=((((...``), so a hostile body of a few kilobytes raised
``RecursionError``, and 120,000 tiny parts cost seconds of CPU. This one:

- counts the lines that start with ``--boundary`` with ``bytes.count`` first, refusing more
  than :attr:`MultipartLimits.parts` (all nesting levels together) before any part is looked
  at (RFC 2046: content never holds a line break followed by ``--boundary``), then splits the
  body on its delimiter lines with ``bytes.find``;
- reads a part's headers from a block of at most :attr:`MultipartLimits.header_bytes` and
  ``HEADER_LINES`` lines;
- reads at most ``HEADER_PARAMS`` header parameters, with one regular expression each;
  comments are not supported: ``(``, ``)`` and ``\\`` in an unquoted value make the header
  malformed;
- walks a part that declares a ``multipart/*`` content type with an explicit stack, refusing
  nesting past :attr:`MultipartLimits.depth` (the form itself is depth 1). Such a part's value
  is its raw body: its structure is only checked, not returned.

What it accepts, as the email parser did: CRLF or LF line ends, a preamble and an epilogue,
padding after a delimiter, folded header lines, quoted or bare parameter values, RFC 2231
``name*=utf-8''...`` values, ``base64`` and ``quoted-printable`` transfer encodings, a part
without a blank line (all headers, empty value). Header bytes are read as UTF-8, or Latin-1
when they are not UTF-8.

Every refusal is a :class:`~wfserve.kernel.errors.BadRequest` (400), the part count a
:class:`~wfserve.kernel.errors.TooLarge` (413).
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote

from wfserve.kernel.errors import BadRequest
from wfserve.kernel.errors import TooLarge
from wfserve.kernel.redact import clip
from wfserve.kernel.settings import Settings
from wfserve.plugins.api.settings import ApiSettings

if TYPE_CHECKING:
    from collections.abc import Iterator

#: the most bytes of one part's header block (its lines up to the blank line)
HEADER_BYTES = 16384
#: the most lines in one part's header block
HEADER_LINES = 64
#: the most parameters in one header value
HEADER_PARAMS = 64

_LINE_END = re.compile(rb"[ \t]*(?:\r?\n|\Z)")
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_LINE_BREAK = re.compile(r"\r?\n")
_PARAM = re.compile(r"""[ \t]*;[ \t]*(?P<key>[^=;"\s]+)[ \t]*=[ \t]*
                        (?:"(?P<quoted>[^"\\]*(?:\\.[^"\\]*)*)"|(?P<bare>[^;"\s()\\]*))""",
                    re.VERBOSE | re.DOTALL)
_TRAILER = re.compile(r"[ \t;]*")
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class MultipartLimits:
    """What one request body may hold; defaults are the settings' defaults."""

    #: most parts, all nesting levels together (``max_multipart_parts``)
    parts: int = ApiSettings.max_multipart_parts
    #: deepest nesting of multipart bodies, the form itself being 1 (``max_multipart_depth``)
    depth: int = ApiSettings.max_multipart_depth
    #: most bytes of one part's header block
    header_bytes: int = HEADER_BYTES

    @classmethod
    def from_settings(cls, settings: Settings) -> MultipartLimits:
        """The limits a server runs with."""
        api = settings.of(ApiSettings)
        return cls(parts=api.max_multipart_parts, depth=api.max_multipart_depth)


@dataclass(frozen=True, slots=True)
class Part:
    """One field of a form."""

    #: the ``name`` parameter of its ``Content-Disposition``; None when there is none
    name: str | None
    #: its ``Content-Type`` header as sent; None when absent (a plain field)
    content_type: str | None
    #: its value, transfer encoding undone
    data: bytes


def header_params(value: str) -> tuple[str, dict[str, str]]:
    """``'form-data; name="a"'`` -> ``("form-data", {"name": "a"})``.

    The main value is lower-cased, parameter names too; quoted values are unescaped. An
    RFC 2231 ``key*=charset'lang'%XX`` value is decoded and stored under ``key``, taking
    precedence over a plain ``key``. Linear in ``len(value)``.

    :raises BadRequest: a parameter that is not ``key=token`` or ``key="quoted"``; more than
        ``HEADER_PARAMS`` parameters.
    """
    head, _, _ = value.partition(";")
    params: dict[str, str] = {}
    extended: dict[str, str] = {}
    pos = len(head)
    count = 0
    while pos < len(value):
        match = _PARAM.match(value, pos)
        if match is None:
            if _TRAILER.fullmatch(value, pos):
                break
            raise BadRequest(f"Malformed header parameters: {clip(value, 80)}")
        count += 1
        if count > HEADER_PARAMS:
            raise BadRequest(f"A header has more than {HEADER_PARAMS} parameters")
        key = match["key"].lower()
        quoted = match["quoted"]
        text = _unescape(quoted) if quoted is not None else match["bare"]
        if key.endswith("*"):
            extended[key[:-1]] = _rfc2231(text)
        else:
            params[key] = text
        pos = match.end()
    params.update(extended)
    return head.strip().lower(), params


def parse_form(content_type: str, body: bytes, limits: MultipartLimits) -> list[Part]:
    """The fields of a ``multipart/form-data`` body, in order (names are not checked here).

    :param content_type: the request's Content-Type header, with its ``boundary``.
    :param body: the whole body.
    :param limits: the caps on parts, nesting and header size.
    :raises TooLarge: more than ``limits.parts`` parts.
    :raises BadRequest: a malformed body, nesting past ``limits.depth``.
    """
    counter = _Counter(limits.parts)
    fields: list[Part] = []
    nested: list[tuple[str, bytes, int]] = []
    for chunk in _split(body, _boundary(content_type), counter):
        headers, data = _headers(chunk, limits.header_bytes)
        part_type = headers.get("content-type")
        if part_type is not None and _is_multipart(part_type):
            nested.append((part_type, data, 2))
        _, disposition = header_params(headers.get("content-disposition", ""))
        fields.append(Part(disposition.get("name"), part_type,
                           _transfer_decode(headers.get("content-transfer-encoding"), data)))
    _check_nested(nested, limits, counter)
    return fields


class _Counter:
    """Parts seen so far, against the cap."""

    __slots__ = ("cap", "seen")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.seen = 0

    def add(self) -> None:
        """Count one more part.

        :raises TooLarge: past the cap.
        """
        self.fits(1)
        self.seen += 1

    def fits(self, count: int) -> None:
        """Check, without counting them, that ``count`` more parts are within the cap.

        :raises TooLarge: they are not.
        """
        if self.seen + count > self.cap:
            raise TooLarge(f"The multipart body has more than {self.cap} parts "
                           f"(max_multipart_parts)", limit=self.cap)


def _check_nested(stack: list[tuple[str, bytes, int]], limits: MultipartLimits,
                  counter: _Counter) -> None:
    """Walk nested multipart bodies (``(content type, body, depth)``) without recursion."""
    while stack:
        content_type, body, depth = stack.pop()
        if depth > limits.depth:
            raise BadRequest(f"Multipart parts are nested deeper than {limits.depth} "
                             f"(max_multipart_depth)")
        for chunk in _split(body, _boundary(content_type), counter):
            headers, data = _headers(chunk, limits.header_bytes)
            part_type = headers.get("content-type")
            if part_type is not None and _is_multipart(part_type):
                stack.append((part_type, data, depth + 1))


def _is_multipart(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower().startswith("multipart/")


def _boundary(content_type: str) -> bytes:
    _, params = header_params(content_type)
    boundary = params.get("boundary", "")
    if not boundary:
        raise BadRequest("The multipart body has no boundary")
    return boundary.encode("latin-1", "replace")


def _split(body: bytes, boundary: bytes, counter: _Counter) -> Iterator[bytes]:
    """The parts between ``--boundary`` lines, each counted; the preamble and epilogue are
    dropped. A delimiter starts a line; the line break before it belongs to it."""
    needle = b"--" + boundary
    # PERF: a C-speed upper bound first: every part but the last ends at such a line, and a
    # line that only looks like one costs a loop turn below; both count against the cap
    counter.fits(body.count(b"\n" + needle) + body.startswith(needle) - 1)
    start: int | None = None  # where the current part begins
    search = 0
    while True:
        found = _delimiter(body, needle, search)
        if found < 0:
            what = "closing" if start is not None else "first"
            raise BadRequest(f"The multipart body has no {what} boundary line")
        after = found + len(needle)
        closing = body.startswith(b"--", after)
        line_end = _LINE_END.match(body, after + 2 if closing else after)
        if line_end is None:  # "--boundaryX": not a delimiter
            search = found + 1
            continue
        if start is not None:
            end = found - 1  # before the "\n"
            if end > start and body[end - 1:end] == b"\r":
                end -= 1
            counter.add()
            yield body[start:max(start, end)]
        elif closing:
            raise BadRequest("The multipart body has no fields")
        if closing:
            return
        start = line_end.end()
        search = start


def _delimiter(body: bytes, needle: bytes, search: int) -> int:
    """Index of the next ``needle`` at ``search`` or later that starts a line, or -1."""
    if search == 0 and body.startswith(needle):
        return 0
    found = body.find(b"\n" + needle, max(search - 1, 0))
    return found + 1 if found >= 0 else -1


def _headers(part: bytes, limit: int) -> tuple[dict[str, str], bytes]:
    """A part's headers (lower-case names, the first of each) and its body."""
    if part.startswith((b"\r\n", b"\n")):
        return {}, part[2 if part.startswith(b"\r\n") else 1:]
    blank = _BLANK_LINE.search(part, 0, limit + 4)
    if blank is not None:
        block, data = part[:blank.start()], part[blank.end():]
    elif len(part) <= limit:
        block, data = part, b""
    else:
        raise BadRequest(f"A multipart part's headers exceed {limit} bytes")
    raw_lines = _LINE_BREAK.split(_text(block), maxsplit=HEADER_LINES)
    if len(raw_lines) > HEADER_LINES:
        raise BadRequest(f"A multipart part has more than {HEADER_LINES} header lines")
    headers: dict[str, str] = {}
    lines: list[str] = []
    for line in raw_lines:
        if line[:1] in (" ", "\t") and lines:
            lines[-1] += " " + line.strip()
        else:
            lines.append(line)
    for line in lines:
        name, colon, value = line.partition(":")
        name = name.strip().lower()
        if not colon or not name:
            raise BadRequest(f"Malformed multipart part header: {clip(line, 80)}")
        headers.setdefault(name, value.strip())
    return headers, data


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _unescape(quoted: str) -> str:
    """``a\\"b`` -> ``a"b``: a quoted-pair stands for its second character.

    ``quoted`` is a match of ``_PARAM``'s quoted group, so it never ends in a lone backslash.
    """
    if "\\" not in quoted:
        return quoted
    if "\0" in quoted:
        return "".join(_ESCAPE.split(quoted))  # split keeps each escaped character
    # PERF: three C passes; pairs of backslashes are taken left to right, as a scan would
    return quoted.replace("\\\\", "\0").replace("\\", "").replace("\0", "\\")


def _rfc2231(value: str) -> str:
    """``utf-8'en'%C3%A9`` -> ``é``; a value without the two quotes is only unquoted."""
    charset, quote, rest = value.partition("'")
    if not quote:
        return unquote(value)
    _, _, encoded = rest.partition("'")
    try:
        return unquote(encoded, encoding=charset or "us-ascii", errors="strict")
    except (LookupError, ValueError):  # an unknown charset; bytes it cannot decode
        raise BadRequest(f"Cannot decode the header parameter {clip(value, 80)}") from None


def _transfer_decode(encoding: str | None, data: bytes) -> bytes:
    kind = (encoding or "").strip().lower()
    try:
        if kind == "base64":
            return binascii.a2b_base64(data)
        if kind == "quoted-printable":
            return binascii.a2b_qp(data)
    except binascii.Error as exc:
        raise BadRequest(f"Cannot decode a {kind} multipart part: {clip(exc, 80)}") from None
    return data
