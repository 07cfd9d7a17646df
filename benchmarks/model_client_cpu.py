"""CPU per answer of the runtime's model client, against a plain aiohttp reader measured in the
same run.

    python -m benchmarks.model_client_cpu [--before DIR] [--rounds 5] [--answers 320]
        [--concurrency 16] [--tokens 50] [--rate 1000] [--out FILE.json]

A fake model (benchmarks/fake_model.py, in its own process) streams every answer as `tokens`
SSE events at `rate` tokens per second, so that each event arrives in a read of its own, as a
real model's tokens do. Each variant runs in a fresh child process: a warm-up, then `answers`
answers, `concurrency` at a time; the child's own CPU time (user + system, all threads) over
the measured answers, divided by their number, is its CPU per answer.

Variants:
- baseline: a plain aiohttp.ClientSession, reading whatever has arrived (readany), splitting
  the SSE events and json.loads-ing each. No runtime code: the same in every checkout.
- aiohttp / httpx: this checkout's OpenAICompatibleClient on each HTTP transport
  (AGENT_RUNTIME_LLM_HTTP_TRANSPORT).
- before: OpenAICompatibleClient of another checkout (`--before DIR`, e.g. a `git clone
  --shared` of an older commit), with whatever HTTP client it had.

The rounds alternate the variants; each round's figures are divided by that round's baseline,
and the table reports the median ratio (and the median CPU per answer, for scale). Machine
load moves the absolute numbers much more than the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve()
_REPO = _HERE.parent.parent
_WARM_UP_ANSWERS = 32


# -- the measuring child (runs as a script, so that `--src` decides which agent_runtime) -------


async def _baseline_answers(url: str, model: str, answers: int, concurrency: int) -> None:
    import aiohttp

    body = json.dumps(
        {"model": model, "stream": True, "messages": [{"role": "user", "content": "Hi"}]}
    ).encode()
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    async with aiohttp.ClientSession() as session:

        async def one() -> None:
            async with session.post(
                f"{url}/chat/completions", data=body, headers=headers
            ) as response:
                pending = b""
                text: list[str] = []
                while chunk := await response.content.readany():
                    *events, pending = (pending + chunk).split(b"\n\n")
                    for event in events:
                        data = event.removeprefix(b"data: ")
                        if data == b"[DONE]":
                            continue
                        for choice in json.loads(data).get("choices") or ():
                            text.append(choice["delta"].get("content") or "")

        await _run(one, answers, concurrency)


async def _runtime_answers(
    url: str, model: str, answers: int, concurrency: int, transport: str | None
) -> None:
    from agent_runtime.application.ports import ChatRequest
    from agent_runtime.domain.model import Message, Role
    from agent_runtime.infrastructure.llm.openai_compatible import OpenAICompatibleClient
    from agent_runtime.infrastructure.llm.resilience import RetryPolicy

    http: Any
    if transport is None:  # a checkout from before httpx: aiohttp only, made elsewhere
        before = importlib.import_module("agent_runtime.infrastructure.llm.openai_compatible")
        http = before.create_http_client()
    else:
        from agent_runtime.infrastructure.llm.http_client import HTTP_TRANSPORTS, create_http_client

        [chosen] = [known for known in HTTP_TRANSPORTS if known == transport]
        http = create_http_client(url, transport=chosen)
    client = OpenAICompatibleClient(
        http, base_url=url, model=model, retry=RetryPolicy(max_attempts=1)
    )
    history = [Message("m1", "s1", 1, Role.USER, "Hi", datetime.now(UTC))]
    request = ChatRequest(model="", system_prompt="", history=history, tools=())

    async def one() -> None:
        async for _event in client.stream_chat(request):
            pass

    try:
        await _run(one, answers, concurrency)
    finally:
        await (http.aclose() if hasattr(http, "aclose") else http.close())


async def _run(one: Any, answers: int, concurrency: int) -> None:
    """`_WARM_UP_ANSWERS` answers, then `answers` more, `concurrency` at a time; prints the
    CPU seconds the measured ones took as JSON."""

    async def worker(count: int) -> None:
        for _ in range(count):
            await one()

    async def batch(total: int) -> None:
        share, extra = divmod(total, concurrency)
        counts = [share + (1 if index < extra else 0) for index in range(concurrency)]
        await asyncio.gather(*(worker(count) for count in counts if count))

    await batch(_WARM_UP_ANSWERS)
    started_cpu, started_wall = time.process_time(), time.monotonic()
    await batch(answers)
    cpu, wall = time.process_time() - started_cpu, time.monotonic() - started_wall
    print(json.dumps({"cpu_seconds": cpu, "wall_seconds": wall, "answers": answers}))


def _measure(args: argparse.Namespace) -> int:
    if args.src:
        sys.path.insert(0, str(Path(args.src).resolve()))
    if args.variant == "baseline":
        run = _baseline_answers(args.model_url, args.model, args.answers, args.concurrency)
    else:
        import agent_runtime

        # The checkout asked for, not whichever agent_runtime is installed.
        expected = Path(args.src or _REPO).resolve()
        assert Path(agent_runtime.__file__).resolve().is_relative_to(expected), (
            f"measuring {agent_runtime.__file__}, not {expected}"
        )
        transport = None if args.variant == "before" else args.variant
        run = _runtime_answers(
            args.model_url, args.model, args.answers, args.concurrency, transport
        )
    asyncio.run(run)
    return 0


# -- the parent ----------------------------------------------------------------------------


def _child(variant: str, src: Path | None, model_url: str, args: argparse.Namespace) -> float:
    argv = [
        sys.executable,
        str(_HERE),
        "--measure",
        variant,
        "--model-url",
        model_url,
        "--model",
        f"bench/tokens={args.tokens}/rate={args.rate:g}",
        "--answers",
        str(args.answers),
        "--concurrency",
        str(args.concurrency),
    ]
    if src is not None:
        argv += ["--src", str(src)]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=600, check=False, cwd=src or _REPO
    )
    if done.returncode != 0:
        raise RuntimeError(f"{variant} failed:\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return float(result["cpu_seconds"]) / int(result["answers"])


async def _compare(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.processes import ProcessGroup

    variants: list[tuple[str, Path | None]] = [("baseline", None)]
    if args.before:
        variants.append(("before", args.before))
    variants += [("aiohttp", None), ("httpx", None)]
    per_answer: dict[str, list[float]] = {name: [] for name, _ in variants}
    ratios: dict[str, list[float]] = {name: [] for name, _ in variants}
    log_dir = Path(args.log_dir or os.environ.get("TMPDIR", "/tmp"))
    async with ProcessGroup(log_dir) as processes:
        model = await processes.start(
            "model-client-cpu-fake-model",
            [sys.executable, "-m", "benchmarks.fake_model", "--tokens", str(args.tokens)],
        )
        url = f"http://{model.address}/v1"
        for round_number in range(1, args.rounds + 1):
            measured: dict[str, float] = {}
            for name, src in variants:
                measured[name] = await asyncio.to_thread(_child, name, src, url, args)
                per_answer[name].append(measured[name])
            for name in measured:
                ratios[name].append(measured[name] / measured["baseline"])
            shown = ", ".join(f"{name} {value * 1e3:.3f} ms" for name, value in measured.items())
            print(f"round {round_number}: {shown}", file=sys.stderr)
    return {
        "config": {
            "rounds": args.rounds,
            "answers": args.answers,
            "concurrency": args.concurrency,
            "tokens": args.tokens,
            "rate": args.rate,
            "before": str(args.before) if args.before else None,
        },
        "cpu_ms_per_answer": {
            name: [value * 1e3 for value in values] for name, values in per_answer.items()
        },
        "ratio_to_baseline": ratios,
    }


def _table(results: dict[str, Any]) -> str:
    lines = [
        "| variant | CPU per answer (median, ms) | ratio to baseline (median of rounds) |",
        "|---|---|---|",
    ]
    for name, values in results["cpu_ms_per_answer"].items():
        ratio = statistics.median(results["ratio_to_baseline"][name])
        lines.append(f"| {name} | {statistics.median(values):.3f} | {ratio:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.model_client_cpu")
    parser.add_argument("--before", help="another checkout whose model client to measure too")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--answers", type=int, default=320, help="measured answers per child")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=50, help="SSE events per answer")
    parser.add_argument("--rate", type=float, default=1000.0, help="tokens per second")
    parser.add_argument("--out", help="also write the figures there as JSON")
    parser.add_argument("--log-dir", help="where the fake model's log goes")
    # The measuring child's options.
    parser.add_argument("--measure", dest="variant", help=argparse.SUPPRESS)
    parser.add_argument("--model-url", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--src", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.before:
        args.before = Path(args.before).resolve()
    if args.variant:
        return _measure(args)
    if str(_REPO) not in sys.path:
        sys.path.insert(0, str(_REPO))
    results = asyncio.run(_compare(args))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
