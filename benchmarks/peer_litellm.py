"""The peer (`scripts/bench --peer litellm`): the LiteLLM proxy in front of the same fake model.

LiteLLM's proxy is what many users put between their clients and a model: an
OpenAI-compatible HTTP server that forwards each chat completion to a configured upstream
and streams the answer back. It is stateless (no database configured here, none needed),
while the runtime makes two durable commits per turn; the report says so beside the figures.

It is installed into a virtualenv of its own, cached outside the project (never one of the
project's dependencies): ~/.cache/agent-runtime-bench/litellm-<version>, or under
$AGENT_RUNTIME_BENCH_CACHE. The first run installs it (a few minutes); later runs reuse it.
The proxy runs as shipped (one uvicorn worker, its default logging) with no master key
(the runtime runs without API keys too), and with its model cost map read from the
installed package rather than fetched from the internet.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from benchmarks.processes import Child, ProcessGroup

VERSION = "1.108.7"
REQUIREMENT = f"litellm[proxy]=={VERSION}"
_READY = re.compile(r"Uvicorn running on http://[\d.]+:(\d+)")


def cache_dir() -> Path:
    configured = os.environ.get("AGENT_RUNTIME_BENCH_CACHE")
    base = Path(configured) if configured else Path.home() / ".cache" / "agent-runtime-bench"
    return base / f"litellm-{VERSION}"


async def ensure_installed(log: Callable[[str], None]) -> Path:
    """The `litellm` command of the cached virtualenv, installed first if need be."""
    venv = cache_dir()
    command = venv / "bin" / "litellm"
    stamp = venv / ".installed"
    if command.exists() and stamp.exists() and stamp.read_text().strip() == REQUIREMENT:
        return command
    log(f"installing {REQUIREMENT} into {venv} (once; a few minutes)")
    venv.parent.mkdir(parents=True, exist_ok=True)
    base_python = getattr(sys, "_base_executable", sys.executable)
    await _run([base_python, "-m", "venv", "--clear", str(venv)], seconds=300)
    await _run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", REQUIREMENT],
        seconds=1800,
    )
    stamp.write_text(REQUIREMENT + "\n")
    return command


async def _run(argv: list[str], *, seconds: float) -> None:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await asyncio.wait_for(process.communicate(), seconds)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{output.decode(errors='replace')[-3000:]}")


def config_yaml(model_url: str, models: Iterable[str]) -> str:
    """One route per model name the bench asks for, each to the fake model under that name
    (LiteLLM's "openai/" provider: any OpenAI-compatible endpoint)."""
    lines = ["model_list:"]
    for name in sorted(set(models)):
        lines += [
            f'  - model_name: "{name}"',
            "    litellm_params:",
            f'      model: "openai/{name}"',
            f'      api_base: "{model_url}"',
            '      api_key: "none"',
        ]
    return "\n".join(lines) + "\n"


async def start(
    group: ProcessGroup, command: Path, workdir: Path, model_url: str, models: Iterable[str]
) -> Child:
    """The proxy on a free port of 127.0.0.1, serving `models` from the fake model."""
    config = workdir / "litellm-config.yaml"
    config.write_text(config_yaml(model_url, models))
    with socket.socket() as probe:  # a free port (uvicorn cannot be asked for port 0)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    environment = {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY": "False",
        "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    return await group.start(
        "peer-litellm",
        [
            str(command),
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            "1",
        ],
        env=environment,
        cwd=workdir,
        startup_seconds=120,
        ready=_READY,
    )
