"""Agent profiles and approval rules from a TOML file (AGENT_RUNTIME_AGENTS_FILE).

    default_agent = "coder"          # optional
    replace_builtin = false          # true: only the agents defined here exist

    [approval]                       # optional: the default approval rules of every agent
    require = ["write_file", "delete_file", "execute_*"]

    [agents.reviewer]                # a new agent (or a built-in one to adjust)
    description = "Reviews code without changing it"
    system_prompt = "You review code..."
    allowed_tools = ["read_file", "list_files", "search_in_code"]
    approval_rules = [                      # optional, overrides [approval]; first match wins
      {tool = "execute_command", when.command = "git status*", action = "allow"},
      {tool = "execute_command", when.command = "rm *", action = "deny"},
      {tool = "write_file", when.path = "docs/*", action = "allow"},
      "execute_command",                    # a plain glob: {tool = "...", action = "ask"}
    ]
    model = ""                              # optional
    routing_keywords = ["review"]           # optional, for the orchestrator's fallback
    client_tools = ["*"]                    # optional: globs over client-declared tools
    context_window_tokens = 64000           # optional: else AGENT_RUNTIME_CONTEXT_WINDOW_TOKENS
    stream_reasoning = true                 # optional: stream the model's reasoning
    store_reasoning = false                 # optional: keep it with the answer

    [agents.reviewer.generation]            # optional: defaults a session or request overrides
    temperature = 0.2
    max_output_tokens = 4096
    stop = ["<END>"]
    seed = 7
    reasoning_effort = "low"
    tool_choice = "auto"                    # "auto", "none", "required" or { tool = "NAME" }

    [[agents.reviewer.path_restrictions]]
    tools = ["write_file"]
    allowed_path_regex = "\\.md$"
    description = "reviews are Markdown"

Approval rules (in `approval_rules` and in `[approval] require`) are ordered; the first whose
`tool` glob matches a call, and whose `when` globs all match its top-level string arguments,
decides: "allow" (runs at once), "ask" (the default: a human decides first) or "deny" (never
sent to the client; the model reads that it was refused). A path argument is matched as the
workspace-relative path it names ("./src/../docs/a.md" is "docs/a.md"); one that leaves the
workspace matches no `when` glob. A call no rule matches runs at once.

Fields left out of a built-in agent's table keep their built-in values. Any problem stops
start-up with the file, the line and what is wrong.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

from agent_runtime.domain.agents import (
    BUILTIN_AGENTS,
    AgentCatalogue,
    AgentProfile,
    PathRestriction,
)
from agent_runtime.domain.approval import ApprovalPolicy, ApprovalRule, RuleAction
from agent_runtime.domain.generation import GenerationConfig, ToolChoice, ToolChoiceMode
from agent_runtime.domain.model import MAX_MODEL_NAME
from agent_runtime.domain.text import short_text_problem
from agent_runtime.domain.tools import TOOL_CATALOGUE

_TOP_KEYS = {"default_agent", "replace_builtin", "approval", "agents"}
_AGENT_KEYS = {
    "description",
    "system_prompt",
    "allowed_tools",
    "approval_rules",
    "path_restrictions",
    "model",
    "routing_keywords",
    "client_tools",
    "context_window_tokens",
    "stream_reasoning",
    "store_reasoning",
    "generation",
}
_RESTRICTION_KEYS = {"tools", "allowed_path_regex", "description"}
_GENERATION_KEYS = {
    "temperature",
    "top_p",
    "max_output_tokens",
    "stop",
    "seed",
    "reasoning_effort",
    "tool_choice",
}
_TOOL_CHOICE_MODES = {
    mode.value: mode for mode in ToolChoiceMode if mode is not ToolChoiceMode.TOOL
}
_RULE_KEYS = {"tool", "when", "action"}
_ACTIONS = {action.value: action for action in RuleAction}


class AgentsFileError(ValueError):
    """The agents file cannot be used; the message names the file, the line and the problem."""


def load_agents(path: str | Path) -> AgentCatalogue:
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise AgentsFileError(f"{file}: cannot read the agents file: {exc.strerror}") from exc
    return parse_agents(text, str(file))


def parse_agents(text: str, source: str = "<agents file>") -> AgentCatalogue:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # The message already says "(at line N, column M)".
        raise AgentsFileError(f"{source}: not valid TOML: {exc}") from exc
    return _Parser(text, source).catalogue(data)


class _Parser:
    def __init__(self, text: str, source: str) -> None:
        self._lines = text.splitlines()
        self._source = source

    def fail(self, problem: str, *, table: str | None = None, key: str | None = None) -> None:
        line = self._line_of(table, key)
        where = f"{self._source}:{line}" if line else self._source
        raise AgentsFileError(f"{where}: {problem}")

    def _line_of(self, table: str | None, key: str | None) -> int | None:
        """Best effort: the line of `key` inside `[table]` (or of the table header)."""
        start = 0
        if table is not None:
            header = re.compile(rf"^\s*\[\[?\s*{re.escape(table)}\s*\]\]?\s*(#.*)?$")
            found = next((i for i, line in enumerate(self._lines) if header.match(line)), None)
            if found is None:
                return None
            start = found
            if key is None:
                return found + 1
        if key is not None:
            key_line = re.compile(rf"^\s*{re.escape(key)}\s*=")
            for i in range(start, len(self._lines)):
                if i > start and table is not None and self._lines[i].lstrip().startswith("["):
                    break
                if key_line.match(self._lines[i]):
                    return i + 1
        return None

    def catalogue(self, data: dict[str, Any]) -> AgentCatalogue:
        for key in data:
            if key not in _TOP_KEYS:
                self.fail(
                    f"unknown setting '{key}' (known: {', '.join(sorted(_TOP_KEYS))})", key=key
                )
        replace_builtin = data.get("replace_builtin", False)
        if not isinstance(replace_builtin, bool):
            self.fail("replace_builtin must be true or false", key="replace_builtin")

        policy = ApprovalPolicy()
        approval = data.get("approval", {})
        if not isinstance(approval, dict):
            self.fail("[approval] must be a table", key="approval")
        for key in approval:
            if key != "require":
                self.fail(
                    f"unknown setting '{key}' in [approval] (known: require)",
                    table="approval",
                    key=key,
                )
        if "require" in approval:
            policy = ApprovalPolicy(self._rules(approval["require"], "approval", "require"))

        profiles: dict[str, AgentProfile] = {}
        if not replace_builtin:
            profiles = {p.name: replace(p, approval_policy=policy) for p in BUILTIN_AGENTS}
        agents = data.get("agents", {})
        if not isinstance(agents, dict):
            self.fail("agents must be tables like [agents.NAME]", key="agents")
        for name, table in agents.items():
            profiles[name] = self._agent(name, table, profiles.get(name), policy)
        if not profiles:
            self.fail("no agents: replace_builtin is true but no [agents.NAME] table is given")

        default = data.get(
            "default_agent", "coder" if "coder" in profiles else next(iter(profiles))
        )
        if not isinstance(default, str) or default not in profiles:
            self.fail(
                f"default_agent '{default}' is not a defined agent "
                f"(defined: {', '.join(sorted(profiles))})",
                key="default_agent",
            )
        return AgentCatalogue(profiles=profiles, default_agent=default)

    def _agent(
        self, name: str, table: Any, base: AgentProfile | None, policy: ApprovalPolicy
    ) -> AgentProfile:
        where = f"agents.{name}"
        if not re.fullmatch(r"[a-z][a-z0-9_-]{0,63}", name):
            self.fail(
                f"agent name '{name}' must be lowercase letters, digits, '-' or '_'", table=where
            )
        if not isinstance(table, dict):
            self.fail(f"[{where}] must be a table", table=where)
        for key in table:
            if key not in _AGENT_KEYS:
                self.fail(
                    f"unknown setting '{key}' for agent '{name}' "
                    f"(known: {', '.join(sorted(_AGENT_KEYS))})",
                    table=where,
                    key=key,
                )
        if base is None:
            for required in ("description", "system_prompt", "allowed_tools"):
                if required not in table:
                    self.fail(f"new agent '{name}' needs '{required}'", table=where)
        profile = base or AgentProfile(name, "", "", (), policy)

        changes: dict[str, Any] = {}
        for key in ("description", "system_prompt", "model"):
            if key in table:
                if not isinstance(table[key], str):
                    self.fail(f"{key} must be a string", table=where, key=key)
                changes[key] = table[key]
        if problem := short_text_problem(changes.get("model", ""), MAX_MODEL_NAME):
            self.fail(f"model {problem}", table=where, key="model")
        if "allowed_tools" in table:
            tools = self._strings(table["allowed_tools"], where, "allowed_tools")
            for tool in tools:
                if tool not in TOOL_CATALOGUE:
                    self.fail(
                        f"unknown tool '{tool}' (known: {', '.join(TOOL_CATALOGUE)})",
                        table=where,
                        key="allowed_tools",
                    )
            changes["allowed_tools"] = tuple(tools)
        if "approval_rules" in table:
            changes["approval_policy"] = ApprovalPolicy(
                self._rules(table["approval_rules"], where, "approval_rules")
            )
        if "routing_keywords" in table:
            changes["routing_keywords"] = tuple(
                self._strings(table["routing_keywords"], where, "routing_keywords")
            )
        if "path_restrictions" in table:
            changes["path_restrictions"] = self._restrictions(table["path_restrictions"], where)
        if "client_tools" in table:
            changes["client_tools"] = tuple(
                self._strings(table["client_tools"], where, "client_tools")
            )
        for key in ("stream_reasoning", "store_reasoning"):
            if key in table:
                if not isinstance(table[key], bool):
                    self.fail(f"{key} must be true or false", table=where, key=key)
                changes[key] = table[key]
        if "context_window_tokens" in table:
            tokens = table["context_window_tokens"]
            if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens <= 0:
                self.fail(
                    "context_window_tokens must be a positive whole number",
                    table=where,
                    key="context_window_tokens",
                )
            changes["context_window_tokens"] = tokens
        if "generation" in table:
            changes["generation"] = self._generation(table["generation"], f"{where}.generation")
        return replace(profile, **changes)

    def _generation(self, value: Any, table: str) -> GenerationConfig:
        if not isinstance(value, dict):
            self.fail(f"[{table}] must be a table", table=table)
        for key in value:
            if key not in _GENERATION_KEYS:
                self.fail(
                    f"unknown setting '{key}' in [{table}] "
                    f"(known: {', '.join(sorted(_GENERATION_KEYS))})",
                    table=table,
                    key=key,
                )
        numbers: dict[str, Any] = {}
        for key, kind in (
            ("temperature", float),
            ("top_p", float),
            ("max_output_tokens", int),
            ("seed", int),
        ):
            if key not in value:
                continue
            number = value[key]
            wrong_kind = isinstance(number, bool) or not isinstance(
                number, (int, float) if kind is float else int
            )
            if wrong_kind:
                self.fail(
                    f"{key} must be a {'number' if kind is float else 'whole number'}",
                    table=table,
                    key=key,
                )
            numbers[key] = kind(number)
        effort = value.get("reasoning_effort", "")
        if not isinstance(effort, str):
            self.fail("reasoning_effort must be a string", table=table, key="reasoning_effort")
        config = GenerationConfig(
            **numbers,
            stop=tuple(self._strings(value.get("stop", []), table, "stop")),
            reasoning_effort=effort,
            tool_choice=self._tool_choice(value["tool_choice"], table)
            if "tool_choice" in value
            else None,
        )
        for violation in config.violations("generation"):
            key = violation.field.removeprefix("generation.").split(".")[0].split("[")[0]
            self.fail(f"{violation.field}: {violation.description}", table=table, key=key)
        return config

    def _tool_choice(self, value: Any, table: str) -> ToolChoice:
        if isinstance(value, str) and value in _TOOL_CHOICE_MODES:
            return ToolChoice(_TOOL_CHOICE_MODES[value])
        if isinstance(value, dict) and set(value) == {"tool"} and isinstance(value["tool"], str):
            return ToolChoice.named(value["tool"])
        self.fail(
            'tool_choice must be "auto", "none", "required" or { tool = "NAME" }',
            table=table,
            key="tool_choice",
        )
        raise AssertionError("unreachable")

    def _restrictions(self, value: Any, where: str) -> tuple[PathRestriction, ...]:
        table = f"{where}.path_restrictions"
        if not isinstance(value, list):
            self.fail("path_restrictions must be [[...]] tables", table=table)
        result = []
        for item in value:
            if not isinstance(item, dict):
                self.fail("each path restriction must be a table", table=table)
            for key in item:
                if key not in _RESTRICTION_KEYS:
                    self.fail(
                        f"unknown setting '{key}' in a path restriction "
                        f"(known: {', '.join(sorted(_RESTRICTION_KEYS))})",
                        table=table,
                        key=key,
                    )
            regex = item.get("allowed_path_regex")
            if not isinstance(regex, str):
                self.fail(
                    "allowed_path_regex is required and must be a string",
                    table=table,
                    key="allowed_path_regex",
                )
            try:
                re.compile(regex)
            except re.error as exc:
                self.fail(
                    f"allowed_path_regex is not a valid regular expression: {exc}",
                    table=table,
                    key="allowed_path_regex",
                )
            description = item.get("description", "")
            if not isinstance(description, str):
                self.fail("description must be a string", table=table, key="description")
            tools = tuple(self._strings(item.get("tools", ["*"]), table, "tools"))
            result.append(PathRestriction(tools, regex, description))
        return tuple(result)

    def _rules(self, value: Any, table: str, key: str) -> tuple[ApprovalRule, ...]:
        """Approval rules: each a tool glob (it asks) or {tool, when, action}."""
        if not isinstance(value, list):
            self.fail(
                f"{key} must be a list of tool globs or {{tool, when, action}} tables",
                table=table,
                key=key,
            )
        rules = []
        for number, item in enumerate(value, 1):
            if isinstance(item, str):
                rules.append(ApprovalRule(item))
                continue
            where = f"{key} #{number}"
            if not isinstance(item, dict):
                self.fail(f"{where} must be a tool glob or a table", table=table, key=key)
            for name in item:
                if name not in _RULE_KEYS:
                    self.fail(
                        f"unknown setting '{name}' in {where} "
                        f"(known: {', '.join(sorted(_RULE_KEYS))})",
                        table=table,
                        key=key,
                    )
            tool = item.get("tool")
            if not isinstance(tool, str) or not tool:
                self.fail(f'{where} needs tool = "<glob over tool names>"', table=table, key=key)
            action = item.get("action", RuleAction.ASK.value)
            if action not in _ACTIONS:
                self.fail(
                    f"{where}: action must be one of {', '.join(_ACTIONS)}, not {action!r}",
                    table=table,
                    key=key,
                )
            when = item.get("when", {})
            if not isinstance(when, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in when.items()
            ):
                self.fail(
                    f"{where}: when must map argument names to globs, "
                    'e.g. when.command = "git status*"',
                    table=table,
                    key=key,
                )
            rules.append(ApprovalRule(tool, _ACTIONS[action], tuple(when.items())))
        return tuple(rules)

    def _strings(self, value: Any, table: str, key: str) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail(f"{key} must be a list of strings", table=table, key=key)
        return list(value)
