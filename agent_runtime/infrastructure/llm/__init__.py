"""Chat model clients: the OpenAI-compatible HTTP client, its SSE parser and the built-in fake."""
