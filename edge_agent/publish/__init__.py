"""Publishing to MQTT: the topic/payload contract (topics.py) and the paho client (mqtt.py).

Nothing is imported here, so reading the contract (config validation does) never loads paho.
"""
