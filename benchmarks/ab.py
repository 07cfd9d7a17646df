"""CPU per turn of two versions of the runtime, A/B, interleaved, each beside the same floor.

    python -m benchmarks.ab --base REV [--new REV] [--runs 3] [--level 32] [--out FILE.md]
        [-- extra scripts/bench options]

Each version is a frozen `git clone --shared` of this repository at its revision (`--new`
defaults to HEAD), so commits made during the run change neither. The runs alternate base,
new, base, new, ...; each is a short `scripts/bench` (the burst phase at `--level` sessions,
the other phases at token sizes) with `--runtime-src` pointing at that version; the floor and
the harness are this checkout's in every run.

The figure compared is the runtime server's CPU per turn in the burst phase at `--level`. The
machine is shared, so each run's figure is also divided by its own floor's: the table gives
both, and the verdict uses the median over runs of the floor-normalised figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

# Everything but the burst phase is cut to a token size: only the burst phase is compared.
SHORT_PHASES = [
    "--capacity-levels",
    "25",
    "--capacity-rounds",
    "1",
    "--history",
    "10",
    "--history-turns",
    "5",
    "--slow-streams",
    "20",
]


def frozen_checkout(revision: str, where: Path) -> Path:
    subprocess.run(["git", "clone", "-q", "--shared", str(REPO), str(where)], check=True)
    subprocess.run(["git", "-C", str(where), "checkout", "-q", revision], check=True)
    return where


def burst_cpu(results: dict[str, Any], level: int) -> tuple[float, float]:
    """The runtime's and the floor's server CPU per turn (ms) at this burst level."""
    at_level = results["throughput"][str(level)]
    return (
        float(at_level["runtime"]["server_cpu_ms_per_turn"]),
        float(at_level["floor"]["server_cpu_ms_per_turn"]),
    )


def run_bench(source: Path, out: Path, level: int, turns: int, extra: list[str]) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "benchmarks",
        "--runtime-src",
        str(source),
        "--out",
        str(out),
        "--concurrency",
        str(level),
        "--turns",
        str(turns),
        *SHORT_PHASES,
        *extra,
    ]
    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    results: dict[str, Any] = json.loads((out / "results.json").read_text())
    return results


def report(
    base: str, new: str, level: int, rows: list[tuple[str, float, float]]
) -> tuple[str, float]:
    """A markdown table of every run, and the median new ÷ base of the floor-normalised CPU."""
    normalised: dict[str, list[float]] = {"base": [], "new": []}
    lines = [
        f"| run | version | runtime CPU per turn, c={level} | floor's | runtime ÷ floor |",
        "|---|---|---|---|---|",
    ]
    for number, (version, runtime, floor) in enumerate(rows, start=1):
        normalised[version].append(runtime / floor)
        label = base if version == "base" else new
        lines.append(
            f"| {number} | {label} | {runtime:.2f} ms | {floor:.2f} ms | {runtime / floor:.2f}x |"
        )
    ratio = statistics.median(normalised["new"]) / statistics.median(normalised["base"])
    raw = statistics.median(r for v, r, _ in rows if v == "new") / statistics.median(
        r for v, r, _ in rows if v == "base"
    )
    lines += [
        "",
        f"{new} ÷ {base}, median of runtime ÷ floor: **{ratio:.2f}x** "
        f"(of the raw CPU per turn: {raw:.2f}x).",
    ]
    return "\n".join(lines) + "\n", ratio


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ab", description=__doc__)
    parser.add_argument("--base", required=True, help="the revision to compare against")
    parser.add_argument("--new", default="HEAD", help="the revision measured (default HEAD)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each version (default 3)")
    parser.add_argument("--level", type=int, default=32, help="burst sessions (default 32)")
    parser.add_argument("--turns", type=int, default=2000, help="burst turns per run (2000)")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    parser.add_argument("extra", nargs="*", help="more scripts/bench options, after --")
    args = parser.parse_args(argv)

    def short(revision: str) -> str:
        return subprocess.run(
            ["git", "rev-parse", "--short", revision],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    base, new = short(args.base), short(args.new)
    rows: list[tuple[str, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as scratch:
        root = Path(scratch)
        sources = {
            "base": frozen_checkout(base, root / "base"),
            "new": frozen_checkout(new, root / "new"),
        }
        for run in range(args.runs):
            for version in ("base", "new"):
                out = root / f"{version}-{run}"
                results = run_bench(sources[version], out, args.level, args.turns, args.extra)
                runtime, floor = burst_cpu(results, args.level)
                rows.append((version, runtime, floor))
                print(
                    f"run {run + 1} {version}: {runtime:.2f} ms, floor {floor:.2f} ms", flush=True
                )
    table, _ = report(base, new, args.level, rows)
    print(table)
    if args.out:
        args.out.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
