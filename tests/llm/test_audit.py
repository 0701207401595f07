"""Every change to providers, models and defaults is in the audit log with actor, target and the resource before
and after, secrets masked (read back through AdminService.ListAuditEvents over REST)."""

from __future__ import annotations

import httpx
from google.protobuf import field_mask_pb2

from tests.conftest import ADMIN_KEY
from tests.llm.conftest import ADMIN
from typecase.v1 import llm_pb2

SECRET = "sk-audit-secret-0123456789abcdef0123"


async def audit(app, **query) -> list[dict]:
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{app.http_port}", headers={"authorization": f"Bearer {ADMIN_KEY}"}
    ) as http:
        reply = await http.get("/v1/admin/audit", params={"page_size": 100, **query})
        assert reply.status_code == 200, reply.text
        return reply.json()["events"]


async def test_llm_changes_are_audited_with_before_and_after(llm, upstream):
    provider = await llm.provider(upstream.base_url + "/v1", name="audited", api_key=SECRET)
    model = await llm.model(provider.id, "gpt-audit")
    await llm.stub.UpdateModel(
        llm_pb2.UpdateModelRequest(
            model=llm_pb2.Model(id=model.id, online=False), update_mask=field_mask_pb2.FieldMask(paths=["online"])
        ),
        metadata=ADMIN,
    )
    await llm.stub.UpdateDefaults(
        llm_pb2.UpdateDefaultsRequest(
            defaults=llm_pb2.LLMDefaults(title_model_id=model.id),
            update_mask=field_mask_pb2.FieldMask(paths=["title_model_id"]),
        ),
        metadata=ADMIN,
    )
    await llm.stub.DeleteModel(llm_pb2.DeleteModelRequest(model_id=model.id), metadata=ADMIN)
    await llm.stub.DeleteProvider(llm_pb2.DeleteProviderRequest(provider_id=provider.id, force=True), metadata=ADMIN)

    events = await audit(llm.app)
    by_action = {e["action"]: e for e in events}
    assert {
        "provider.create",
        "model.create",
        "model.update",
        "defaults.update",
        "model.delete",
        "provider.delete",
    } <= set(by_action)
    update = by_action["model.update"]
    assert update["resource_type"] == "model" and update["resource_id"] == model.id and update["actor_id"]
    assert update["detail"]["before"]["online"] is True and update["detail"]["after"].get("online", False) is False
    defaults = by_action["defaults.update"]["detail"]
    assert defaults["after"]["title_model_id"] == model.id and defaults["before"].get("title_model_id") != model.id
    assert by_action["provider.delete"]["detail"]["before"]["name"] == "audited"
    assert "after" not in by_action["provider.delete"]["detail"]
    assert SECRET not in str(events)  # masked as admins see it: "sk-****0123"
    assert by_action["provider.create"]["detail"]["after"]["api_key_masked"] == provider.api_key_masked != SECRET
    only_models = await audit(llm.app, resource_type="model")
    assert {e["action"] for e in only_models} == {"model.create", "model.update", "model.delete"}
