"""REST transcoding conformance, run on both targets (in process and through a grpc.aio channel)."""

from __future__ import annotations

import base64
import json

import grpc
import pytest
from google.protobuf import json_format
from support import code_names

from typecase.server.gateway import HTTP_STATUS, jsonmap

# -- routing ----------------------------------------------------------------------------------------


async def test_get_with_sub_template_and_additional_binding(gw):
    r = await gw.client.get("/v1/shelves/s1/books/b1")
    assert r.status_code == 200
    assert r.json()["name"] == "shelves/s1/books/b1"
    r2 = await gw.client.get("/v1/books/solo")
    assert r2.status_code == 200 and r2.json()["name"] == "solo"


async def test_rest_equals_direct_grpc_field_by_field(gw):
    r = await gw.client.get("/v1/shelves/s1/books/b1")
    direct = await gw.library.GetBook(gw.pb.pb2.GetBookRequest(name="shelves/s1/books/b1"))
    assert r.json() == jsonmap.to_json(direct)
    assert {k: v for k, v in r.json().items() if v is not None} == json_format.MessageToDict(
        direct, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    body = r.json()
    assert body["page_count"] == str(2**40)  # int64 as a string
    assert body["cover"] == base64.b64encode(b"\x00\x01\xfe").decode()
    assert body["published"] == "2023-11-14T22:13:20.005Z"


async def test_not_found_and_method_not_allowed(gw):
    r = await gw.client.get("/v1/nothing/here")
    assert r.status_code == 404
    assert r.json() == {"code": 5, "message": "Not Found", "details": []}
    assert r.headers["x-trace-id"] and float(r.headers["x-process-time"]) >= 0
    r = await gw.client.get("/v1/echo:raw")
    assert r.status_code == 405
    assert r.json()["code"] == 12 and r.headers["allow"] == "POST"
    r = await gw.client.get("/v1/shelves/s1/books/b1/")  # trailing slash: no template matches
    assert r.status_code == 404


async def test_verb_routes_and_colon_in_variable(gw):
    r = await gw.client.post("/v1/shelves/s1/books/b1:move", json={"destination": "shelves/s2", "name": "ignored"})
    assert r.status_code == 200
    assert r.json() == {"name": "shelves/s1/books/b1", "destination": "shelves/s2", "position": 0}  # the path wins
    # without a verb route, a colon is part of the variable value
    r = await gw.client.get("/v1/books/a:b")
    assert r.json()["name"] == "a:b"
    # a last segment that is only ":verb" is a 404 (grpc-gateway)
    r = await gw.client.post("/v1/shelves/s1/books/:move", json={})
    assert r.status_code == 404
    r = await gw.client.post("/v1/shelves/s1/books/b1:nope", json={})
    assert r.status_code in (404, 405)


async def test_double_star_unescaping_and_specificity(gw):
    r = await gw.client.get("/v1/files/a/b%2Fc/d%20e")
    assert r.json()["path"] == "a/b%2Fc/d e"  # multi-segment: reserved escapes stay
    r = await gw.client.get("/v1/books/x%2Fy%20z")
    assert r.json()["name"] == "x/y z"  # single segment: fully decoded
    r = await gw.client.get("/v1/files/special")
    assert r.json()["path"] == ""  # the literal template beats **
    r = await gw.client.get("/v1/trees/a/b/c/leaf")
    assert r.json()["path"] == "a/b/c"
    r = await gw.client.get("/v1/files/")
    assert r.status_code == 200 and r.json()["path"] == ""  # ** matches zero segments
    r = await gw.client.get("/v1/books/bad%zz")
    assert r.status_code == 400 and "malformed" in r.json()["message"]


async def test_nested_path_fields(gw):
    r = await gw.client.get("/v1/refs/author/42")
    assert r.json()["ref"] == {"kind": "author", "id": "42"}
    r = await gw.client.get("/v1/refs/author/x42")
    assert r.status_code == 400
    assert 'path parameter "ref.id"' in r.json()["message"] and "integer" in r.json()["message"]


async def test_custom_method_kind(gw):
    r = await gw.client.request("SEARCH", "/v1/shelves/s9/books", params={"page_size": 3})
    assert r.status_code == 200 and r.json()["echo"]["page_size"] == 3


# -- bodies -----------------------------------------------------------------------------------------


async def test_body_field_and_path_wins(gw):
    r = await gw.client.post(
        "/v1/shelves/s1/books",
        params={"book_id": "b7", "parent": "shelves/evil"},
        json={"title": "T", "pageCount": "12", "genre": "SCIENCE", "author": {"displayName": "Q"}},
    )
    assert r.status_code == 200
    body = r.json()
    assert body["name"] == "shelves/s1/books/b7"
    assert body["page_count"] == "12" and body["genre"] == "SCIENCE" and body["author"]["display_name"] == "Q"


async def test_nested_path_field_inside_body(gw):
    r = await gw.client.patch(
        "/v1/shelves/s1/books/b2", params={"update_mask": "title,author.born"}, json={"name": "wrong", "title": "New"}
    )
    body = r.json()
    assert body["name"] == "shelves/s1/books/b2" and body["title"] == "New"
    assert body["tags"] == ["title", "author.born"]


async def test_delete_without_body_and_query_bool(gw):
    r = await gw.client.delete("/v1/shelves/s1/books/locked")
    assert r.status_code == 400 and r.json()["code"] == 9
    r = await gw.client.delete("/v1/shelves/s1/books/locked", params={"force": "true"})
    assert r.status_code == 200 and r.json() == {}


async def test_bad_json_body(gw):
    r = await gw.client.post("/v1/everything", content=b'{"f_int32": ', headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["code"] == 3 and "not valid JSON" in r.json()["message"]
    r = await gw.client.post("/v1/everything", json={"f_message": {"born": "old"}})
    assert r.status_code == 400
    assert r.json()["message"] == 'invalid value for field "f_message.born": expected an integer (int32), got "old"'
    r = await gw.client.post("/v1/everything", json=[1, 2])
    assert r.status_code == 400


async def test_empty_body_is_an_empty_message(gw):
    r = await gw.client.post("/v1/everything")
    assert r.status_code == 200 and r.json()["f_int64"] == "0"


async def test_body_size_limit(pb):
    from support import Harness

    async with Harness(pb, "inprocess", max_body_bytes=100) as h:
        r = await h.client.post("/v1/everything", json={"f_string": "x" * 200})
        assert r.status_code == 413 and r.json()["code"] == 8
        r = await h.client.post("/v1/everything", json={"f_string": "x" * 10})
        assert r.status_code == 200


async def test_everything_round_trip_equals_grpc(gw):
    payload = {
        "f_double": 1.25,
        "f_float": 0.1,
        "f_int64": "-9007199254740993",
        "f_uint64": "18446744073709551615",
        "f_bool": True,
        "f_bytes": "AAEC",
        "f_enum": "FICTION",
        "r_int64": ["1", 2],
        "r_enum": ["SCIENCE"],
        "m_string_int64": {"a": "1"},
        "m_bool_message": {"false": {"born": 3}},
        "c_message": {"display_name": "c"},
        "o_int64": "0",
        "w_timestamp": "2024-05-06T07:08:09Z",
        "w_duration": "3.000000001s",
        "w_struct": {"a": [1, "b", None]},
        "w_value": "text",
        "w_list": [1, True],
        "w_empty": {},
        "w_any": {"@type": "type.googleapis.com/google.protobuf.Duration", "value": "1s"},
        "w_bytes": "/w==",
        "w_float": "Infinity",
        "nested": {"f_string": "inner"},
        "customName": "cn",
    }
    r = await gw.client.post("/v1/everything", json=payload)
    assert r.status_code == 200, r.text
    msg = json_format.ParseDict(payload, gw.pb.pb2.Everything())
    direct = await gw.library.EchoEverything(msg)
    assert r.json() == jsonmap.to_json(direct)
    out = r.json()
    assert out["o_int64"] == "0" and "o_string" not in out and out["w_float"] == "Infinity"
    assert out["json_named"] == "cn" and out["f_float"] == 0.1


# -- query parameters ---------------------------------------------------------------------------


async def test_query_parameters_of_every_kind(gw):
    params = [
        ("page_size", "5"),
        ("pageToken", "tok"),
        ("genre", "2"),
        ("tags", "x"),
        ("tags", "y"),
        ("ids", "1"),
        ("ids", "-2"),
        ("labels[k1]", "v1"),
        ("labels[k2]", "v2"),
        ("published_after", "2024-01-02T03:04:05Z"),
        ("max_age", "1h30m"),
        ("min_pages", "7"),
        ("author_name", "Ann"),
        ("available", "false"),
        ("read_mask", "title,author.display_name"),
        ("cursor", "-_8"),
        ("filter.title", "Dune"),
        ("filter.pages.min", "100"),
        ("filter.genre", "FICTION"),
        ("min_rating", "4.5"),
        ("big", "18446744073709551615"),
        ("include_drafts", "T"),
        ("order_by", "title"),
        ("limit", "0"),
        ("genre_by_shelf[3]", "SCIENCE"),
        ("genres", "FICTION"),
        ("genres", "2"),
        ("weight", "NaN"),
        ("unknown", "ignored"),
        ("filter.nope", "x"),
        ("access_token", "not-a-field"),
    ]
    r = await gw.client.get("/v1/shelves/s1/books", params=params)
    assert r.status_code == 200, r.text
    echo = r.json()["echo"]
    assert echo["parent"] == "shelves/s1" and echo["page_size"] == 5 and echo["page_token"] == "tok"
    assert echo["genre"] == "SCIENCE" and echo["tags"] == ["x", "y"] and echo["ids"] == ["1", "-2"]
    assert echo["labels"] == {"k1": "v1", "k2": "v2"}
    assert echo["published_after"] == "2024-01-02T03:04:05Z" and echo["max_age"] == "5400s"
    assert echo["min_pages"] == 7 and echo["author_name"] == "Ann" and echo["available"] is False
    assert echo["read_mask"] == "title,author.displayName"  # FieldMask paths kept as given; JSON form is camel
    assert echo["cursor"] == "+/8="
    assert echo["filter"] == {"title": "Dune", "pages": {"min": 100, "max": 0}, "genre": "FICTION"}
    assert echo["min_rating"] == 4.5 and echo["big"] == "18446744073709551615" and echo["include_drafts"] is True
    assert echo["order_by"] == "title" and echo["limit"] == 0 and echo["genre_by_shelf"] == {"3": "SCIENCE"}
    assert echo["genres"] == ["FICTION", "SCIENCE"] and echo["weight"] == "NaN"


async def test_path_field_is_not_overridden_by_query(gw):
    r = await gw.client.get("/v1/shelves/s1/books", params={"parent": "shelves/other"})
    assert r.json()["echo"]["parent"] == "shelves/s1"


@pytest.mark.parametrize(
    "params, needle",
    [
        ({"page_size": ["1", "2"]}, 'query parameter "page_size"'),
        ({"page_size": "ten"}, "expected an integer (int32)"),
        ({"page_size": "99999999999"}, "out of range"),
        ({"genre": "POETRY"}, "expected one of GENRE_UNSPECIFIED, FICTION, SCIENCE"),
        ({"include_drafts": "yes"}, "expected true or false"),
        ({"published_after": "tomorrow"}, "RFC 3339"),
        ({"max_age": "forever"}, "duration"),
        ({"cursor": "!!"}, "base64"),
        ({"order_by": "a", "shuffle": "true"}, "oneof"),
        ({"page_size.x": "1"}, "is not a message field"),
        ({"labels[a]": ["1", "2"]}, "map entry"),
    ],
)
async def test_bad_query_parameters(gw, params, needle):
    r = await gw.client.get("/v1/shelves/s1/books", params=params)
    assert r.status_code == 400, r.text
    assert r.json()["code"] == 3
    assert needle in r.json()["message"]


# -- HttpBody and response_body -------------------------------------------------------------------


async def test_httpbody_out(gw):
    r = await gw.client.get("/v1/shelves/s1/books/b1/cover")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content == b"\x89PNGshelves/s1/books/b1"


async def test_httpbody_in_as_body_field(gw):
    r = await gw.client.put(
        "/v1/shelves/s1/books/b1/cover",
        params={"note": "n"},
        content=b"\x00raw\xff",
        headers={"content-type": "image/webp"},
    )
    assert r.status_code == 200
    assert r.json() == {
        "name": "shelves/s1/books/b1",
        "note": "n",
        "cover": {"content_type": "image/webp", "data": base64.b64encode(b"\x00raw\xff").decode(), "extensions": []},
    }


async def test_httpbody_both_ways(gw):
    r = await gw.client.post("/v1/echo:raw", content=b"<x/>", headers={"content-type": "application/xml"})
    assert r.status_code == 200 and r.content == b"<x/>" and r.headers["content-type"] == "application/xml"


async def test_response_body(gw):
    r = await gw.client.get("/v1/shelves/s1/books/b1/author")
    assert r.json() == {"display_name": "Ann", "born": 1970}


# -- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", code_names())
async def test_status_mapping(gw, code):
    r = await gw.client.post("/v1/fail", json={"code": code, "message": f"m-{code}"})
    number = getattr(grpc.StatusCode, code).value[0]
    assert r.status_code == HTTP_STATUS[number]
    assert r.json() == {"code": number, "message": f"m-{code}", "details": []}
    assert r.headers["content-type"] == "application/json"
    if code == "UNAUTHENTICATED":
        assert r.headers["www-authenticate"] == "Bearer"
    else:
        assert "www-authenticate" not in r.headers


def test_status_table_is_grpc_gateways():
    assert HTTP_STATUS == {
        0: 200,
        1: 499,
        2: 500,
        3: 400,
        4: 504,
        5: 404,
        6: 409,
        7: 403,
        8: 429,
        9: 400,
        10: 409,
        11: 400,
        12: 501,
        13: 500,
        14: 503,
        15: 500,
        16: 401,
    }


async def test_rich_error_details(gw):
    r = await gw.client.post("/v1/fail", json={"code": "FAILED_PRECONDITION", "message": "locked", "rich": True})
    assert r.status_code == 400
    body = r.json()
    assert body["code"] == 9 and body["message"] == "locked"
    assert body["details"][0] == {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "BOOK_LOCKED",
        "domain": "gwtest",
        "metadata": {"book": "b1"},
    }
    assert body["details"][1]["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    assert body["details"][1]["field_violations"][0]["field"] == "title"
    assert r.headers["grpc-trailer-x-extra"] == "1"
    assert "grpc-trailer-grpc-status-details-bin" not in r.headers


async def test_unexpected_exception_is_unknown(gw):
    r = await gw.client.post("/v1/fail", json={"crash": True, "message": "kaboom"})
    assert r.status_code == 500
    assert r.json()["code"] == 2 and r.json()["message"] == "Unexpected <class 'ValueError'>: kaboom"


async def test_set_code_without_abort(gw):
    r = await gw.client.post("/v1/fail", json={"code": "ALREADY_EXISTS", "message": "dup", "set_code": True})
    assert r.status_code == 409 and r.json()["message"] == "dup"


async def test_abort_not_found_from_handler(gw):
    r = await gw.client.get("/v1/shelves/s1/books/missing")
    assert r.status_code == 404 and r.json()["message"] == "shelves/s1/books/missing not found"


# -- headers and metadata -------------------------------------------------------------------------


def _md(response) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for e in response.json()["metadata"]:
        out.setdefault(e["key"], []).append(e["value"])
    return out


async def test_headers_to_metadata(gw):
    r = await gw.client.get(
        "/v1/inspect",
        headers={
            "Authorization": "Bearer abc",
            "Grpc-Metadata-Tenant": "t1",
            "Grpc-Metadata-Blob-Bin": base64.b64encode(b"\x00\x01").decode(),
            "Accept-Language": "fr",
            "X-Forwarded-For": "1.1.1.1",
            "X-Trace-Id": "trace-123",
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "Cookie": "a=b",
            "X-Not-Forwarded": "no",
        },
    )
    md = _md(r)
    assert md["authorization"] == ["Bearer abc"] and md["grpcgateway-authorization"] == ["Bearer abc"]
    assert md["tenant"] == ["t1"] and md["blob-bin"] == [base64.b64encode(b"\x00\x01").decode()]
    assert md["grpcgateway-accept-language"] == ["fr"] and md["grpcgateway-cookie"] == ["a=b"]
    assert md["x-forwarded-for"] == ["1.1.1.1, 10.1.2.3"] and md["x-forwarded-host"] == ["gw.test"]
    assert md["x-trace-id"] == ["trace-123"]
    assert md["traceparent"] == ["00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"]
    assert "x-not-forwarded" not in md
    assert r.headers["x-trace-id"] == "trace-123"
    if gw.mode == "inprocess":
        assert r.json()["peer"] == "ipv4:10.1.2.3:4567"


async def test_generated_trace_id_and_traceparent(gw):
    r = await gw.client.get("/v1/inspect")
    trace = r.headers["x-trace-id"]
    assert len(trace) == 32 and _md(r)["x-trace-id"] == [trace]
    assert float(r.headers["x-process-time"]) >= 0
    r = await gw.client.get(
        "/v1/inspect", headers={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    )
    assert r.headers["x-trace-id"] == "0af7651916cd43dd8448eb211c80319c"
    assert "x-trace-id" not in _md(r)


async def test_access_token_query_parameter(gw):
    r = await gw.client.get("/v1/inspect", params={"access_token": "tok1"})
    assert _md(r)["authorization"] == ["Bearer tok1"]
    r = await gw.client.get("/v1/inspect", params={"access_token": "tok1"}, headers={"Authorization": "Basic x"})
    assert _md(r)["authorization"] == ["Basic x"]


async def test_response_metadata_to_headers(gw):
    r = await gw.client.get("/v1/inspect", params={"initial[x-init]": "i1", "trailing[x-trail]": "t1"})
    assert r.headers["grpc-metadata-x-init"] == "i1"
    assert r.headers["grpc-trailer-x-trail"] == "t1"


async def test_grpc_timeout_to_deadline(gw):
    r = await gw.client.get("/v1/inspect", headers={"Grpc-Timeout": "5S"})
    # <= 5 plus clock rounding: gRPC reports the remaining time from its own clock (seen: 5.0095 s)
    assert r.json()["has_deadline"] and 4 < r.json()["time_remaining"] <= 5.05
    r = await gw.client.get("/v1/inspect")
    assert not r.json()["has_deadline"]
    r = await gw.client.post("/v1/sleep", json={"millis": 2000}, headers={"Grpc-Timeout": "100m"})
    assert r.status_code == 504 and r.json()["code"] == 4
    r = await gw.client.get("/v1/inspect", headers={"Grpc-Timeout": "soon"})
    assert r.status_code == 400 and "grpc-timeout" in r.json()["message"]


async def test_default_timeout(pb):
    from support import Harness

    async with Harness(pb, "inprocess", default_timeout=0.05) as h:
        r = await h.client.post("/v1/sleep", json={"millis": 1000, "token": "dt"})
        assert r.status_code == 504
        assert "dt" in h.state.cancelled


async def test_bad_binary_header(gw):
    r = await gw.client.get("/v1/inspect", headers={"Grpc-Metadata-Blob-Bin": "***"})
    assert r.status_code == 400 and "binary header" in r.json()["message"]


async def test_extra_routes_get_trace_headers(pb):
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from support import Harness

    async def healthz(request):
        return PlainTextResponse(f"ok {request.state.trace_id}")

    async with Harness(pb, "inprocess", routes=[Route("/healthz", healthz)]) as h:
        r = await h.client.get("/healthz", headers={"x-trace-id": "abc"})
        assert r.text == "ok abc" and r.headers["x-trace-id"] == "abc" and "x-process-time" in r.headers
        r = await h.client.get("/nope")
        assert r.status_code == 404 and r.json()["code"] == 5 and "x-trace-id" in r.headers


@pytest.mark.parametrize(
    "rule, needle",
    [
        ({"get": "/v1/{missing}"}, "missing"),
        ({"post": "/v1/x", "body": "nope"}, "body field"),
        ({"get": "/v1/x", "response_body": "nope"}, "response_body"),
        ({"get": "v1/no-slash"}, "must start with"),
        ({"get": "/v1/{name=**}/{other=**}"}, "more than one"),
        ({"get": "/v1/{name=books/{x}}"}, "nested variable"),
    ],
)
def test_bad_annotation_is_rejected_at_startup(pb, rule, needle):
    from google.api import http_pb2

    from typecase.server.gateway.bindings import build_binding

    service = pb.pb2.DESCRIPTOR.services_by_name["LibraryService"]
    with pytest.raises(ValueError, match=needle):
        build_binding(service, service.methods_by_name["GetBook"], http_pb2.HttpRule(**rule), 0)


async def test_json_output_is_compact_utf8(gw):
    r = await gw.client.post("/v1/everything", json={"f_string": "héllo ✓"})
    assert "héllo ✓".encode() in r.content
    assert json.loads(r.content)["f_string"] == "héllo ✓"
