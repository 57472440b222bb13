"""Publishing to MQTT: topic names (topics.py), payloads (payloads.py), the paho connection
(client.py) and what is published when (publisher.py).

Nothing is imported here, so reading the contract (config validation does) never loads paho.
"""
