"""What a human's decision leaves for the model and for the rest of the session: EDIT and
REJECT feedback always reach the model, an EDIT is noted with the arguments before and after,
and APPROVE_ALWAYS approves later calls its rule matches."""

from __future__ import annotations

from datetime import timedelta

import pytest

from agent_runtime.application.commands import DecideApproval, SubmitToolResult
from agent_runtime.domain import chunks
from agent_runtime.domain.approval import ApprovalGrant, ApprovalStatus, ApprovalVerdict
from agent_runtime.domain.errors import InvalidInput
from agent_runtime.domain.model import Role, StopReason
from agent_runtime.domain.tenants import DEFAULT_TENANT
from agent_runtime.infrastructure.agents_file import parse_agents
from tests.fakes import _FakeApprovals, text_answer
from tests.unit.test_conversation import Conversation, body_of, stop_of, tool_answer

WRITE = '{"path": "a.py", "content": "old"}'


def decide(call_id: str, verdict: ApprovalVerdict, **fields: object) -> DecideApproval:
    return DecideApproval("s1", call_id, verdict, tenant_id=DEFAULT_TENANT, **fields)  # type: ignore[arg-type]


def result(call_id: str, content: str) -> SubmitToolResult:
    return SubmitToolResult("s1", call_id, content, tenant_id=DEFAULT_TENANT)


def last_tool_message(convo: Conversation) -> str:
    """The tool message of the last request the model got."""
    sent = convo.model.requests[-1].history
    return [m.content for m in sent if m.role is Role.TOOL][-1]


async def test_an_edit_is_noted_for_the_model_with_both_arguments_and_the_feedback() -> None:
    convo = Conversation(tool_answer("write_file", WRITE, "call_w"), text_answer("ok"))
    await convo.say("write a.py")
    edited = await convo.send(
        decide(
            "call_w",
            ApprovalVerdict.EDIT,
            edited_arguments={"path": "b.py", "content": "new"},
            feedback="b.py is the right file",
        )
    )
    assert body_of(edited, chunks.ToolCall).arguments == {"path": "b.py", "content": "new"}
    await convo.send(result("call_w", "wrote 3 bytes"))

    seen = last_tool_message(convo)
    assert seen == (
        "[Note from the runtime: a human changed the arguments of this call before it ran; "
        'it ran with {"content": "new", "path": "b.py"} instead of the arguments asked for, '
        '{"content": "old", "path": "a.py"}; the human who approved it said: b.py is the '
        "right file]\n\nwrote 3 bytes"
    )
    convo.assert_history_valid()


async def test_an_edit_into_a_call_a_rule_denies_is_refused_and_the_approval_stays_open() -> None:
    rules = """
[agents.coder]
approval_rules = [{tool = "execute_command", when.command = "rm *", action = "deny"}, "*"]
"""
    convo = Conversation(
        tool_answer("execute_command", '{"command": "ls"}', "call_x"),
        agents=parse_agents(rules),
    )
    await convo.say("list the files")
    with pytest.raises(InvalidInput) as refused:
        await convo.send(
            decide("call_x", ApprovalVerdict.EDIT, edited_arguments={"command": "rm -rf /"})
        )
    assert refused.value.reason == "INVALID_TOOL_ARGUMENTS"
    assert [(v.field, v.description) for v in refused.value.violations] == [
        (
            "approval_decision.edited_arguments",
            "approval rule #1 ('execute_command' when command='rm *') denies this call",
        )
    ]
    assert convo.status_of("call_x") is ApprovalStatus.PENDING
    # An edit the rules only ask about is the human's to make.
    edited = await convo.send(
        decide("call_x", ApprovalVerdict.EDIT, edited_arguments={"command": "ls -a"})
    )
    assert body_of(edited, chunks.ToolCall).arguments == {"command": "ls -a"}


async def test_approve_feedback_reaches_the_model_and_a_plain_approve_adds_nothing() -> None:
    convo = Conversation(
        tool_answer("write_file", WRITE, "call_1"),
        tool_answer("write_file", WRITE, "call_2"),
        text_answer("done"),
    )
    await convo.say("write twice")
    await convo.send(decide("call_1", ApprovalVerdict.APPROVE, feedback="careful"))
    await convo.send(result("call_1", "ok 1"))
    assert last_tool_message(convo) == (
        "[Note from the runtime: the human who approved it said: careful]\n\nok 1"
    )
    await convo.send(decide("call_2", ApprovalVerdict.APPROVE))
    await convo.send(result("call_2", "ok 2"))
    assert last_tool_message(convo) == "ok 2"


async def test_reject_feedback_reaches_the_model_even_after_the_approval_expired() -> None:
    convo = Conversation(
        tool_answer("write_file", WRITE, "call_w"),
        text_answer("understood"),
        approval_ttl_seconds=60,
    )
    await convo.say("write a.py")
    convo.clock.now += timedelta(minutes=5)
    await convo.send(decide("call_w", ApprovalVerdict.REJECT, feedback="use the other file"))
    assert convo.status_of("call_w") is ApprovalStatus.EXPIRED
    assert last_tool_message(convo) == (
        "not executed: the approval expired before anyone decided. Feedback: use the other file"
    )


async def test_an_edited_call_superseded_by_a_new_message_still_tells_the_model() -> None:
    convo = Conversation(tool_answer("write_file", WRITE, "call_w"), text_answer("moving on"))
    await convo.say("write a.py")
    await convo.send(
        decide("call_w", ApprovalVerdict.EDIT, edited_arguments={"path": "c.py", "content": "x"})
    )
    await convo.say("never mind")
    assert last_tool_message(convo).startswith(
        "[Note from the runtime: a human changed the arguments"
    )
    assert last_tool_message(convo).endswith("not executed: superseded by a new message")


async def test_approve_always_approves_later_calls_its_rule_matches_and_no_others() -> None:
    convo = Conversation(
        tool_answer("execute_command", '{"command": "make test"}', "call_1"),
        tool_answer("execute_command", '{"command": "make lint"}', "call_2"),
        tool_answer("execute_command", '{"command": "rm -rf build"}', "call_3"),
    )
    await convo.say("check the build")
    approved = await convo.send(
        decide("call_1", ApprovalVerdict.APPROVE_ALWAYS, always_when={"command": "make *"})
    )
    assert body_of(approved, chunks.ToolCall).requires_approval is False
    assert convo.status_of("call_1") is ApprovalStatus.APPROVED_ALWAYS
    (grant,) = convo.uows.db.grants
    assert (grant.tool_name, grant.when, grant.call_id) == (
        "execute_command",
        (("command", "make *"),),
        "call_1",
    )

    second = await convo.send(result("call_1", "tests pass"))
    assert stop_of(second) is StopReason.TOOL_CALL  # make lint: run at once, no approval
    assert body_of(second, chunks.ToolCall).requires_approval is False
    third = await convo.send(result("call_2", "lint clean"))
    assert stop_of(third) is StopReason.AWAITING_APPROVAL  # rm: not what was granted
    assert "call_2" not in {a.call_id for a in convo.uows.db.approvals.values()}


async def test_approve_always_without_a_rule_approves_every_later_call_to_the_tool() -> None:
    convo = Conversation(
        tool_answer("write_file", WRITE, "call_1"),
        tool_answer("write_file", '{"path": "z.py", "content": "z"}', "call_2"),
        tool_answer("delete_file", '{"path": "z.py"}', "call_3"),
    )
    await convo.say("write")
    await convo.send(decide("call_1", ApprovalVerdict.APPROVE_ALWAYS))
    second = await convo.send(result("call_1", "ok"))
    assert body_of(second, chunks.ToolCall).requires_approval is False
    third = await convo.send(result("call_2", "ok"))
    assert body_of(third, chunks.ToolCall).requires_approval is True  # another tool


@pytest.mark.parametrize(
    ("verdict", "always_when", "reason"),
    [
        (ApprovalVerdict.APPROVE_ALWAYS, {"command": "git *"}, "INVALID_GRANT_RULE"),
        (ApprovalVerdict.APPROVE_ALWAYS, {"cwd": "*"}, "INVALID_GRANT_RULE"),  # not given
        (ApprovalVerdict.APPROVE, {"command": "make *"}, "INVALID_INPUT"),
        (ApprovalVerdict.APPROVE_ALWAYS, {"command": ""}, "INVALID_INPUT"),
    ],
)
async def test_a_rule_that_does_not_fit_the_call_is_refused_and_nothing_is_granted(
    verdict: ApprovalVerdict, always_when: dict[str, str], reason: str
) -> None:
    convo = Conversation(tool_answer("execute_command", '{"command": "make test"}', "call_1"))
    await convo.say("build")
    with pytest.raises(InvalidInput) as refused:
        await convo.send(decide("call_1", verdict, always_when=always_when))
    assert refused.value.reason == reason
    assert [v.field for v in refused.value.violations] == ["approval_decision.always_when"]
    assert convo.status_of("call_1") is ApprovalStatus.PENDING
    assert convo.uows.db.grants == []


async def test_grants_are_read_only_for_an_answer_with_a_tool_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reads: list[str] = []
    read_grants = _FakeApprovals.grants

    async def counted(self: _FakeApprovals, session_id: str) -> list[ApprovalGrant]:
        reads.append(session_id)
        return await read_grants(self, session_id)

    monkeypatch.setattr(_FakeApprovals, "grants", counted)
    convo = Conversation(
        text_answer("hello"),
        text_answer("again"),
        tool_answer("execute_command", '{"command": "make test"}', "call_1"),
    )
    await convo.say("hi")  # a new session: it has no grants, nothing to read
    await convo.say("and now?")
    assert reads == []
    third = await convo.say("build it")
    assert stop_of(third) is StopReason.AWAITING_APPROVAL
    assert reads == ["s1"]
