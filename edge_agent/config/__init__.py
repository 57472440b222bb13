"""Agent configuration: pydantic section models loaded from YAML, errors mapped to YAML lines.

Every field has a description (``edge-agent check-config`` and docs/config.md are built on them)
and unknown keys are refused. The names below are the package's public face.
"""

from edge_agent.config.agent import AgentConfig
from edge_agent.config.errors import ConfigError, ConfigIssue
from edge_agent.config.files import check_files
from edge_agent.config.labels import label_problems, source_problems
from edge_agent.config.loader import LoadedConfig, load_config, parse_config, read_config
from edge_agent.config.model import ModelConfig
from edge_agent.config.mqtt import ENV_MQTT_PASSWORD, ENV_MQTT_USERNAME, MqttConfig, TlsConfig
from edge_agent.config.sources import SourceConfig

__all__ = [
    "ENV_MQTT_PASSWORD",
    "ENV_MQTT_USERNAME",
    "AgentConfig",
    "ConfigError",
    "ConfigIssue",
    "LoadedConfig",
    "ModelConfig",
    "MqttConfig",
    "SourceConfig",
    "TlsConfig",
    "check_files",
    "label_problems",
    "load_config",
    "parse_config",
    "read_config",
    "source_problems",
]
