"""The edge: the device program and its sources, the MQTT bridge, and the ``image_sink`` and
``edge_metrics`` stages."""
