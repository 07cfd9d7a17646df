"""Approval rules as a table: the agents file's rules, a call, the session's grants -> what
the policy decides and which rule decided it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from agent_runtime.domain.agents import CODER
from agent_runtime.domain.approval import (
    ApprovalGrant,
    RuleAction,
    normalise_workspace_path,
)
from agent_runtime.domain.model_output import ModelResponse, RequestedToolCall
from agent_runtime.domain.response_processor import (
    LLMResponseProcessor,
    RejectedToolCall,
    ToolCallDecision,
)
from agent_runtime.domain.tool_filter import ToolFilterService
from agent_runtime.domain.tools import declared_tool
from agent_runtime.infrastructure.agents_file import AgentsFileError, parse_agents

NOW = datetime(2026, 5, 1, tzinfo=UTC)

RULES = """
[agents.coder]
approval_rules = [
  {tool = "execute_command", when.command = "git status*", action = "allow"},
  {tool = "execute_command", when.command = "git diff*", when.cwd = "src*", action = "allow"},
  {tool = "execute_command", when.command = "rm *", action = "deny"},
  {tool = "write_file", when.path = "docs/*", action = "allow"},
  {tool = "write_file", when.path = ".env*", action = "deny"},
  {tool = "delete_file", action = "deny"},
  "execute_command",
  "write_file",
  {tool = "move_file", when.destination = "archive/*"},
]
"""
POLICY = parse_agents(RULES).get("coder").approval_policy
PATHS = ToolFilterService()


def grant(tool: str, **when: str) -> ApprovalGrant:
    return ApprovalGrant(f"grt-{tool}", "s1", tool, tuple(when.items()), NOW)


# (tool, arguments, grants, expected action, the 1-based rule that decided (0: none))
CASES: list[tuple[str, dict[str, Any], list[ApprovalGrant], RuleAction, int]] = [
    ("execute_command", {"command": "git status"}, [], RuleAction.ALLOW, 1),
    ("execute_command", {"command": "git status --short"}, [], RuleAction.ALLOW, 1),
    ("execute_command", {"command": " git status"}, [], RuleAction.ASK, 7),  # globs are exact
    ("execute_command", {"command": "git push"}, [], RuleAction.ASK, 7),
    ("execute_command", {"command": "git diff", "cwd": "src/app"}, [], RuleAction.ALLOW, 2),
    # Every `when` of a rule must match: no cwd, or a cwd elsewhere, falls through.
    ("execute_command", {"command": "git diff"}, [], RuleAction.ASK, 7),
    ("execute_command", {"command": "git diff", "cwd": "tests"}, [], RuleAction.ASK, 7),
    # A path argument is matched as the workspace path it names.
    ("execute_command", {"command": "git diff", "cwd": "./src"}, [], RuleAction.ALLOW, 2),
    ("execute_command", {"command": "git diff", "cwd": "x/../src"}, [], RuleAction.ALLOW, 2),
    ("execute_command", {"command": "git diff", "cwd": "../src"}, [], RuleAction.ASK, 7),
    ("execute_command", {"command": "rm -rf build"}, [], RuleAction.DENY, 3),
    ("execute_command", {"command": 42}, [], RuleAction.ASK, 7),  # not a string: no match
    ("write_file", {"path": "docs/a.md", "content": ""}, [], RuleAction.ALLOW, 4),
    ("write_file", {"path": "docs/deep/a.md", "content": ""}, [], RuleAction.ALLOW, 4),
    ("write_file", {"path": "./docs/a.md", "content": ""}, [], RuleAction.ALLOW, 4),
    ("write_file", {"path": "docs\\a.md", "content": ""}, [], RuleAction.ALLOW, 4),
    # Climbing out and back in, or an absolute path, is not the workspace's docs/.
    ("write_file", {"path": "docs/../../docs/a.md", "content": ""}, [], RuleAction.ASK, 8),
    ("write_file", {"path": "/etc/docs/a.md", "content": ""}, [], RuleAction.ASK, 8),
    ("write_file", {"path": "src/../docs/a.md", "content": ""}, [], RuleAction.ALLOW, 4),
    ("write_file", {"path": ".env", "content": ""}, [], RuleAction.DENY, 5),
    ("write_file", {"path": "sub/../.env.local", "content": ""}, [], RuleAction.DENY, 5),
    ("write_file", {"path": "src/a.py", "content": ""}, [], RuleAction.ASK, 8),
    ("delete_file", {"path": "docs/a.md"}, [], RuleAction.DENY, 6),
    ("move_file", {"source": "a", "destination": "archive/a"}, [], RuleAction.ASK, 9),
    ("move_file", {"source": "a", "destination": "b"}, [], RuleAction.ALLOW, 0),
    ("read_file", {"path": "anything"}, [], RuleAction.ALLOW, 0),
    # Grants allow what a rule asks about, for their tool and arguments only...
    ("execute_command", {"command": "make"}, [grant("execute_command")], RuleAction.ALLOW, 7),
    (
        "execute_command",
        {"command": "make test"},
        [grant("execute_command", command="make*")],
        RuleAction.ALLOW,
        7,
    ),
    (
        "execute_command",
        {"command": "npm test"},
        [grant("execute_command", command="make*")],
        RuleAction.ASK,
        7,
    ),
    ("write_file", {"path": "a.py", "content": ""}, [grant("execute_command")], RuleAction.ASK, 8),
    (
        "write_file",
        {"path": "./src/a.py", "content": ""},
        [grant("write_file", path="src/*")],
        RuleAction.ALLOW,
        8,
    ),
    # ...and never what a rule denies.
    ("execute_command", {"command": "rm -rf /"}, [grant("execute_command")], RuleAction.DENY, 3),
    ("write_file", {"path": ".env", "content": ""}, [grant("write_file")], RuleAction.DENY, 5),
]


@pytest.mark.parametrize(("tool", "arguments", "grants", "action", "rule_index"), CASES)
def test_the_first_matching_rule_decides(
    tool: str,
    arguments: dict[str, Any],
    grants: list[ApprovalGrant],
    action: RuleAction,
    rule_index: int,
) -> None:
    outcome = POLICY.decide(
        tool, arguments, path_arguments=PATHS.path_arguments(tool), grants=grants
    )
    assert (outcome.action, outcome.rule_index) == (action, rule_index)
    if rule_index:
        assert outcome.rule is POLICY.rules[rule_index - 1]
    assert bool(outcome.grant_id) == (action is RuleAction.ALLOW and bool(grants))


def test_a_revoked_grant_allows_nothing() -> None:
    revoked = ApprovalGrant("grt-1", "s1", "execute_command", (), NOW, revoked_at=NOW)
    outcome = POLICY.decide("execute_command", {"command": "make"}, grants=[revoked])
    assert outcome.action is RuleAction.ASK


@pytest.mark.parametrize(
    ("path", "normal"),
    [
        ("a.py", "a.py"),
        ("./a.py", "a.py"),
        ("src//a.py", "src/a.py"),
        ("src/./x/../a.py", "src/a.py"),
        ("", "."),
        (".", "."),
        ("src\\a.py", "src/a.py"),
        ("..", None),
        ("../a.py", None),
        ("src/../../a.py", None),
        ("/etc/passwd", None),
        ("C:\\Windows", None),
    ],
)
def test_paths_are_normalised_inside_the_workspace(path: str, normal: str | None) -> None:
    assert normalise_workspace_path(path) == normal


def _call(tool: str, arguments: str) -> ModelResponse:
    return ModelResponse("", (RequestedToolCall("call_1", tool, arguments),))


def test_the_processor_asks_names_the_rule_and_refuses_what_a_rule_denies() -> None:
    coder = parse_agents(RULES).get("coder")
    processor = LLMResponseProcessor()
    asked = processor.process(_call("execute_command", '{"command": "git push"}'), coder)
    assert isinstance(asked, ToolCallDecision) and asked.requires_approval
    assert asked.approval.rule_index == 7
    assert asked.approval_reason == "execute_command matches approval rule 'execute_command'"

    allowed = processor.process(_call("execute_command", '{"command": "git status"}'), coder)
    assert isinstance(allowed, ToolCallDecision) and not allowed.requires_approval
    assert allowed.approval_reason == ""

    denied = processor.process(_call("execute_command", '{"command": "rm -rf ."}'), coder)
    assert isinstance(denied, RejectedToolCall)
    assert denied.tool_error() == (
        "Tool call refused by the runtime: approval rule #3 "
        "('execute_command' when command='rm *') denies this call"
    )


DECLARED_RULES = """
[agents.coder]
approval_rules = [
  {tool = "ide_write", when.path = "docs/*", action = "allow"},
  {tool = "ide_move", when.destination = "archive/*", action = "deny"},
  "ide_*",
]
[[agents.coder.path_restrictions]]
tools = ["ide_write"]
allowed_path_regex = "[.]md$"
"""
IDE_WRITE = declared_tool(
    "ide_write",
    "Write a file in the IDE",
    {"type": "object", "properties": {"path": {}}, "required": ["path"]},  # any JSON value
)
IDE_MOVE = declared_tool("ide_move", "Move a file in the IDE", {"type": "object"})


@pytest.mark.parametrize(
    ("tool", "arguments", "decided"),
    [
        ("ide_write", {"path": "docs/a.md"}, "allowed"),
        ("ide_write", {"path": "./docs/deep/a.md"}, "allowed"),
        ("ide_write", {"path": "docs\\a.md"}, "allowed"),
        ("ide_write", {"path": "src/../docs/a.md"}, "allowed"),
        # As for a built-in tool: a path is matched as the workspace path it names...
        ("ide_write", {"path": "docs/../src/notes.md"}, "asked"),
        # ...one that leaves the workspace, or is not a string, matches no `when` glob...
        ("ide_write", {"path": "docs/../../docs/a.md"}, "asked"),
        ("ide_write", {"path": "/home/me/docs/a.md"}, "asked"),
        ("ide_write", {"path": ["docs/a.md"]}, "asked"),
        # ...and the agent's path restrictions apply to it.
        ("ide_write", {"path": "docs/a.py"}, "refused"),
        ("ide_move", {"source": "a", "destination": "./archive/a"}, "refused"),
        ("ide_move", {"source": "a", "destination": "archive/../a"}, "asked"),
    ],
)
def test_a_declared_tools_path_arguments_are_matched_as_a_built_in_tools_are(
    tool: str, arguments: dict[str, Any], decided: str
) -> None:
    coder = parse_agents(DECLARED_RULES).get("coder")
    call = _call(tool, json.dumps(arguments))
    decision = LLMResponseProcessor().process(call, coder, (IDE_WRITE, IDE_MOVE))
    match decision:
        case ToolCallDecision(requires_approval=True):
            assert decided == "asked"
        case ToolCallDecision():
            assert decided == "allowed"
        case _:
            assert isinstance(decision, RejectedToolCall) and decided == "refused", decision


def test_the_builtin_default_rules_ask_for_writes_and_commands() -> None:
    policy = CODER.approval_policy
    for tool in ("write_file", "delete_file", "move_file", "create_directory", "execute_command"):
        assert policy.decide(tool, {}).action is RuleAction.ASK, tool
    for tool in ("read_file", "list_files", "search_in_code"):
        assert policy.decide(tool, {}).action is RuleAction.ALLOW, tool


@pytest.mark.parametrize(
    ("rules", "problem"),
    [
        ('[{tool = "x", action = "maybe"}]', "action must be one of allow, ask, deny"),
        ('[{action = "ask"}]', "needs tool ="),
        ('[{tool = "x", when.command = 3}]', "when must map argument names to globs"),
        ('[{tool = "x", if = "y"}]', "unknown setting 'if'"),
        ("[3]", "must be a tool glob or a table"),
        ('"execute_command"', "must be a list"),
    ],
)
def test_a_bad_rule_stops_start_up_with_its_line(rules: str, problem: str) -> None:
    with pytest.raises(AgentsFileError, match=problem) as caught:
        parse_agents(f"[agents.coder]\n\napproval_rules = {rules}\n", "agents.toml")
    assert "agents.toml:3" in str(caught.value)


def test_approval_defaults_take_rule_tables_too() -> None:
    catalogue = parse_agents(
        '[approval]\nrequire = [{tool = "execute_command", when.command = "ls*", '
        'action = "allow"}, "execute_command"]\n'
    )
    policy = catalogue.get("debug").approval_policy
    assert policy.decide("execute_command", {"command": "ls -la"}).action is RuleAction.ALLOW
    assert policy.decide("execute_command", {"command": "make"}).action is RuleAction.ASK
    assert policy.require_approval == ("execute_command",)
