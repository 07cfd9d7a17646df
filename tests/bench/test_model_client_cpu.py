"""benchmarks/model_client_cpu.py works: tiny sizes, one round, every variant measured.

No timing assertions: on a shared CI machine they would only measure the neighbours.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.e2e
def test_the_model_client_cpu_benchmark_measures_every_variant(tmp_path: Path) -> None:
    out = tmp_path / "cpu.json"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.model_client_cpu",
            "--rounds",
            "1",
            "--answers",
            "8",
            "--concurrency",
            "2",
            "--tokens",
            "5",
            "--out",
            str(out),
            "--log-dir",
            str(tmp_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads(out.read_text())
    assert set(results["ratio_to_baseline"]) == {"baseline", "aiohttp", "httpx"}
    assert results["ratio_to_baseline"]["baseline"] == [1.0]
    assert all(value > 0 for [value] in results["cpu_ms_per_answer"].values())
    assert "| httpx |" in completed.stdout
