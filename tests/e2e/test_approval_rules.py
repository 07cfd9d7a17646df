"""Approval rules from the agents file, APPROVE_ALWAYS grants and their revocation, end to
end on each backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2

from agent_runtime.v1 import agent_pb2 as ag
from agent_runtime.v1 import agent_runtime_pb2 as rt
from agent_runtime.v1 import session_pb2 as ses
from tests.support.fake_model_server import FakeModelServer, text_answer, tool_call_answer
from tests.support.grpc_helpers import decision, only, rich_error, tool_result, user_message
from tests.support.runtime_fixtures import Client

AGENTS = """
[agents.coder]
approval_rules = [
  {tool = "execute_command", when.command = "git status*", action = "allow"},
  {tool = "execute_command", when.command = "rm *", action = "deny"},
  "execute_command",
]
"""


@pytest.fixture
def settings_overrides(tmp_path: Path) -> dict[str, Any]:
    agents = tmp_path / "agents.toml"
    agents.write_text(AGENTS)
    return {"server": {"agents_file": str(agents)}}


def command(text: str, call_id: str) -> Any:
    return tool_call_answer("execute_command", {"command": text}, call_id=call_id)


async def test_rules_allow_ask_and_deny_by_argument_and_say_which_rule_asked(
    client: Client, model_server: FakeModelServer
) -> None:
    agents = await client.agents.ListAgents(ag.ListAgentsRequest())
    coder = next(a for a in agents.agents if a.name == "coder")
    assert [(r.tool, dict(r.when), r.action) for r in coder.rules] == [
        ("execute_command", {"command": "git status*"}, ag.RULE_ACTION_ALLOW),
        ("execute_command", {"command": "rm *"}, ag.RULE_ACTION_DENY),
        ("execute_command", {}, ag.RULE_ACTION_ASK),
    ]
    assert list(coder.approval_rules) == ["execute_command"]

    model_server.enqueue(
        command("git status", "c1"),
        command("rm -rf /", "c2"),  # denied: the model reads why and tries again...
        command("git push", "c3"),  # ...with something that needs a human
    )
    status = await client.turn(user_message("s1", "where are we?"))
    assert only(status, "tool_call").tool_call.requires_approval is False
    asked = await client.turn(tool_result("s1", "c1", "clean"))
    call = only(asked, "tool_call").tool_call
    assert (call.call_id, call.requires_approval) == ("c3", True)
    assert call.approval_reason == "execute_command matches approval rule 'execute_command'"
    refused = [m for m in model_server.requests[-1]["messages"] if m["role"] == "tool"][-1]
    assert refused["content"] == (  # an error result, as the model client sends those
        "ERROR: Tool call refused by the runtime: approval rule #2 "
        "('execute_command' when command='rm *') denies this call"
    )

    pending = await client.sessions.ListPendingApprovals(
        ses.ListPendingApprovalsRequest(session_id="s1")
    )
    (approval,) = pending.approvals
    assert approval.rule_index == 3
    assert (approval.rule.tool, dict(approval.rule.when), approval.rule.action) == (
        "execute_command",
        {},
        ag.RULE_ACTION_ASK,
    )


async def test_approve_always_is_kept_with_the_session_until_revoked(
    client: Client, model_server: FakeModelServer
) -> None:
    model_server.enqueue(
        command("git push origin main", "c1"),
        command("git push origin dev", "c2"),
        command("git push --force", "c3"),
    )
    await client.turn(user_message("s1", "push it"))
    await client.sessions.CreateSession(ses.CreateSessionRequest(session_id="s2"))
    listed = await client.sessions.ListSessions(ses.ListSessionsRequest())
    pending = {each.session_id: each.pending_approvals_count for each in listed.sessions}
    assert pending == {"s1": 1, "s2": 0}  # c1 waits (counted for the page in one read)
    always = decision("s1", "c1", rt.DECISION_APPROVE_ALWAYS)
    always.approval_decision.always_when["command"] = "git push origin *"
    approved = await client.turn(always)
    assert only(approved, "tool_call").tool_call.requires_approval is False

    session = (await client.sessions.GetSession(ses.GetSessionRequest(session_id="s1"))).session
    (grant,) = session.approval_grants
    assert (grant.tool_name, dict(grant.when), grant.call_id) == (
        "execute_command",
        {"command": "git push origin *"},
        "c1",
    )
    assert grant.turn_id == approved[0].turn_id
    # ListSessions shows each session's grants as GetSession does (one read for the page).
    listed = await client.sessions.ListSessions(ses.ListSessionsRequest())
    by_id = {listed_session.session_id: listed_session for listed_session in listed.sessions}
    assert list(by_id["s1"].approval_grants) == [grant]
    assert not by_id["s2"].approval_grants

    granted = await client.turn(tool_result("s1", "c1", "pushed"))
    assert only(granted, "tool_call").tool_call.requires_approval is False  # c2: granted

    await client.sessions.RevokeApprovalGrant(
        ses.RevokeApprovalGrantRequest(session_id="s1", grant_id=grant.grant_id)
    )
    session = (await client.sessions.GetSession(ses.GetSessionRequest(session_id="s1"))).session
    assert not session.approval_grants
    asked = await client.turn(tool_result("s1", "c2", "pushed too"))
    assert only(asked, "tool_call").tool_call.requires_approval is True  # c3: asked again

    for session_id, grant_id, reason in (
        ("s1", grant.grant_id, "APPROVAL_GRANT_NOT_FOUND"),  # revoked already
        ("s1", "grt_nope", "APPROVAL_GRANT_NOT_FOUND"),
        ("nope", grant.grant_id, "SESSION_NOT_FOUND"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.sessions.RevokeApprovalGrant(
                ses.RevokeApprovalGrantRequest(session_id=session_id, grant_id=grant_id)
            )
        error = rich_error(caught.value)
        assert error.code == grpc.StatusCode.NOT_FOUND
        assert error.error_info is not None and error.error_info.reason == reason


async def test_update_session_keeps_the_grants_it_lists_and_revokes_the_others(
    client: Client, model_server: FakeModelServer
) -> None:
    model_server.enqueue(
        command("git push origin main", "c1"),
        command("make test", "c2"),
        command("make lint", "c3"),
        command("git push origin dev", "c4"),
        command("make docs", "c5"),
    )

    async def approve_always(call_id: str, glob: str) -> None:
        always = decision("s1", call_id, rt.DECISION_APPROVE_ALWAYS)
        always.approval_decision.always_when["command"] = glob
        await client.turn(always)

    async def grants() -> list[ses.ApprovalGrant]:
        got = await client.sessions.GetSession(ses.GetSessionRequest(session_id="s1"))
        return list(got.session.approval_grants)

    async def keep(listed: list[ses.ApprovalGrant], paths: list[str] | None) -> ses.Session:
        session = ses.Session(session_id="s1", approval_grants=listed)
        mask = None if paths is None else field_mask_pb2.FieldMask(paths=paths)
        request = ses.UpdateSessionRequest(session=session, update_mask=mask)
        response: ses.UpdateSessionResponse = await client.sessions.UpdateSession(request)
        return response.session

    await client.turn(user_message("s1", "ship it"))
    await approve_always("c1", "git push origin *")
    await client.turn(tool_result("s1", "c1", "pushed"))  # c2 asks
    await approve_always("c2", "make *")
    push, make = await grants()

    # A grant not in force, one without an id (grants are made only by APPROVE_ALWAYS) or
    # one changed: INVALID_ARGUMENT naming it, and nothing is revoked.
    for listed, field, says in (
        ([make, ses.ApprovalGrant(grant_id="grt_nope")], "[1].grant_id", "no grant 'grt_nope'"),
        ([ses.ApprovalGrant(tool_name="execute_command")], "[0].grant_id", "only by an APPROVE"),
        (
            [ses.ApprovalGrant(grant_id=make.grant_id, when={"command": "*"})],
            "[0]",
            "cannot be changed",
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await keep(listed, ["approval_grants"])
        error = rich_error(caught.value)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        ((violated, description),) = error.field_violations
        assert violated == f"session.approval_grants{field}" and says in description
    assert await grants() == [push, make]

    # Listed as GetSession shows it (or by its id alone): kept; left out: revoked.
    updated = await keep([make], ["approval_grants"])
    assert list(updated.approval_grants) == [make]
    assert await grants() == [make]
    asked = await client.turn(tool_result("s1", "c2", "tested"))  # c3, make lint: granted
    assert only(asked, "tool_call").tool_call.requires_approval is False
    asked = await client.turn(tool_result("s1", "c3", "linted"))  # c4, git push: asked again
    assert only(asked, "tool_call").tool_call.requires_approval is True
    # Without a mask only a populated list counts: an empty one changes nothing...
    await keep([ses.ApprovalGrant(grant_id=make.grant_id)], None)
    assert await keep([], None) == await keep([], ["title"])
    assert await grants() == [make]
    # ...and with the mask it revokes them all.
    assert not (await keep([], ["approval_grants"])).approval_grants
    await client.turn(decision("s1", "c4", rt.DECISION_APPROVE))
    asked = await client.turn(tool_result("s1", "c4", "pushed"))  # c5, make docs: asked
    assert only(asked, "tool_call").tool_call.requires_approval is True
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # the simple form: revoked already
        await client.sessions.RevokeApprovalGrant(
            ses.RevokeApprovalGrantRequest(session_id="s1", grant_id=make.grant_id)
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_an_edit_tells_the_model_what_the_human_changed(
    client: Client, model_server: FakeModelServer
) -> None:
    model_server.enqueue(command("git push --force", "c1"), text_answer("pushed safely"))
    await client.turn(user_message("s1", "push"))
    edited = decision(
        "s1", "c1", rt.DECISION_EDIT, feedback="never force", edited={"command": "git push"}
    )
    await client.turn(edited)
    await client.turn(tool_result("s1", "c1", "done"))
    (result,) = [m for m in model_server.requests[-1]["messages"] if m["role"] == "tool"]
    assert result["content"] == (
        "[Note from the runtime: a human changed the arguments of this call before it ran; "
        'it ran with {"command": "git push"} instead of the arguments asked for, '
        '{"command": "git push --force"}; the human who approved it said: never force]\n\ndone'
    )
