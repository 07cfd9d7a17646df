"""The benchmark harness behind `scripts/bench` (see docs/benchmarks/README.md).

Everything runs on 127.0.0.1, each server in its own process:

- `fake_model`: an OpenAI-compatible endpoint, unpaced or at a model's pace, that stamps
  every token with the wall-clock time it left the process, so delays can be measured
  across processes;
- `floor_relay`: the floor, the runtime's own model client, coalescing and stream framing
  with no database and no domain logic, that every runtime figure is divided by;
- the runtime itself (`python -m agent_runtime serve`) on a fresh SQLite file;
- `peer_litellm`: optionally the LiteLLM proxy (the peer), in a virtualenv of its own;
- `load` and `load_process`: the load generators, in the `scripts/bench` process and, for
  the capacity phase, in processes of their own.
"""
