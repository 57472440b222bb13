"""The running agent: threads, the hand-over between them, each source's stage chain and sinks."""

from edge_agent.pipeline.agent import Agent

__all__ = ["Agent"]
