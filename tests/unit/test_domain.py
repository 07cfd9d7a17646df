from datetime import UTC, datetime

import pytest

from agent_runtime.application.pagination import (
    decode_position_token,
    encode_position_token,
    page_size,
)
from agent_runtime.domain.agents import ARCHITECT, ASK, CODER, DEBUG, AgentProfile, default_agents
from agent_runtime.domain.approval import ApprovalPolicy, RuleAction
from agent_runtime.domain.errors import InvalidInput
from agent_runtime.domain.model import ToolCallRecord, validate_session_id
from agent_runtime.domain.model_output import ModelResponse, RequestedToolCall
from agent_runtime.domain.response_processor import (
    FinalAnswer,
    InvalidAnswer,
    LLMResponseProcessor,
    RejectedToolCall,
    ToolCallDecision,
)
from agent_runtime.domain.routing import RoutingMethod, parse_routing_answer, route_by_keywords
from agent_runtime.domain.tool_filter import ToolFilterService
from agent_runtime.domain.tools import TOOL_CATALOGUE

NOW = datetime(2026, 1, 1, tzinfo=UTC)
READ_ONLY = AgentProfile("reader", "reads", "prompt", ("read_file", "list_files"))


VALID_ARGUMENTS = {
    "read_file": '{"path": "a.py"}',
    "write_file": '{"path": "a.py", "content": "x"}',
    "delete_file": '{"path": "a.py"}',
    "move_file": '{"source": "a.py", "destination": "b.py"}',
    "create_directory": '{"path": "src"}',
    "execute_command": '{"command": "ls"}',
    "list_files": '{"path": "."}',
}


def call(name: str, args: str | None = None, call_id: str = "c1") -> RequestedToolCall:
    return RequestedToolCall(
        call_id, name, VALID_ARGUMENTS.get(name, "{}") if args is None else args
    )


class TestLLMResponseProcessor:
    processor = LLMResponseProcessor()

    def test_text_answer_is_final(self) -> None:
        assert self.processor.process(ModelResponse("hello"), CODER) == FinalAnswer("hello")

    def test_empty_answer_without_tool_call_is_invalid(self) -> None:
        decision = self.processor.process(ModelResponse("  \n"), CODER)
        assert isinstance(decision, InvalidAnswer)
        assert decision.reason == "MODEL_EMPTY_ANSWER"

    def test_keeps_only_the_first_tool_call(self) -> None:
        response = ModelResponse(
            "", (call("read_file", '{"path": "a"}', "c1"), call("read_file", '{"path": "b"}', "c2"))
        )
        decision = self.processor.process(response, CODER)
        assert isinstance(decision, ToolCallDecision)
        assert decision.call == ToolCallRecord("c1", "read_file", {"path": "a"})
        assert decision.dropped_calls == 1
        assert not decision.requires_approval

    @pytest.mark.parametrize(
        "tool", ["write_file", "delete_file", "move_file", "create_directory", "execute_command"]
    )
    def test_risky_tools_need_approval_by_default(self, tool: str) -> None:
        decision = self.processor.process(ModelResponse("", (call(tool),)), CODER)
        assert isinstance(decision, ToolCallDecision)
        assert decision.requires_approval
        assert tool in decision.approval_reason

    def test_tool_the_agent_may_not_use_is_refused(self) -> None:
        decision = self.processor.process(ModelResponse("", (call("write_file"),)), READ_ONLY)
        assert isinstance(decision, RejectedToolCall)
        assert "may not call tool 'write_file'" in decision.tool_error()

    def test_unknown_tool_is_refused(self) -> None:
        decision = self.processor.process(ModelResponse("", (call("rm_rf"),)), CODER)
        assert isinstance(decision, RejectedToolCall)

    @pytest.mark.parametrize(
        ("args", "problem"),
        [
            ('{"path": ', "not valid JSON"),
            ("[1, 2]", "not a JSON object"),
            ('"text"', "not a JSON object"),
            ("{}", "arguments: 'path' is a required property"),
            ('{"path": 3}', "arguments.path: 3 is not of type 'string'"),
            (
                '{"path": "a", "start_line": "x"}',
                "arguments.start_line: 'x' is not of type 'integer'",
            ),
            ('{"path": "a", "mode": "rw"}', "('mode' was unexpected)"),
        ],
    )
    def test_arguments_must_match_the_tool_schema(self, args: str, problem: str) -> None:
        decision = self.processor.process(ModelResponse("", (call("read_file", args),)), CODER)
        assert isinstance(decision, RejectedToolCall)
        assert problem in decision.tool_error()

    def test_arguments_the_model_client_refused_are_a_tool_error(self) -> None:
        refused = RequestedToolCall(
            "c1", "read_file", "", invalid_arguments="the arguments are nested too deep"
        )
        decision = self.processor.process(ModelResponse("", (refused,)), CODER)
        assert isinstance(decision, RejectedToolCall)
        assert decision.call == ToolCallRecord("c1", "read_file", {})
        assert "the arguments are nested too deep" in decision.tool_error()

    def test_arguments_too_deep_to_parse_are_a_tool_error(self) -> None:
        # The model client refuses them first; another LLMClient might not.
        deep = call("read_file", "[" * 100_000 + "]" * 100_000)
        decision = self.processor.process(ModelResponse("", (deep,)), CODER)
        assert isinstance(decision, RejectedToolCall)
        assert "nest too deeply" in decision.tool_error()

    def test_architect_may_write_markdown_only(self) -> None:
        md = call("write_file", '{"path": "docs/plan.md", "content": "x"}')
        py = call("write_file", '{"path": "src/app.py", "content": "x"}')
        assert isinstance(
            self.processor.process(ModelResponse("", (md,)), ARCHITECT), ToolCallDecision
        )
        refused = self.processor.process(ModelResponse("", (py,)), ARCHITECT)
        assert isinstance(refused, RejectedToolCall)
        assert "src/app.py" in refused.tool_error()

    def test_integral_floats_are_integers(self) -> None:
        args = '{"path": "a", "start_line": 3.0}'
        decision = self.processor.process(ModelResponse("", (call("read_file", args),)), CODER)
        assert isinstance(decision, ToolCallDecision)


def test_approval_policy_matches_globs() -> None:
    policy = ApprovalPolicy.asking(("execute_*", "write_file"))
    assert policy.decide("execute_command", {}).action is RuleAction.ASK
    assert policy.decide("write_file", {}).reason == "write_file matches approval rule 'write_file'"
    assert policy.decide("read_file", {}).action is RuleAction.ALLOW


def test_tool_filter_offers_only_allowed_tools_in_catalogue_order() -> None:
    tools = ToolFilterService().tools_for(READ_ONLY)
    assert [t.name for t in tools] == ["read_file", "list_files"]
    assert len(ToolFilterService().tools_for(CODER)) == len(TOOL_CATALOGUE)


def test_catalogue_schemas_name_their_required_arguments() -> None:
    for tool in TOOL_CATALOGUE.values():
        schema = tool.parameters
        assert schema["type"] == "object"
        assert set(schema["required"]) <= set(schema["properties"]), tool.name
    assert set(TOOL_CATALOGUE["search_in_code"].parameters["properties"]) == {
        "query",
        "path",
        "file_pattern",
        "case_sensitive",
        "regex",
        "max_results",
    }


def test_builtin_profiles_restrict_as_documented() -> None:
    assert not set(DEBUG.allowed_tools) & {"write_file", "delete_file", "move_file"}
    assert "execute_command" in DEBUG.allowed_tools
    assert not set(ASK.allowed_tools) & {"write_file", "execute_command", "delete_file"}
    assert set(CODER.allowed_tools) == set(TOOL_CATALOGUE)
    assert ARCHITECT.path_restrictions[0].allows("README.md")
    assert not ARCHITECT.path_restrictions[0].allows("main.py")


class TestRouting:
    agents = default_agents()

    def test_good_json_is_used(self) -> None:
        decision = parse_routing_answer(
            'Sure: {"agent": "debug", "confidence": 0.9, "reason": "a stack trace"}', self.agents
        )
        assert decision is not None
        assert (decision.agent, decision.confidence, decision.method) == (
            "debug",
            0.9,
            RoutingMethod.MODEL,
        )

    @pytest.mark.parametrize(
        "answer",
        [
            "no json here",
            '{"agent": "wizard"}',
            '{"agent": "orchestrator"}',
            "[1]",
            '{"agent": 3}',
            '{"agent": "debug"',
        ],
    )
    def test_unusable_answers_are_none(self, answer: str) -> None:
        assert parse_routing_answer(answer, self.agents) is None

    def test_a_reason_escaping_a_lone_surrogate_is_made_well_formed(self) -> None:
        # The answer's text is well-formed; decoding its JSON again makes the escape a lone
        # surrogate, which no store nor protobuf string takes.
        answer = '{"agent": "ask", "reason": "pick \\ud800 me, \\ud83d\\ude00"}'
        decision = parse_routing_answer(answer, self.agents)
        assert decision is not None
        assert decision.reason == "pick \ufffd me, \U0001f600"

    def test_keywords_then_fallback(self) -> None:
        assert (
            route_by_keywords("I get a traceback and the tests are failing", self.agents).agent
            == "debug"
        )
        assert route_by_keywords("please design the architecture", self.agents).agent == (
            "architect"
        )
        fallback = route_by_keywords("hello", self.agents)
        assert (fallback.agent, fallback.method) == ("coder", RoutingMethod.DEFAULT)


def test_unknown_agent_is_invalid_input() -> None:
    with pytest.raises(InvalidInput) as caught:
        default_agents().get("nobody")
    assert caught.value.reason == "UNKNOWN_AGENT"
    assert default_agents().get("").name == "coder"


@pytest.mark.parametrize("good", ["a", "ses_123", "Team.A:x-1", "x" * 128])
def test_valid_session_ids(good: str) -> None:
    validate_session_id(good)


@pytest.mark.parametrize("bad", ["", "-a", "a b", "x" * 129, "a/b", "é"])
def test_invalid_session_ids(bad: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_session_id(bad)
    assert caught.value.violations[0].field == "session_id"


def test_page_tokens_round_trip_and_reject_garbage() -> None:
    assert decode_position_token(encode_position_token(42)) == 42
    assert decode_position_token("") == 0
    for garbage in ("!!!", "bm9wZQ", encode_position_token(1)[:-1] + "@"):
        with pytest.raises(InvalidInput):
            decode_position_token(garbage)
    assert page_size(0) == 100
    assert page_size(5000) == 1000
    with pytest.raises(InvalidInput):
        page_size(-1)
