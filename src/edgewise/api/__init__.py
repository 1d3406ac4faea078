"""HTTP boundary: OpenAI-compatible API, health, metrics."""
