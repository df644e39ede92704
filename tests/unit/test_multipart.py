"""The multipart/form-data parser (security finding 7): what valid forms give (as the email
package gave it), and hostile bodies (deep nesting, comment recursion, many parts) refused as
400/413, never RecursionError. The hostile bodies are those of the HTTP regression test
(tests/integration/test_multipart_hostile.py)."""

import json
from types import SimpleNamespace

import pytest

from tests.integration.test_multipart_hostile import many_parts
from tests.integration.test_multipart_hostile import nested_parts
from tests.integration.test_multipart_hostile import open_parens
from wfserve.kernel.errors import BadRequest
from wfserve.kernel.errors import TooLarge
from wfserve.kernel.settings import Settings
from wfserve.plugins.api import decoding
from wfserve.plugins.api.decoding import build_row
from wfserve.plugins.api.inference import WorkflowPrediction
from wfserve.plugins.api.model_call import NodePrediction
from wfserve.plugins.api.multipart import MultipartLimits
from wfserve.plugins.api.multipart import header_params
from wfserve.plugins.api.multipart import parse_form
from wfserve.plugins.api.settings import ApiSettings

CT = "multipart/form-data; boundary=zz"
FIELD = b'Content-Disposition: form-data; name="a"\r\n\r\nv\r\n'


def form(*fields: bytes, boundary: bytes = b"zz") -> bytes:
    return b"".join(b"--" + boundary + b"\r\n" + f for f in fields) + b"--" + boundary + b"--"


def decode(content_type: str, data: bytes) -> object:
    """As the default serializers: JSON parsed, text/* to str, others bytes."""
    if content_type == "application/json":
        return json.loads(data)
    if content_type.startswith("text/"):
        return data.decode()
    return data


def row(body: bytes, content_type: str = CT, **limits: int) -> dict:
    return build_row(content_type, body, decode, MultipartLimits(**limits))


# --- valid forms ------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "expected"), [
    (form(FIELD), {"a": b"v"}),
    (form(FIELD).replace(b"\r\n", b"\n"), {"a": b"v"}),
    (b"preamble\r\n" + form(FIELD) + b"\r\nepilogue", {"a": b"v"}),
    (b"--zz  \r\n" + FIELD + b"--zz--  \r\n", {"a": b"v"}),
    (form('Content-Disposition: form-data; name="é"\r\n\r\nv\r\n'.encode()), {"é": b"v"}),
    (form(b'Content-Disposition: form-data; name="a\\"b"\r\n\r\nv\r\n'), {'a"b': b"v"}),
    (form(b"Content-Disposition: form-data; name=abc\r\n\r\nv\r\n"), {"abc": b"v"}),
    (form(b"Content-Disposition: form-data; name*=utf-8''%C3%A9\r\n\r\nv\r\n"), {"é": b"v"}),
    (form(b'content-disposition: FORM-DATA; NAME="a"\r\n\r\nv\r\n'), {"a": b"v"}),
    (form(b'Content-Disposition: form-data ; name = "a" ;\r\n\r\nv\r\n'), {"a": b"v"}),
    (form(b'Content-Disposition: form-data;\r\n name="a"\r\n\r\nv\r\n'), {"a": b"v"}),
    (form(b'Content-Disposition: form-data; name="a"\r\n'), {"a": b""}),
    (form(b'Content-Disposition: form-data; name="a"\r\n\r\n\r\n'), {"a": b""}),
    (form(b'Content-Disposition: form-data; name="a"\r\n\r\nl1\r\nl2\r\n\r\n'),
     {"a": b"l1\r\nl2\r\n"}),
    (form(FIELD, FIELD.replace(b"v\r\n", b"w\r\n")), {"a": b"w"}),
    (form(b'Content-Disposition: form-data; name="a"\r\nContent-Type: application/json\r\n'
          b'\r\n{"x": 1}\r\n'), {"a": {"x": 1}}),
    (form(b'Content-Disposition: form-data; name="a"\r\nContent-Type: text/plain; '
          b"charset=utf-8\r\n\r\nhi\r\n"), {"a": "hi"}),
    (form(b'Content-Disposition: form-data; name="a"\r\nContent-Type: garbage\r\n\r\nhi\r\n'),
     {"a": "hi"}),
    (form(b'Content-Disposition: form-data; name="f"; filename="x.bin"\r\n'
          b"Content-Type: application/octet-stream\r\n\r\n\x00\xff\r\n\r\n"),
     {"f": b"\x00\xff\r\n"}),
    (form(b'Content-Disposition: form-data; name="a"\r\nContent-Transfer-Encoding: base64'
          b"\r\n\r\naGVsbG8=\r\n"), {"a": b"hello"}),
    (form(b'Content-Disposition: form-data; name="a"\r\nContent-Transfer-Encoding: '
          b"quoted-printable\r\n\r\nh=C3=A9\r\n"), {"a": "hé".encode()}),
], ids=["crlf", "lf", "preamble-epilogue", "padding", "utf8-name", "escaped-quote",
        "bare-name", "rfc2231", "header-case", "spaces", "folded", "headers-only", "empty",
        "crlf-in-value", "last-wins", "json", "text", "bad-type-is-text", "binary", "base64",
        "quoted-printable"])
def test_valid_forms_decode_as_before(body, expected):
    assert row(body) == expected


def test_quoted_boundary_and_boundary_prefixes():
    assert row(b"--a b\r\n" + FIELD + b"--a b--", 'multipart/form-data; boundary="a b"') == \
        {"a": b"v"}
    tricky = form(b'Content-Disposition: form-data; name="a"\r\n\r\n--zzz\r\n--zz-x\r\n')
    assert row(tricky) == {"a": b"--zzz\r\n--zz-x"}


def test_a_nested_multipart_within_depth_gives_its_raw_body():
    content_type, body = nested_parts(3)  # depth 4 with the form itself
    value = row(body, content_type)["a"]
    assert value.startswith(b"--b2\r\n") and value.endswith(b"--b2--")


def test_limits_default_to_the_settings():
    assert MultipartLimits() == MultipartLimits.from_settings(Settings())
    assert (MultipartLimits().parts, MultipartLimits().depth) == (1000, 4)
    limits = MultipartLimits.from_settings(Settings().with_section(
        ApiSettings(max_multipart_parts=7, max_multipart_depth=2)))
    assert (limits.parts, limits.depth) == (7, 2)


def test_header_params():
    assert header_params('Form-Data; Name="a;b"; filename=x.txt') == \
        ("form-data", {"name": "a;b", "filename": "x.txt"})
    assert header_params("text/plain") == ("text/plain", {})
    assert header_params("x; a*=utf-8'en'%C3%A9; a=plain") == ("x", {"a": "é"})
    for bad in ('x; a="open', "x; a=(comment)", "x; a=b c", "x; novalue", "x; a=b\\c",
                "x; a*=nope''%FF"):
        with pytest.raises(BadRequest):
            header_params(bad)


# --- the caps ------------------------------------------------------------------------------


def test_the_part_cap_counts_every_part():
    assert len(row(form(*[FIELD] * 5), parts=5)) == 1
    with pytest.raises(TooLarge, match="max_multipart_parts"):
        row(form(*[FIELD] * 6), parts=5)
    content_type, body = nested_parts(2)  # 3 parts in all
    assert row(body, content_type, parts=3)
    with pytest.raises(TooLarge):
        row(body, content_type, parts=2)


def test_the_depth_cap():
    content_type, body = nested_parts(2)
    assert row(body, content_type, depth=3)
    with pytest.raises(BadRequest, match="max_multipart_depth"):
        row(body, content_type, depth=2)


def test_the_server_settings_reach_the_parser():
    kernel = SimpleNamespace(settings=Settings().with_section(
        ApiSettings(max_multipart_parts=2, max_multipart_depth=1)))
    req = SimpleNamespace(content_type=CT, context=SimpleNamespace())
    for resource in (WorkflowPrediction(kernel), NodePrediction(kernel)):
        assert resource._row(req, form(FIELD, FIELD)) == {"a": b"v"}
        with pytest.raises(TooLarge):
            resource._row(req, form(FIELD, FIELD, FIELD))
        content_type, body = nested_parts(1)
        with pytest.raises(BadRequest, match="max_multipart_depth"):
            resource._row(SimpleNamespace(content_type=content_type, context=req.context), body)


def test_lines_that_only_look_like_delimiters_count_against_the_cap():
    body = b"--zz\r\n" + FIELD + b"\n--zzX" * 10 + b"\r\n--zz--"
    assert row(body, parts=11) == {"a": b"v\r\n" + b"\n--zzX" * 10}
    with pytest.raises(TooLarge):
        row(body, parts=10)


def test_part_headers_are_bounded():
    big = b'Content-Disposition: form-data; name="a"\r\nX-Pad: ' + b"p" * 300 + b"\r\n\r\nv\r\n"
    assert row(form(big), header_bytes=400) == {"a": b"v"}
    with pytest.raises(BadRequest, match="headers exceed"):
        row(form(big), header_bytes=200)
    lines = b'Content-Disposition: form-data; name="a"\r\n' + b"X-A: b\r\n" * 63
    assert row(form(lines + b"\r\nv\r\n")) == {"a": b"v"}
    with pytest.raises(BadRequest, match="64 header lines"):
        row(form(lines + b"X-A: b\r\n\r\nv\r\n"))
    params = b'Content-Disposition: form-data; name="a"' + b"; k=v" * 63
    assert row(form(params + b"\r\n\r\nv\r\n")) == {"a": b"v"}
    with pytest.raises(BadRequest, match="64 parameters"):
        row(form(params + b"; k=v\r\n\r\nv\r\n"))


# --- hostile and malformed bodies -------------------------------------------------------


def test_the_three_hostile_bodies_are_refused_not_recursed():
    for content_type, body in (nested_parts(1200), open_parens(1000)):
        with pytest.raises(BadRequest) as caught:
            row(body, content_type)
        assert not isinstance(caught.value, TooLarge)
    content_type, body = many_parts(120_000)
    with pytest.raises(TooLarge, match="1000 parts"):
        row(body, content_type)


def test_comments_in_the_request_content_type_are_refused():
    with pytest.raises(BadRequest):
        row(form(FIELD), CT + "; x=" + "(" * 1000)


@pytest.mark.parametrize(("content_type", "body"), [
    (CT, b"--zz\r\n" + FIELD),
    (CT, b"junk"),
    (CT, b""),
    (CT, b"--zz--"),
    (CT, b"--zz" + FIELD + b"--zz--"),
    ("multipart/form-data", form(FIELD)),
    ("multipart/form-data; boundary=", form(FIELD)),
    (CT, form(b"Content-Disposition: form-data\r\n\r\nv\r\n")),
    (CT, form(b"\r\nv\r\n")),
    (CT, form(b'Content-Disposition: form-data; name="a"\r\ngarbage\r\n\r\nv\r\n')),
    (CT, form(b'Content-Disposition: form-data; name="a\r\n\r\nv\r\n')),
    (CT, b"--zz\r\n--zz--"),
    (CT, form(b'Content-Disposition: form-data; name="a"\r\nContent-Type: multipart/mixed'
              b"\r\n\r\nv\r\n")),
], ids=["no-close", "junk", "empty", "close-only", "no-line-break", "no-boundary",
        "empty-boundary", "no-name", "no-headers", "header-without-colon",
        "unterminated-quote", "empty-part", "nested-without-boundary"])
def test_malformed_forms_are_400(content_type, body):
    with pytest.raises(BadRequest):
        row(body, content_type)


def test_values_are_bytearrays_and_a_part_that_does_not_decode_is_passed_on_raw():
    """Plain fields and undecoded parts are bytearrays, as TorchServe's backend reads them;
    a JSON part that does not parse is passed on raw, not refused; every field has its type
    (``""`` for a plain field, a part's own media type)."""
    got = row(form(FIELD, b'Content-Disposition: form-data; name="j"\r\nContent-Type: '
                          b"application/json; charset=utf-8\r\n\r\n{not json\r\n"))
    assert got == {"a": b"v", "j": b"{not json"}
    assert type(got["a"]) is bytearray and type(got["j"]) is bytearray
    assert got.content_types == {"a": "", "j": "application/json"}


def test_any_parser_failure_is_a_400(monkeypatch):
    def explode(*_args: object) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(decoding, "parse_form", explode)
    with pytest.raises(BadRequest, match="Malformed multipart"):
        row(form(FIELD))


def test_parse_form_keeps_order_and_content_types():
    parts = parse_form(CT, form(FIELD, b'Content-Disposition: form-data; name="b"\r\n'
                                       b"Content-Type: text/plain\r\n\r\nw\r\n"),
                       MultipartLimits())
    assert [(p.name, p.content_type, p.data) for p in parts] == \
        [("a", None, b"v"), ("b", "text/plain", b"w")]
