"""Publishing to MQTT: the topic/payload contract (topics.py) and the paho client (mqtt.py)."""

from edge_agent.publish.mqtt import MqttPublisher, PublisherStats
from edge_agent.publish.topics import Topics, topic_level

__all__ = ["MqttPublisher", "PublisherStats", "Topics", "topic_level"]
