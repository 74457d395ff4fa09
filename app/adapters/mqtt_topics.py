"""The MQTT topic tree between edges and the hub, and the Kafka topic each branch feeds.

::

    <root>/<site>/<device>/<kind>     edge -> hub, QoS 1; kind: sample, prediction, metrics, face
    <root>/<site>/<device>/command    hub -> edge, QoS 1, retained (model updates)

``all`` in the site or device place of a command topic addresses every site or device, so
``all`` is reserved and never a real site or device name. Segments are plain names (letters,
digits, ``.``, ``_``, ``-``): MQTT wildcards and separators can never hide in them, and they
are safe as object-store key segments too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from edgewise.app.core.frames import BadInput
from edgewise.app.core.topics import TopicNames

EDGE_KINDS = ("sample", "prediction", "metrics", "face")
COMMAND = "command"
BROADCAST = "all"
DEFAULT_MQTT_PORT = 1883
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_segment(value: str, what: str) -> str:
    """``value`` when it is a valid site or device name; ValueError saying why otherwise."""
    if not isinstance(value, str) or not _SEGMENT.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} must be 1-64 letters, digits, '.', '_' or '-' (no '/', '+', '#')")
    if value == BROADCAST:
        raise ValueError(f"{what} '{BROADCAST}' is reserved for commands to every {what}")
    return value


def check_root(root: str) -> str:
    """The topic root: one or more plain segments joined by '/'."""
    if not root or not all(_SEGMENT.fullmatch(part) for part in root.split("/")):
        raise ValueError(f"MQTT topic root {root!r} must be plain segments joined by '/'")
    return root


def edge_topic(root: str, site: str, device: str, kind: str) -> str:
    """Where an edge publishes messages of ``kind``."""
    if kind not in EDGE_KINDS:
        raise ValueError(f"unknown edge message kind {kind!r}; kinds: {', '.join(EDGE_KINDS)}")
    return f"{root}/{check_segment(site, 'site')}/{check_segment(device, 'device')}/{kind}"


@dataclass(frozen=True, slots=True)
class EdgeTopic:
    """The parts of an MQTT topic in the edge tree."""

    site: str
    device: str
    kind: str


def parse_edge_topic(root: str, topic: str) -> EdgeTopic:
    """Split ``topic`` into site, device and kind; BadInput when it is not in the tree."""
    prefix = root + "/"
    if not topic.startswith(prefix):
        raise BadInput("bad_topic", f"{topic[:200]!r} is not under {root}/")
    parts = topic[len(prefix):].split("/")
    if len(parts) != 3:
        raise BadInput("bad_topic", f"{topic[:200]!r} is not {root}/<site>/<device>/<kind>")
    site, device, kind = parts
    if kind != COMMAND and kind not in EDGE_KINDS:
        raise BadInput("unknown_kind", f"topic kind {kind[:50]!r}")
    for value, what in ((site, "site"), (device, "device")):
        if not _SEGMENT.fullmatch(value):
            raise BadInput("bad_topic", f"{what} {value[:80]!r} is not a plain name")
    return EdgeTopic(site, device, kind)


def kafka_topic_for(kind: str, names: TopicNames) -> str:
    """The Kafka topic an edge message kind is forwarded to."""
    topics = {"sample": names.samples, "prediction": names.predictions,
              "metrics": names.edge_metrics, "face": names.faces}
    return topics[kind]


def kafka_key_for(topic: EdgeTopic) -> bytes:
    """Kafka key: the device (as every stage keys by device), the site for metrics, so that
    the hub aggregates a site's edges in one table entry."""
    return (topic.site if topic.kind == "metrics" else topic.device).encode()


def command_topic(root: str, site: str = BROADCAST, device: str = BROADCAST) -> str:
    """Where the hub sends commands: one device, every device of a site, or everyone."""
    for value, what in ((site, "site"), (device, "device")):
        if value != BROADCAST:
            check_segment(value, what)
    return f"{root}/{site}/{device}/{COMMAND}"


def command_subscriptions(root: str, site: str, device: str) -> list[str]:
    """The command topics one edge listens to: its own, its site's and everyone's."""
    return [command_topic(root, site, device), command_topic(root, site),
            command_topic(root)]


def bridge_subscription(root: str) -> str:
    """The one subscription of the bridge: every message of every edge."""
    return f"{root}/+/+/+"


def mqtt_address(url: str) -> tuple[str, int]:
    """(host, port) of an ``mqtt://host[:port]`` URL."""
    parts = urlsplit(url if "://" in url else f"mqtt://{url}")
    if parts.scheme not in ("mqtt", "tcp") or not parts.hostname:
        raise ValueError(f"MQTT URL {url!r} must look like mqtt://host:port")
    try:
        port = parts.port or DEFAULT_MQTT_PORT
    except ValueError:
        raise ValueError(f"MQTT URL {url!r} has an invalid port") from None
    return parts.hostname, port
