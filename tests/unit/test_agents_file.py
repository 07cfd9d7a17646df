from pathlib import Path

import pytest

from agent_runtime.domain.agents import AgentProfile
from agent_runtime.domain.approval import RuleAction
from agent_runtime.domain.generation import GenerationConfig, ToolChoice
from agent_runtime.infrastructure.agents_file import AgentsFileError, load_agents, parse_agents

GOOD = """
default_agent = "reviewer"

[approval]
require = ["write_file", "execute_*"]

[agents.reviewer]
description = "Reviews code"
system_prompt = "You review code."
allowed_tools = ["read_file", "write_file"]
routing_keywords = ["review"]

[[agents.reviewer.path_restrictions]]
tools = ["write_file"]
allowed_path_regex = "\\\\.md$"
description = "reviews are Markdown"

[agents.coder]
approval_rules = []
"""


def asks(agent: AgentProfile, tool: str) -> bool:
    return agent.approval_policy.decide(tool, {}).action is RuleAction.ASK


def test_a_file_extends_and_adjusts_the_builtin_agents() -> None:
    catalogue = parse_agents(GOOD)
    assert catalogue.default_agent == "reviewer"
    reviewer = catalogue.get("reviewer")
    assert reviewer.allowed_tools == ("read_file", "write_file")
    assert asks(reviewer, "write_file")
    assert reviewer.path_restrictions[0].allows("notes.md")
    assert not reviewer.path_restrictions[0].allows("main.py")
    coder = catalogue.get("coder")
    assert not asks(coder, "execute_command")  # rules emptied
    assert "expert software engineer" in coder.system_prompt  # the rest kept
    assert asks(catalogue.get("debug"), "execute_command")  # [approval]
    assert not asks(catalogue.get("debug"), "delete_file")


def test_replace_builtin_keeps_only_the_files_agents() -> None:
    catalogue = parse_agents(
        GOOD.replace(
            'default_agent = "reviewer"', 'default_agent = "reviewer"\nreplace_builtin = true'
        ).replace("[agents.coder]\napproval_rules = []\n", "")
    )
    assert set(catalogue.profiles) == {"reviewer"}


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        (
            '[agents.x]\ndescription = "d"\nsystem_prompt = "p"\nallowed_tools = ["rm"]\n',
            4,
            "unknown tool 'rm'",
        ),
        ('[agents.coder]\nallowed_tool = ["read_file"]\n', 2, "unknown setting 'allowed_tool'"),
        ('[agents.x]\ndescription = "d"\n', 1, "new agent 'x' needs 'system_prompt'"),
        ('default_agent = "nobody"\n', 1, "default_agent 'nobody' is not a defined agent"),
        (
            '[agents.coder]\n\n[[agents.coder.path_restrictions]]\nallowed_path_regex = "("\n',
            4,
            "not a valid regular expression",
        ),
        ("[agents.coder\n", 1, "not valid TOML"),
        ("[agents.coder]\nmodel = 3\n", 2, "model must be a string"),
        (f'[agents.coder]\nmodel = "{"m" * 257}"\n', 2, "model must be at most 256 characters"),
        ('[agents.coder]\nmodel = "gpt\\u0000"\n', 2, "model must not contain control"),
        (
            "[agents.coder]\n\n[agents.coder.generation]\ntemperature = 3.5\n",
            4,
            "generation.temperature: must be between 0 and 2",
        ),
        (
            "[agents.coder]\n\n[agents.coder.generation]\ntop_k = 3\n",
            4,
            "unknown setting 'top_k'",
        ),
        (
            '[agents.coder]\n\n[agents.coder.generation]\ntool_choice = "always"\n',
            4,
            "tool_choice must be",
        ),
        ("[agents.coder]\ncontext_window_tokens = 0\n", 2, "positive whole number"),
        ('[agents.coder]\nstore_reasoning = "yes"\n', 2, "store_reasoning must be true or false"),
    ],
)
def test_problems_name_the_line(text: str, line: int, problem: str) -> None:
    with pytest.raises(AgentsFileError) as caught:
        parse_agents(text, "agents.toml")
    message = str(caught.value)
    assert problem in message
    assert f"agents.toml:{line}" in message or f"line {line}" in message


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AgentsFileError, match="cannot read the agents file"):
        load_agents(tmp_path / "nope.toml")


def test_an_agent_sets_its_model_controls() -> None:
    catalogue = parse_agents(
        """
[agents.coder]
client_tools = ["ide_*"]
context_window_tokens = 8000
stream_reasoning = false
store_reasoning = true

[agents.coder.generation]
temperature = 0
max_output_tokens = 512
stop = ["<END>"]
seed = 7
reasoning_effort = "low"
tool_choice = { tool = "read_file" }
"""
    )
    coder = catalogue.get("coder")
    assert coder.client_tools == ("ide_*",)
    assert coder.may_use_declared("ide_lint") and not coder.may_use_declared("lint")
    assert (coder.context_window_tokens, coder.stream_reasoning, coder.store_reasoning) == (
        8000,
        False,
        True,
    )
    assert coder.generation == GenerationConfig(
        temperature=0.0,
        max_output_tokens=512,
        stop=("<END>",),
        seed=7,
        reasoning_effort="low",
        tool_choice=ToolChoice.named("read_file"),
    )
    assert catalogue.get("ask").generation.is_empty  # the others keep their defaults
