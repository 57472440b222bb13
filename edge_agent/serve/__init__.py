"""The Custom Vision compatible HTTP endpoint; ``edge-agent serve`` (edge_agent/cli/serve.py)
runs it."""

from edge_agent.serve.request import predictions_json, route
from edge_agent.serve.server import PredictionServer, make_server

__all__ = ["PredictionServer", "make_server", "predictions_json", "route"]
