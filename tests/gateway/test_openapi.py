"""OpenAPI 3.1 generation, the /docs page, and a schemathesis run against a live server."""

from __future__ import annotations

import asyncio
import threading

import pytest
from support import Harness, serve


@pytest.fixture
async def doc_harness(pb):
    async with Harness(pb, "inprocess", descriptor_set=pb.descriptor_set, title="Library", version="9") as h:
        yield h


async def test_document_shape(doc_harness):
    r = await doc_harness.client.get("/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"] == "3.1.0" and doc["info"] == {"title": "Library", "version": "9"}
    from openapi_spec_validator import validate

    validate(doc)
    paths = doc["paths"]
    get_book = paths["/v1/shelves/{shelf}/books/{book}"]["get"]
    assert get_book["operationId"] == "LibraryService_GetBook"
    assert get_book["summary"] == "Gets a book."
    assert "additional binding" in get_book["description"]
    shelf = get_book["parameters"][0]
    assert shelf["name"] == "shelf" and shelf["in"] == "path" and shelf["x-field-path"] == "name"
    assert paths["/v1/books/{name}"]["get"]["operationId"] == "LibraryService_GetBook2"
    assert "/v1/shelves/{shelf}/books/{book}:move" in paths and "/v1/refs/{ref_kind}/{ref_id}" in paths
    assert paths["/v1/refs/{ref_kind}/{ref_id}"]["get"]["parameters"][1]["x-field-path"] == "ref.id"
    assert paths["/v1/files/{path_path}"]["get"]["parameters"][0]["schema"] == {"type": "string"}
    list_params = {p["name"]: p for p in paths["/v1/shelves/{shelf}/books"]["get"]["parameters"]}
    assert list_params["shelf"]["in"] == "path"
    assert list_params["filter.pages.min"]["schema"]["type"] == "integer"
    assert (
        list_params["tags"]["schema"] == {"type": "array", "items": {"type": "string"}}
        and list_params["tags"]["explode"]
    )
    assert list_params["ids"]["schema"]["items"]["format"] == "int64"
    assert list_params["published_after"]["schema"] == {"type": "string", "format": "date-time"}
    assert list_params["genre"]["schema"] == {"$ref": "#/components/schemas/gwtest.v1.Genre"}
    assert "labels" not in list_params and "access_token" not in list_params
    create = paths["/v1/shelves/{shelf}/books"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"]["anyOf"][0] == {
        "$ref": "#/components/schemas/gwtest.v1.Book"
    }
    assert {p["name"] for p in create["parameters"]} == {"shelf", "book_id"}
    schemas = doc["components"]["schemas"]
    book = schemas["gwtest.v1.Book"]
    assert book["description"].startswith("A book on a shelf.")
    assert book["properties"]["page_count"]["type"] == "string"
    assert book["properties"]["name"]["description"] == "Resource name, shelves/{shelf}/books/{book}."
    assert book["properties"]["published"]["type"] == ["string", "null"]
    assert schemas["gwtest.v1.Genre"]["enum"] == ["GENRE_UNSPECIFIED", "FICTION", "SCIENCE"]
    assert schemas["google.rpc.Status"]["properties"]["details"]["items"]["properties"]["@type"] == {"type": "string"}
    watch = paths["/v1/shelves/{shelf}/books/{book}:watch"]["get"]["responses"]
    stream_ref = watch["200"]["content"]["application/x-ndjson"]["schema"]["$ref"].split("/")[-1]
    assert schemas[stream_ref]["properties"]["error"] == {"$ref": "#/components/schemas/google.rpc.Status"}
    assert "text/event-stream" in watch["200"]["content"]
    assert watch["default"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/google.rpc.Status"
    }
    upload = paths["/v1/shelves/{shelf}/files"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in upload and "application/x-ndjson" in upload
    assert paths["/v1/shelves/{shelf}/books/{book}/cover"]["get"]["responses"]["200"]["content"] == {
        "*/*": {"schema": {}}
    }
    assert doc["tags"][0] == {
        "name": "LibraryService",
        "description": "A library of books on shelves: exercises every HttpRule feature the gateway supports.",
    }


async def test_docs_page_is_self_contained(doc_harness):
    r = await doc_harness.client.get("/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in r.text and "<script>" in r.text
    assert "https://" not in r.text and "cdn" not in r.text.lower()


def test_schemathesis_against_live_server(pb):
    """Bounded property-based run over every documented operation: no 5xx, responses match the schema."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis import checks as st_checks

    # The bar: no server error and every response (status, content type, body) as documented.
    # positive_data_acceptance is left out: a schema can't say e.g. "int64 range" for a string.
    CHECKS = [
        st_checks.not_a_server_error,
        st_checks.status_code_conformance,
        st_checks.content_type_conformance,
        st_checks.response_schema_conformance,
        st_checks.response_headers_conformance,
    ]

    ready = threading.Event()
    state: dict = {}

    async def run_server():
        async with Harness(pb, "inprocess", descriptor_set=pb.descriptor_set) as h, serve(h.app) as addr:
            h.state.bounded = True
            state["addr"] = addr
            state["stop"] = asyncio.Event()
            state["loop"] = asyncio.get_running_loop()
            ready.set()
            await state["stop"].wait()

    thread = threading.Thread(target=lambda: asyncio.run(run_server()), daemon=True)
    thread.start()
    assert ready.wait(20)
    try:
        schema = schemathesis.openapi.from_url(f"http://{state['addr']}/openapi.json")
        failures = []
        statuses: list[int] = []
        results = list(schema.get_all_operations())
        errors = [
            (str(r.err()), getattr(r.err(), "path", None), str(r.err().__cause__))
            for r in results
            if not hasattr(r, "ok")
        ]
        assert not errors, errors
        # Fail and Sleep are test controls (a requested 5xx, a requested wait): not for fuzzing.
        operations = [
            r.ok()
            for r in results
            if r.ok().definition.raw.get("operationId") not in ("LibraryService_Fail", "LibraryService_Sleep")
        ]
        assert len(operations) >= 18
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(max_examples=10, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            def check(case):
                response = case.call(timeout=10)
                statuses.append(response.status_code)
                assert response.status_code < 500, (
                    f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}"
                )
                case.validate_response(response, checks=CHECKS)

            try:
                check()
            except Exception as e:  # collect all, report together
                failures.append(f"{operation.label}: {e}")
        assert not failures, "\n\n".join(failures)
        assert sum(200 <= s < 300 for s in statuses) >= len(operations)  # the run reached the handlers
    finally:
        state["loop"].call_soon_threadsafe(state["stop"].set)
        thread.join(10)
