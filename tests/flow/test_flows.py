"""Flows and versions: CRUD, publishing rules, visibility and the audit trail."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2

from tests.flow.support import admin, chain, create_flow, new_user, node, reason, run_flow, violations
from typecase.v1 import flow_pb2

pytestmark = pytest.mark.asyncio(loop_scope="package")


def hello(greeting: str = "Hello") -> flow_pb2.Graph:
    return chain(
        node("start", "start", variables=[{"name": "who", "default": "world"}]),
        node("p", "prompt", template=greeting + " {{who}}"),
        node("end", "end", outputs={"text": "{{p.text}}"}),
    )


def broken() -> flow_pb2.Graph:
    return chain(node("start", "start"), node("p", "prompt"), node("end", "end"))  # prompt without template


async def expect_error(call, code: grpc.StatusCode, why: str = ""):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    if why:
        assert reason(caught.value) == why
    return caught.value


async def test_flow_crud(fchannel, fapp):
    alice = await new_user(fchannel, "crud-alice")
    f = alice.flow
    flow = await create_flow(alice, "Greeter", hello(), description="says hello")
    assert flow.id and flow.owner_id == alice.user_id and flow.status == flow_pb2.FLOW_STATUS_DRAFT
    assert flow.current_version_id and [n.id for n in flow.graph.nodes] == ["start", "p", "end"]
    assert flow.graph.nodes[1].params["template"] == "Hello {{who}}"
    await expect_error(
        f.CreateFlow(flow_pb2.CreateFlowRequest(flow=flow_pb2.Flow(name="Greeter")), metadata=alice.md),
        grpc.StatusCode.ALREADY_EXISTS,
        "ALREADY_EXISTS",
    )
    await expect_error(
        f.CreateFlow(flow_pb2.CreateFlowRequest(flow=flow_pb2.Flow(name=" ")), metadata=alice.md),
        grpc.StatusCode.INVALID_ARGUMENT,
    )

    got = (await f.GetFlow(flow_pb2.GetFlowRequest(flow_id=flow.id), metadata=alice.md)).flow
    assert got == flow

    updated = (
        await f.UpdateFlow(
            flow_pb2.UpdateFlowRequest(
                flow=flow_pb2.Flow(id=flow.id, name="Greeter 2", graph=hello("Hi")),
                update_mask=field_mask_pb2.FieldMask(paths=["name", "graph"]),
            ),
            metadata=alice.md,
        )
    ).flow
    assert updated.name == "Greeter 2" and updated.description == "says hello"
    assert updated.graph.nodes[1].params["template"] == "Hi {{who}}"
    assert updated.update_time.ToDatetime() >= flow.update_time.ToDatetime()
    # No mask: the fields set.
    updated = (
        await f.UpdateFlow(
            flow_pb2.UpdateFlowRequest(flow=flow_pb2.Flow(id=flow.id, description="d2")), metadata=alice.md
        )
    ).flow
    assert updated.name == "Greeter 2" and updated.description == "d2"
    await expect_error(
        f.UpdateFlow(
            flow_pb2.UpdateFlowRequest(
                flow=flow_pb2.Flow(id=flow.id), update_mask=field_mask_pb2.FieldMask(paths=["owner_id"])
            ),
            metadata=alice.md,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )

    second = await create_flow(alice, "Other", hello())
    listed = await f.ListFlows(flow_pb2.ListFlowsRequest(page_size=1), metadata=alice.md)
    assert [x.id for x in listed.flows] == [second.id] and listed.total_size == 2 and listed.next_page_token
    assert not listed.flows[0].graph.nodes  # lists omit graphs
    page2 = await f.ListFlows(
        flow_pb2.ListFlowsRequest(page_size=1, page_token=listed.next_page_token), metadata=alice.md
    )
    assert [x.id for x in page2.flows] == [flow.id] and not page2.next_page_token
    found = await f.ListFlows(flow_pb2.ListFlowsRequest(keyword="greeter"), metadata=alice.md)
    assert [x.id for x in found.flows] == [flow.id]

    await f.DeleteFlow(flow_pb2.DeleteFlowRequest(flow_id=second.id), metadata=alice.md)
    await expect_error(
        f.GetFlow(flow_pb2.GetFlowRequest(flow_id=second.id), metadata=alice.md), grpc.StatusCode.NOT_FOUND
    )
    actions = [e.action for e in await fapp.audit.query(limit=50, actor_id=alice.user_id)]
    assert {"flow.create", "flow.update", "flow.delete"} <= set(actions)


async def test_publish_rules(fchannel, fapp):
    alice = await new_user(fchannel, "pub-alice")
    bob = await new_user(fchannel, "pub-bob")
    f = alice.flow
    flow = await create_flow(alice, "Published", hello())

    # Drafts are invisible to others; runs of them too.
    await expect_error(
        bob.flow.GetFlow(flow_pb2.GetFlowRequest(flow_id=flow.id), metadata=bob.md),
        grpc.StatusCode.NOT_FOUND,
        "NOT_FOUND",
    )
    await expect_error(run_flow(bob, flow.id), grpc.StatusCode.NOT_FOUND)

    published = (await f.PublishFlow(flow_pb2.PublishFlowRequest(flow_id=flow.id), metadata=alice.md)).flow
    assert published.status == flow_pb2.FLOW_STATUS_ONLINE and published.HasField("publish_time")
    # Online: readable and runnable by others, editable by nobody until unpublished.
    assert (await bob.flow.GetFlow(flow_pb2.GetFlowRequest(flow_id=flow.id), metadata=bob.md)).flow.id == flow.id
    assert flow.id in [x.id for x in (await bob.flow.ListFlows(flow_pb2.ListFlowsRequest(), metadata=bob.md)).flows]
    events = await run_flow(bob, flow.id, {"who": "Bob"})
    assert events[-1].event.run_finished.outputs["text"] == "Hello Bob"
    await expect_error(
        bob.flow.UpdateFlow(flow_pb2.UpdateFlowRequest(flow=flow_pb2.Flow(id=flow.id, name="x")), metadata=bob.md),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await expect_error(
        f.UpdateFlow(flow_pb2.UpdateFlowRequest(flow=flow_pb2.Flow(id=flow.id, graph=broken())), metadata=alice.md),
        grpc.StatusCode.FAILED_PRECONDITION,
        "FLOW_ONLINE_NOT_EDITABLE",
    )
    await expect_error(
        f.UpdateFlowVersion(
            flow_pb2.UpdateFlowVersionRequest(
                flow_id=flow.id, version=flow_pb2.FlowVersion(id=flow.current_version_id, graph=broken())
            ),
            metadata=alice.md,
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "FLOW_ONLINE_NOT_EDITABLE",
    )

    # Another version stays editable while online; it can only become current if valid.
    draft = (
        await f.CreateFlowVersion(
            flow_pb2.CreateFlowVersionRequest(flow_id=flow.id, version=flow_pb2.FlowVersion(name="v2", graph=broken())),
            metadata=alice.md,
        )
    ).version
    error = await expect_error(
        f.SetCurrentVersion(flow_pb2.SetCurrentVersionRequest(flow_id=flow.id, version_id=draft.id), metadata=alice.md),
        grpc.StatusCode.FAILED_PRECONDITION,
        "FLOW_INVALID",
    )
    assert [v.field for v in violations(error)] == ["nodes[p].params.template"]
    await f.UpdateFlowVersion(
        flow_pb2.UpdateFlowVersionRequest(
            flow_id=flow.id, version=flow_pb2.FlowVersion(id=draft.id, graph=hello("Howdy"))
        ),
        metadata=alice.md,
    )
    switched = (
        await f.SetCurrentVersion(
            flow_pb2.SetCurrentVersionRequest(flow_id=flow.id, version_id=draft.id), metadata=alice.md
        )
    ).flow
    assert switched.current_version_id == draft.id and switched.graph.nodes[1].params["template"] == "Howdy {{who}}"
    events = await run_flow(bob, flow.id, {"who": "Bob"})
    assert events[-1].event.run_finished.outputs["text"] == "Howdy Bob"

    unpublished = (await f.UnpublishFlow(flow_pb2.UnpublishFlowRequest(flow_id=flow.id), metadata=alice.md)).flow
    assert unpublished.status == flow_pb2.FLOW_STATUS_DRAFT
    await expect_error(
        bob.flow.GetFlow(flow_pb2.GetFlowRequest(flow_id=flow.id), metadata=bob.md), grpc.StatusCode.NOT_FOUND
    )
    # Editable again; publishing an invalid graph fails with every problem named by node.
    await f.UpdateFlow(flow_pb2.UpdateFlowRequest(flow=flow_pb2.Flow(id=flow.id, graph=broken())), metadata=alice.md)
    error = await expect_error(
        f.PublishFlow(flow_pb2.PublishFlowRequest(flow_id=flow.id), metadata=alice.md),
        grpc.StatusCode.FAILED_PRECONDITION,
        "FLOW_INVALID",
    )
    assert "MISSING_PARAM" in error.details() and "'p'" in error.details()
    assert (
        await f.GetFlow(flow_pb2.GetFlowRequest(flow_id=flow.id), metadata=alice.md)
    ).flow.status == flow_pb2.FLOW_STATUS_DRAFT
    # Publishing a given (valid) version makes it current.
    first = next(
        v
        for v in (
            await f.ListFlowVersions(flow_pb2.ListFlowVersionsRequest(flow_id=flow.id), metadata=alice.md)
        ).versions
        if v.name == "v1"
    )
    published = (
        await f.PublishFlow(flow_pb2.PublishFlowRequest(flow_id=flow.id, version_id=first.id), metadata=alice.md)
    ).flow
    assert published.current_version_id == first.id and published.status == flow_pb2.FLOW_STATUS_ONLINE
    actions = [e.action for e in await fapp.audit.query(limit=50, resource_id=flow.id)]
    assert actions.count("flow.publish") == 2 and "flow.unpublish" in actions
    # Admins see and edit everything.
    root = admin(fchannel)
    await root.flow.UnpublishFlow(flow_pb2.UnpublishFlowRequest(flow_id=flow.id), metadata=root.md)


async def test_version_lifecycle(fchannel):
    alice = await new_user(fchannel, "ver-alice")
    f = alice.flow
    flow = await create_flow(alice, "Versioned", hello())
    v1 = flow.current_version_id
    # From the current version by default, from another version, or with a graph of its own.
    copy = (
        await f.CreateFlowVersion(
            flow_pb2.CreateFlowVersionRequest(flow_id=flow.id, version=flow_pb2.FlowVersion(description="copy")),
            metadata=alice.md,
        )
    ).version
    assert copy.name == "v2" and copy.from_version_id == v1 and not copy.is_current
    assert copy.graph == flow.graph
    own = (
        await f.CreateFlowVersion(
            flow_pb2.CreateFlowVersionRequest(
                flow_id=flow.id, version=flow_pb2.FlowVersion(name="bonjour", graph=hello("Bonjour"))
            ),
            metadata=alice.md,
        )
    ).version
    from_own = (
        await f.CreateFlowVersion(
            flow_pb2.CreateFlowVersionRequest(
                flow_id=flow.id, version=flow_pb2.FlowVersion(name="again", from_version_id=own.id)
            ),
            metadata=alice.md,
        )
    ).version
    assert from_own.graph == own.graph and from_own.from_version_id == own.id
    await expect_error(
        f.CreateFlowVersion(
            flow_pb2.CreateFlowVersionRequest(flow_id=flow.id, version=flow_pb2.FlowVersion(name="bonjour")),
            metadata=alice.md,
        ),
        grpc.StatusCode.ALREADY_EXISTS,
    )

    listed = (await f.ListFlowVersions(flow_pb2.ListFlowVersionsRequest(flow_id=flow.id), metadata=alice.md)).versions
    assert [v.name for v in listed] == ["again", "bonjour", "v2", "v1"]
    assert [v.is_current for v in listed] == [False, False, False, True] and not listed[0].graph.nodes
    paged = await f.ListFlowVersions(flow_pb2.ListFlowVersionsRequest(flow_id=flow.id, page_size=3), metadata=alice.md)
    rest = await f.ListFlowVersions(
        flow_pb2.ListFlowVersionsRequest(flow_id=flow.id, page_size=3, page_token=paged.next_page_token),
        metadata=alice.md,
    )
    assert [v.name for v in rest.versions] == ["v1"]

    renamed = (
        await f.UpdateFlowVersion(
            flow_pb2.UpdateFlowVersionRequest(
                flow_id=flow.id, version=flow_pb2.FlowVersion(id=copy.id, name="copy", description="renamed")
            ),
            metadata=alice.md,
        )
    ).version
    assert renamed.name == "copy" and renamed.graph == flow.graph
    got = (
        await f.GetFlowVersion(flow_pb2.GetFlowVersionRequest(flow_id=flow.id, version_id=own.id), metadata=alice.md)
    ).version
    assert got.graph.nodes[1].params["template"] == "Bonjour {{who}}"

    # Runs name a version (default: the current one).
    events = await run_flow(alice, flow.id, {"who": "Ada"}, version_id=own.id)
    assert events[0].event.run_started.version_id == own.id
    assert events[-1].event.run_finished.outputs["text"] == "Bonjour Ada"
    events = await run_flow(alice, flow.id, {"who": "Ada"})
    assert events[0].event.run_started.version_id == v1 and events[-1].event.run_finished.outputs["text"] == "Hello Ada"

    await f.SetCurrentVersion(flow_pb2.SetCurrentVersionRequest(flow_id=flow.id, version_id=own.id), metadata=alice.md)
    await expect_error(
        f.DeleteFlowVersion(flow_pb2.DeleteFlowVersionRequest(flow_id=flow.id, version_id=own.id), metadata=alice.md),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    await f.DeleteFlowVersion(flow_pb2.DeleteFlowVersionRequest(flow_id=flow.id, version_id=v1), metadata=alice.md)
    await expect_error(
        f.GetFlowVersion(flow_pb2.GetFlowVersionRequest(flow_id=flow.id, version_id=v1), metadata=alice.md),
        grpc.StatusCode.NOT_FOUND,
    )
    # Another flow's version id is not this flow's.
    other = await create_flow(alice, "Other flow", hello())
    await expect_error(
        f.GetFlowVersion(
            flow_pb2.GetFlowVersionRequest(flow_id=flow.id, version_id=other.current_version_id), metadata=alice.md
        ),
        grpc.StatusCode.NOT_FOUND,
    )

    runs = await f.ListRuns(flow_pb2.ListRunsRequest(flow_id=flow.id), metadata=alice.md)
    assert runs.total_size == 2 and all(not r.nodes for r in runs.runs)
    only_own = await f.ListRuns(flow_pb2.ListRunsRequest(flow_id=flow.id, version_id=own.id), metadata=alice.md)
    assert [r.version_id for r in only_own.runs] == [own.id]
    # Deleting the flow deletes its versions and runs.
    run_id = runs.runs[0].id
    await f.DeleteFlow(flow_pb2.DeleteFlowRequest(flow_id=flow.id), metadata=alice.md)
    await expect_error(f.GetRun(flow_pb2.GetRunRequest(run_id=run_id), metadata=alice.md), grpc.StatusCode.NOT_FOUND)
