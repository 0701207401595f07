"""ListNodeTypes describes exactly the node types the server runs, with params schemas that agree with the
specs' own validation, so an editor can build every node's form from it."""

from __future__ import annotations

from typing import Any

import grpc
import httpx
import jsonschema_rs
import pytest
from google.protobuf import json_format

from tests.flow.support import admin, new_user
from typecase.server.flow.node_types import DESCRIPTIONS, node_type_infos, values_at
from typecase.server.flow.nodes import SPECS
from typecase.v1 import flow_pb2

# Defaults that still need a person's choice before the node can run (no knowledge base is known in advance).
TO_CHOOSE = {"knowledge_retrieval": {"kb_ids"}}


def infos() -> dict[str, dict[str, Any]]:
    return {
        i.kind: json_format.MessageToDict(
            i, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        for i in node_type_infos()
    }


def test_every_spec_is_described_and_nothing_else():
    assert {spec.kind for spec in SPECS.values()} == set(DESCRIPTIONS)
    assert [i.type for i in node_type_infos()] == sorted(SPECS)


@pytest.mark.parametrize("kind", sorted(DESCRIPTIONS))
def test_schema_is_valid_and_default_params_pass_it_and_the_spec(kind):
    info = infos()[kind]
    schema, defaults = info["params_schema"], info.get("default_params", {})
    assert jsonschema_rs.meta.is_valid(schema), kind
    validator = jsonschema_rs.Draft202012Validator(schema)
    schema_errors = {e.instance_path[0] if e.instance_path else "required" for e in validator.iter_errors(defaults)}
    spec = next(s for s in SPECS.values() if s.kind == kind)
    spec_problems = {p.param for p in spec.validate(defaults) if not p.warning}
    assert spec_problems == TO_CHOOSE.get(kind, set()), spec_problems
    assert schema_errors <= ({"required"} if kind in TO_CHOOSE else set()), schema_errors
    assert set(schema["x-order"]) == set(schema["properties"])


# Params the spec refuses; the schema must refuse them too (the console shows the schema's error before saving).
REFUSED = [
    ("llm", {"user_prompt": "x", "temperature": 7}),
    ("llm", {"user_prompt": "x", "max_tokens": 0}),
    ("knowledge_retrieval", {"kb_ids": ["k"], "query": "q", "top_k": 500}),
    ("knowledge_retrieval", {"kb_ids": ["k"], "query": "q", "mode": "psychic"}),
    ("condition", {"cases": [{"handle": "no spaces allowed", "conditions": [{"left": "1", "op": "=="}]}]}),
    ("condition", {"cases": [{"handle": "a", "conditions": [{"left": "1", "op": "~~"}]}]}),
    ("condition", {"cases": []}),
    ("http_request", {"url": "https://x", "method": "TELEPORT"}),
    ("http_request", {"url": "https://x", "headers": "not an object"}),
    ("start", {"variables": [{"name": "1bad"}]}),
    ("input", {"mode": "telepathy"}),
    ("output", {"template": "x", "interaction": "maybe"}),
    ("end", {"outputs": ["not", "an", "object"]}),
    ("prompt", {}),
]


@pytest.mark.parametrize(("kind", "params"), REFUSED)
def test_the_schema_refuses_what_the_spec_refuses(kind, params):
    spec = next(s for s in SPECS.values() if s.kind == kind)
    assert spec.validate(params), "the spec accepts it: the table is wrong"
    schema = infos()[kind]["params_schema"]
    assert not jsonschema_rs.Draft202012Validator(schema).is_valid(params)


def test_handles_and_outputs_named_by_paths_are_the_specs():
    condition = next(s for s in SPECS.values() if s.kind == "condition")
    params = {"cases": [{"handle": "big", "expression": "1 > 0"}, {"handle": "small", "expression": "1 < 0"}]}
    about = DESCRIPTIONS["condition"]
    assert set(values_at(params, about.handles_from)) | set(about.fixed_handles) == condition.handles(params)

    output = next(s for s in SPECS.values() if s.kind == "output")
    params = {"template": "Pick", "interaction": "choice", "options": ["tea", "coffee"]}
    assert set(values_at(params, DESCRIPTIONS["output"].handles_from)) | {""} == output.handles(params)

    for kind, params in [
        ("start", {"variables": [{"name": "who"}, {"name": "n", "type": "number"}]}),
        ("end", {"outputs": {"answer": "{{x}}", "score": "{{y}}"}}),
        ("input", {"mode": "form", "fields": [{"name": "age", "type": "number"}]}),
    ]:
        spec = next(s for s in SPECS.values() if s.kind == kind)
        static = set(infos()[kind].get("outputs", []))
        assert spec.outputs(params) <= static | set(values_at(params, DESCRIPTIONS[kind].outputs_from)), kind
        assert set(values_at(params, DESCRIPTIONS[kind].outputs_from)) <= spec.outputs(params), kind

    code = infos()["code"]
    assert code["dynamic_outputs"] is True and code["secret_params"] == ["code"]
    assert infos()["start"]["has_input"] is False and infos()["end"]["has_output"] is False


@pytest.mark.asyncio(loop_scope="package")
async def test_any_user_lists_node_types_over_grpc_and_rest(fapp, fchannel):
    alice = await new_user(fchannel, "node-types-alice")
    listed = (await alice.flow.ListNodeTypes(flow_pb2.ListNodeTypesRequest(), metadata=alice.md)).node_types
    assert [t.type for t in listed] == sorted(SPECS)
    llm = next(t for t in listed if t.type == flow_pb2.NODE_TYPE_LLM)
    assert llm.display_name == "LLM" and "user_prompt" in llm.params_schema["properties"]
    assert set(llm.outputs) == {"text", "finish_reason", "model_id"}
    code = next(t for t in listed if t.type == flow_pb2.NODE_TYPE_CODE)
    services = fapp.servicers["FlowService"].engine.services
    assert code.unavailable_reason == (SPECS[flow_pb2.NODE_TYPE_CODE].unavailable(services) or "")
    same = await admin(fchannel).flow.ListNodeTypes(flow_pb2.ListNodeTypesRequest(), metadata=admin(fchannel).md)
    assert list(same.node_types) == list(listed)

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{fapp.http_port}", timeout=20) as http:
        r = await http.get("/v1/node-types", headers={"authorization": dict(alice.md)["authorization"]})
        assert r.status_code == 200, r.text
        body = r.json()["node_types"]
        condition = next(t for t in body if t["type"] == "NODE_TYPE_CONDITION")
        assert condition["handles_from"] == "cases.*.handle" and condition["fixed_handles"] == ["else"]
        assert condition["params_schema"]["properties"]["cases"]["minItems"] == 1
        anonymous = await http.get("/v1/node-types")
        assert anonymous.status_code == 401

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await alice.flow.ListNodeTypes(flow_pb2.ListNodeTypesRequest())
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_node_type_without_a_description_is_still_listed_with_json_params(monkeypatch):
    from typecase.server.flow import node_types

    monkeypatch.delitem(node_types.DESCRIPTIONS, "http_request")
    info = next(i for i in node_type_infos() if i.kind == "http_request")
    assert info.category == "other" and info.display_name == "Http request" and info.description
    schema = json_format.MessageToDict(info.params_schema)
    assert schema["x-widget"] == "json" and schema["additionalProperties"] is True
    assert set(info.outputs) == {"status_code", "headers", "body", "json"}
