"""``edge-agent bench``: how fast each runtime, precision, thread count and number of sources
runs a bundle here, measured on this machine, and which variant to use."""

from edge_agent.bench.apply import apply_to_config
from edge_agent.bench.rows import (
    Row,
    agent_samples,
    bench_image,
    first_frame,
    format_table,
    recommend,
    run_bench,
    runtime_samples,
    write_bench_clip,
)
from edge_agent.bench.sources import SourcesRow, format_sources_table, sources_row

__all__ = [
    "Row",
    "SourcesRow",
    "agent_samples",
    "apply_to_config",
    "bench_image",
    "first_frame",
    "format_sources_table",
    "format_table",
    "recommend",
    "run_bench",
    "runtime_samples",
    "sources_row",
    "write_bench_clip",
]
