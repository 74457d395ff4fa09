"""Talking to the outside: MQTT payloads, topics and link, the edge spool, object stores, images.

May import ``edgewise.app.core`` and ``edgewise.models``.
"""
