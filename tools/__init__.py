"""Developer tools: builders for the small hand-made models used by tests and the demo."""
