"""`agent-runtime chat` driven as a person would: through a pseudo-terminal, against a real
server process whose model endpoint is the scripted FakeModelServer."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pexpect

from agent_runtime.client import AgentRuntimeClient
from agent_runtime.v1 import session_pb2 as ses
from tests.support.chat_terminal import (
    APPROVAL_PROMPT,
    PROMPT,
    Terminal,
    open_chat,
    serving,
    tool_answer_sent,
)
from tests.support.cli_process import run_cli
from tests.support.fake_model_server import (
    FakeModelServer,
    gated_answer,
    reasoning_answer,
    stall_after,
    text_answer,
    tool_call_answer,
)
from tests.support.server_process import ServerProcess
from tests.support.waiting import eventually


async def test_tokens_are_shown_as_they_stream(
    server: ServerProcess, model_server: FakeModelServer
) -> None:
    gate = asyncio.Event()
    model_server.enqueue(gated_answer(["Streaming ", "token ", "by token"], gate))
    chat = open_chat(server, None)
    await chat.expect(PROMPT)
    chat.type("tell me something")
    # The first token is on the screen while the model has not yet sent the rest.
    await chat.expect("assistant> Streaming ")
    gate.set()
    await chat.expect("token by token")
    await chat.expect(PROMPT)
    assert await chat.leave("/quit") == 0


async def test_reasoning_is_shown_dimmed_and_tool_arguments_as_they_are_written(
    server: ServerProcess, model_server: FakeModelServer, workspace: Path
) -> None:
    model_server.enqueue(
        reasoning_answer("The user wants a file. ", "Writing it now."),
        tool_call_answer("write_file", {"path": "a.txt", "content": "streamed content"}),
        text_answer("Fine, no file."),
    )
    chat = open_chat(server, workspace)
    await chat.expect(PROMPT)
    chat.type("think first")
    screen = await chat.expect(r"assistant> Writing it now\.")
    assert re.search(r"thinking> (\x1b\[2m[^\x1b]*\x1b\[0m)+", screen)
    assert "The user wants a file." in _without_styles(screen)
    await chat.expect(PROMPT)
    chat.type("write it")
    screen = await chat.expect(APPROVAL_PROMPT)
    shown = _without_styles(screen)
    # The arguments, dimmed, as the model wrote them; then the call, once recorded.
    assert '[writing write_file] {"path": "a.txt", "content": "streamed content"}' in shown
    assert "\x1b[2m" in screen.split("[writing write_file]")[1]
    assert shown.index("[writing write_file]") < shown.index("[tool call] write_file")
    chat.type("r")
    await chat.expect("feedback")
    chat.type("")
    await chat.expect("assistant> Fine, no file.")
    await chat.expect(PROMPT)
    assert await chat.leave() == 0


def _without_styles(screen: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", screen)


async def test_an_approved_write_lands_in_the_workspace_and_the_result_goes_back(
    server: ServerProcess, model_server: FakeModelServer, workspace: Path
) -> None:
    model_server.enqueue(
        tool_call_answer("write_file", {"path": "notes/hello.txt", "content": "hello\n"}),
        text_answer("I wrote notes/hello.txt for you"),
    )
    chat = open_chat(server, workspace)
    await chat.expect(PROMPT)
    chat.type("please write a greeting file")
    screen = await chat.expect(APPROVAL_PROMPT)
    assert '[tool call] write_file {"content": "hello\\n", "path": "notes/hello.txt"}' in screen
    assert not (workspace / "notes" / "hello.txt").exists()  # nothing before the approval
    chat.type("a")
    await chat.expect("-> ok: wrote 6 bytes to notes/hello.txt")
    await chat.expect("assistant> I wrote notes/hello.txt for you")
    await chat.expect(PROMPT)
    assert (workspace / "notes" / "hello.txt").read_text() == "hello\n"
    sent = tool_answer_sent(model_server, 1)
    assert sent["content"] == "wrote 6 bytes to notes/hello.txt"
    assert await chat.leave() == 0


async def test_a_path_escaping_the_workspace_is_refused_and_reported_as_a_tool_error(
    server: ServerProcess, model_server: FakeModelServer, workspace: Path, tmp_path: Path
) -> None:
    (tmp_path / "secret.txt").write_text("top secret")
    (workspace / "link").symlink_to(tmp_path)
    model_server.enqueue(
        tool_call_answer("read_file", {"path": "../secret.txt"}),
        tool_call_answer("read_file", {"path": "link/secret.txt"}, call_id="call_2"),
        text_answer("I may not read outside the workspace"),
    )
    chat = open_chat(server, workspace)
    await chat.expect(PROMPT)
    chat.type("read the secret")
    await chat.expect("-> error: refused: ../secret.txt is outside the workspace")
    await chat.expect("-> error: refused: link/secret.txt is outside the workspace")
    await chat.expect("assistant> I may not read outside the workspace")
    await chat.expect(PROMPT)
    assert await chat.leave() == 0

    shown = await run_cli("sessions", "show", "s1", "--json", "--target", server.address)
    assert shown.returncode == 0, shown.stderr
    tool_messages = [m for m in json.loads(shown.stdout)["messages"] if m["role"] == "ROLE_TOOL"]
    assert [(m["tool_call_id"], m.get("is_error"), m["content"]) for m in tool_messages] == [
        ("call_1", True, "refused: ../secret.txt is outside the workspace"),
        ("call_2", True, "refused: link/secret.txt is outside the workspace"),
    ]
    assert "top secret" not in json.dumps(model_server.requests)


async def test_a_rejected_call_is_not_run_and_the_feedback_reaches_the_model(
    server: ServerProcess, model_server: FakeModelServer, workspace: Path
) -> None:
    (workspace / "keep.txt").write_text("precious")
    model_server.enqueue(
        tool_call_answer("delete_file", {"path": "keep.txt"}),
        text_answer("Understood, I kept it"),
    )
    chat = open_chat(server, workspace)
    await chat.expect(PROMPT)
    chat.type("tidy up")
    await chat.expect(APPROVAL_PROMPT)
    chat.type("r")
    await chat.expect(r"feedback for the model \(optional\): ")
    chat.type("keep that file")
    await chat.expect("assistant> Understood, I kept it")
    await chat.expect(PROMPT)
    assert (workspace / "keep.txt").read_text() == "precious"
    sent = tool_answer_sent(model_server, 1)
    assert "rejected" in sent["content"] and "Feedback: keep that file" in sent["content"]
    assert await chat.leave() == 0


async def test_an_edited_command_runs_in_the_workspace_with_its_output_sent_back(
    server: ServerProcess, model_server: FakeModelServer, workspace: Path
) -> None:
    model_server.enqueue(
        tool_call_answer("execute_command", {"command": "rm -rf ."}),
        text_answer("The command printed its directory"),
    )
    (workspace / "canary").write_text("still here")
    chat = open_chat(server, workspace)
    await chat.expect(PROMPT)
    chat.type("show me where you are")
    await chat.expect(APPROVAL_PROMPT)
    chat.type("e")
    await chat.expect(r"new arguments \(JSON object, empty: back\): ")
    chat.type('{"command": "pwd && echo edited-run"}')
    await chat.expect("assistant> The command printed its directory")
    await chat.expect(PROMPT)
    sent = tool_answer_sent(model_server, 1)
    # The model reads that a human changed its command, then what the command printed.
    assert sent["content"] == (
        "[Note from the runtime: a human changed the arguments of this call before it ran; "
        'it ran with {"command": "pwd && echo edited-run"} instead of the arguments asked '
        'for, {"command": "rm -rf ."}]\n\n'
        f"exit code 0\n{workspace}\nedited-run\n"
    )
    assert (workspace / "canary").read_text() == "still here"
    assert await chat.leave() == 0


async def test_without_a_workspace_tools_are_reported_as_not_run(
    server: ServerProcess, model_server: FakeModelServer
) -> None:
    model_server.enqueue(
        tool_call_answer("list_files", {"path": "."}),
        tool_call_answer("write_file", {"path": "a", "content": "b"}, call_id="call_2"),
        text_answer("No workspace, so I will describe it instead"),
    )
    chat = open_chat(server, None)
    await chat.expect(PROMPT)
    chat.type("look around")
    await chat.expect("-> error: not executed: the terminal client runs without a workspace")
    await chat.expect("rejected: no workspace to run it in")
    await chat.expect("assistant> No workspace, so I will describe it instead")
    await chat.expect(PROMPT)
    assert "without a workspace" in tool_answer_sent(model_server, 1)["content"]
    assert "without a workspace" in tool_answer_sent(model_server, 2)["content"]
    assert await chat.leave() == 0


async def test_ctrl_c_cancels_the_running_turn_on_the_server(
    server: ServerProcess, model_server: FakeModelServer, api: AgentRuntimeClient
) -> None:
    model_server.enqueue(stall_after("Let me think "))
    chat = open_chat(server, None)
    await chat.expect(PROMPT)
    chat.type("a long task")
    await chat.expect("assistant> Let me think ")
    chat.child.sendintr()
    await chat.expect(r"\[stopped\]")
    await chat.expect(PROMPT)

    async def turn_cancelled() -> bool:
        return not (await api.get_session("s1")).running_turn_id

    await eventually(turn_cancelled, what="the server to cancel the turn")
    messages = [m async for m in api.list_messages("s1")]
    assert messages[-1].role == ses.ROLE_ASSISTANT
    assert messages[-1].incomplete and messages[-1].content == "Let me think "
    assert await chat.leave() == 0


async def test_an_unreachable_server_is_reported_and_chat_exits_1() -> None:
    chat = Terminal("--target", "127.0.0.1:1", "--session", "s1")
    screen = await chat.expect(r"error: UNAVAILABLE[^\n]*")
    assert re.search(r"error: UNAVAILABLE", screen)
    await asyncio.to_thread(chat.child.expect, pexpect.EOF)
    chat.child.close()
    assert chat.child.exitstatus == 1


async def test_a_decision_left_pending_is_asked_first_when_the_session_is_continued(
    server: ServerProcess, model_server: FakeModelServer, workspace: Path, api: AgentRuntimeClient
) -> None:
    model_server.enqueue(
        tool_call_answer("create_directory", {"path": "build"}),
        text_answer("The directory is there"),
    )
    [c async for c in api.stream_message("s1", "make a build directory")]  # left waiting
    chat = open_chat(server, workspace)
    await chat.expect("A tool call from earlier waits for your decision:")
    await chat.expect(APPROVAL_PROMPT)
    chat.type("a")
    await chat.expect("-> ok: created directory build")
    await chat.expect("assistant> The directory is there")
    await chat.expect(PROMPT)
    assert (workspace / "build").is_dir()
    assert await chat.leave() == 0


async def test_followup_questions_and_completions_are_answered_by_the_user(
    server: ServerProcess, model_server: FakeModelServer
) -> None:
    model_server.enqueue(
        tool_call_answer(
            "ask_followup_question",
            {"question": "Which language?", "suggestions": ["Python", "Go"]},
        ),
        tool_call_answer("attempt_completion", {"result": "Chose Go"}, call_id="call_2"),
        text_answer("Glad to help"),
    )
    chat = open_chat(server, None)  # neither needs a workspace
    await chat.expect(PROMPT)
    chat.type("start a project")
    await chat.expect(r"\[question\] Which language\?")
    await chat.expect("2. Go")
    await chat.expect("your answer: ")
    chat.type("2")
    await chat.expect(r"\[done\] Chose Go")
    await chat.expect("assistant> Glad to help")
    await chat.expect(PROMPT)
    assert tool_answer_sent(model_server, 1)["content"] == "Go"
    assert tool_answer_sent(model_server, 2)["content"] == "the user has seen the result"
    assert await chat.leave() == 0


async def test_a_command_the_policy_lets_through_still_needs_the_users_yes(
    model_server: FakeModelServer, workspace: Path, tmp_path: Path
) -> None:
    agents = tmp_path / "agents.toml"
    agents.write_text('[approval]\nrequire = ["write_file"]\n')
    model_server.enqueue(
        tool_call_answer("execute_command", {"command": "touch ran.txt"}),
        text_answer("You declined, fine"),
        tool_call_answer("execute_command", {"command": "touch ran.txt"}, call_id="call_2"),
        text_answer("Done"),
    )
    async with serving(model_server, tmp_path, AGENT_RUNTIME_AGENTS_FILE=str(agents)) as server:
        chat = open_chat(server, workspace)
        await chat.expect(PROMPT)
        chat.type("touch a file")
        await chat.expect(r'run "touch ran.txt" in the workspace\? \[y/N\] ')
        chat.type("n")
        await chat.expect("assistant> You declined, fine")
        assert "declined" in tool_answer_sent(model_server, 1)["content"]
        assert not (workspace / "ran.txt").exists()
        await chat.expect(PROMPT)
        chat.type("now do it")
        await chat.expect(r"\[y/N\] ")
        chat.type("y")
        await chat.expect("assistant> Done")
        await chat.expect(PROMPT)
        assert (workspace / "ran.txt").exists()
        assert await chat.leave() == 0


async def test_regenerate_and_edit_from_the_chat(
    server: ServerProcess, model_server: FakeModelServer, api: AgentRuntimeClient
) -> None:
    model_server.enqueue(
        text_answer("joke one"), text_answer("joke two"), text_answer("once upon a time")
    )
    chat = open_chat(server, None)
    await chat.expect(PROMPT)
    chat.type("tell a joke")
    await chat.expect("assistant> joke one")
    await chat.expect(PROMPT)
    chat.type("/regenerate")
    await chat.expect("assistant> joke two")
    await chat.expect(PROMPT)
    chat.type("/edit")
    await chat.expect(r"1\. tell a joke")
    await chat.expect(r"/edit N \(1-1\) replaces that message")
    await chat.expect(PROMPT)
    chat.type("/edit 1")
    await chat.expect(r"new text \(empty: keep it\): ")
    chat.type("tell a story")
    await chat.expect("assistant> once upon a time")
    await chat.expect(PROMPT)
    assert await chat.leave() == 0

    visible = [(m.role, m.content) async for m in api.list_messages("s1")]
    assert visible == [(ses.ROLE_USER, "tell a story"), (ses.ROLE_ASSISTANT, "once upon a time")]
    everything = [m async for m in api.list_messages("s1", include_superseded=True)]
    assert [m.content for m in everything if m.superseded_by_turn_id] == [
        "tell a joke",
        "joke one",
        "joke two",
    ]


async def test_always_approves_later_matching_commands_without_asking_again_in_later_runs_too(
    server: ServerProcess,
    model_server: FakeModelServer,
    workspace: Path,
    api: AgentRuntimeClient,
) -> None:
    model_server.enqueue(
        tool_call_answer("execute_command", {"command": "echo one"}, call_id="call_1"),
        tool_call_answer("execute_command", {"command": "echo two"}, call_id="call_2"),
        text_answer("both ran"),
    )
    chat = open_chat(server, workspace)
    await chat.expect(PROMPT)
    chat.type("say one and two")
    await chat.expect(APPROVAL_PROMPT)
    chat.type("l")
    await chat.expect(r"approve which execute_command calls from now on\? ")
    chat.type("command=echo *")
    # The second call needs no approval, and the client does not ask either.
    screen = await chat.expect("assistant> both ran")
    assert screen.count("-> ok: exit code 0") == 2
    assert "[y/N]" not in screen and "[a]pprove" not in screen
    await chat.expect(PROMPT)
    assert tool_answer_sent(model_server, 1)["content"] == "exit code 0\none\n"
    assert tool_answer_sent(model_server, 2)["content"] == "exit code 0\ntwo\n"
    assert await chat.leave() == 0

    (grant,) = (await api.get_session("s1")).approval_grants
    assert (grant.tool_name, dict(grant.when)) == ("execute_command", {"command": "echo *"})

    # The session's grant outlives this run: a later chat on it does not ask either.
    model_server.enqueue(
        tool_call_answer("execute_command", {"command": "echo three"}, call_id="call_3"),
        text_answer("three ran"),
    )
    chat = open_chat(server, workspace)
    await chat.expect(PROMPT)
    chat.type("say three")
    screen = await chat.expect("assistant> three ran")
    assert "[y/N]" not in screen and "[a]pprove" not in screen
    assert tool_answer_sent(model_server, 4)["content"] == "exit code 0\nthree\n"
    assert await chat.leave() == 0
