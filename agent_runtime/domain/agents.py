"""Agent profiles: who the model is told to be, what it may call, and where it may write."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from agent_runtime.domain.approval import ApprovalPolicy
from agent_runtime.domain.errors import InvalidInput
from agent_runtime.domain.generation import GenerationConfig
from agent_runtime.domain.tools import TOOL_CATALOGUE

WRITE_TOOLS = ("write_file", "delete_file", "move_file", "create_directory")
READ_TOOLS = ("read_file", "list_files", "search_in_code")
CONVERSATION_TOOLS = ("switch_mode", "attempt_completion", "ask_followup_question")

# Introduces a session's instructions in the system prompt.
CLIENT_INSTRUCTIONS_HEADING = "## Instructions from the client application"

_SHARED_RULES = (
    "Call at most one tool at a time and wait for its result. "
    "When a tool call is rejected, adapt instead of repeating it."
)


@dataclass(frozen=True, slots=True)
class PathRestriction:
    """A path argument of a matching tool must match `allowed_path_regex` (re.search)."""

    tools: tuple[str, ...]
    allowed_path_regex: str
    description: str = ""

    def applies_to(self, tool_name: str) -> bool:
        return any(fnmatchcase(tool_name, pattern) for pattern in self.tools)

    def allows(self, path: str) -> bool:
        return re.search(self.allowed_path_regex, path) is not None


@dataclass(frozen=True, slots=True)
class AgentProfile:
    name: str
    description: str
    system_prompt: str
    allowed_tools: tuple[str, ...]
    approval_policy: ApprovalPolicy = field(default_factory=ApprovalPolicy)
    path_restrictions: tuple[PathRestriction, ...] = ()
    # Optional model override for this agent; empty means the runtime's default model.
    model: str = ""
    # Keywords that route a first message to this agent when the orchestrator's model call
    # gives nothing usable.
    routing_keywords: tuple[str, ...] = ()
    # True for the orchestrator: it routes the first message instead of answering it.
    routes: bool = False
    # Glob patterns over the names of tools a client declares: the ones this agent is offered
    # (its built-in ones are allowed_tools).
    client_tools: tuple[str, ...] = ("*",)
    # Generation defaults; a session's and a request's own settings win over them.
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    # Tokens of context the model is sent at most; None: the runtime's default.
    context_window_tokens: int | None = None
    # The model's reasoning: streamed to the client (ReasoningDelta), and stored with the
    # answer. Never sent back to the model either way.
    stream_reasoning: bool = True
    store_reasoning: bool = False

    def prompt_with(self, instructions: str) -> str:
        """The system prompt, with a client's instructions appended under a heading that
        says where they come from."""
        if not instructions:
            return self.system_prompt
        section = f"{CLIENT_INSTRUCTIONS_HEADING}\n\n{instructions}"
        return f"{self.system_prompt}\n\n{section}" if self.system_prompt else section

    def may_use_declared(self, tool_name: str) -> bool:
        """Whether a client-declared tool of this name is offered to this agent."""
        return any(fnmatchcase(tool_name, pattern) for pattern in self.client_tools)


CODER = AgentProfile(
    name="coder",
    description="General coding agent: reads, writes and runs code with every tool.",
    system_prompt=(
        "You are an expert software engineer working in the user's repository through tools. "
        "Read before you write, make small focused changes, run the tests when you can, and "
        "explain what you changed. " + _SHARED_RULES
    ),
    allowed_tools=tuple(TOOL_CATALOGUE),
    routing_keywords=(
        "implement",
        "write",
        "add",
        "fix",
        "refactor",
        "create",
        "build",
        "code",
        "function",
        "feature",
    ),
)

ARCHITECT = AgentProfile(
    name="architect",
    description="Plans and documents designs; may write Markdown files only.",
    system_prompt=(
        "You are a software architect. Study the code, then propose designs, plans and "
        "trade-offs. You may write only Markdown (*.md) documents. " + _SHARED_RULES
    ),
    allowed_tools=(*READ_TOOLS, *WRITE_TOOLS, *CONVERSATION_TOOLS),
    path_restrictions=(
        PathRestriction(WRITE_TOOLS, r"\.md$", "the architect may write only *.md files"),
    ),
    routing_keywords=(
        "design",
        "architecture",
        "plan",
        "diagram",
        "document",
        "adr",
        "structure",
        "proposal",
    ),
)

DEBUG = AgentProfile(
    name="debug",
    description="Investigates failures: reads code and runs commands, never writes files.",
    system_prompt=(
        "You are a debugging specialist. Reproduce the problem, read the relevant code and "
        "logs, form hypotheses and test them with commands. Do not modify files; report the "
        "cause and the fix you recommend. " + _SHARED_RULES
    ),
    allowed_tools=(*READ_TOOLS, "execute_command", *CONVERSATION_TOOLS),
    routing_keywords=(
        "bug",
        "error",
        "exception",
        "traceback",
        "crash",
        "failing",
        "fails",
        "debug",
        "stack trace",
        "broken",
    ),
)

ASK = AgentProfile(
    name="ask",
    description="Answers questions about the code; read-only.",
    system_prompt=(
        "You answer questions about the user's code base. Read what you need and explain "
        "clearly, with references to files and lines. You cannot change anything. " + _SHARED_RULES
    ),
    allowed_tools=(*READ_TOOLS, *CONVERSATION_TOOLS),
    routing_keywords=("explain", "what", "why", "how does", "where", "question", "understand"),
)

ORCHESTRATOR = AgentProfile(
    name="orchestrator",
    description="Routes a session's first message to the best specialist agent.",
    system_prompt=(
        "You route a software engineering request to the agent best suited to handle it. "
        "Answer with one JSON object and nothing else: "
        '{"agent": "<name>", "confidence": <0..1>, "reason": "<short reason>"}.'
    ),
    allowed_tools=(),
    routes=True,
    client_tools=(),
)

BUILTIN_AGENTS = (CODER, ARCHITECT, DEBUG, ASK, ORCHESTRATOR)


@dataclass(frozen=True, slots=True)
class AgentCatalogue:
    profiles: dict[str, AgentProfile]
    default_agent: str

    def get(self, name: str) -> AgentProfile:
        profile = self.profiles.get(name or self.default_agent)
        if profile is None:
            raise InvalidInput.field(
                "agent",
                f"unknown agent '{name[:64]}'; known agents: {', '.join(sorted(self.profiles))}",
                reason="UNKNOWN_AGENT",
            )
        return profile

    def specialists(self) -> list[AgentProfile]:
        """The agents a router may hand a conversation to."""
        return [p for p in self.profiles.values() if not p.routes]


def default_agents() -> AgentCatalogue:
    return AgentCatalogue(profiles={p.name: p for p in BUILTIN_AGENTS}, default_agent=CODER.name)
