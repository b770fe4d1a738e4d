"""The ``{device_id:device}`` path convertor: a device named in a URL path as everywhere else.

A device is named by its id, ``SITE/KEY``, ``GATEWAY/KEY`` or a key unique in the fleet
(:mod:`fwcore.devices`), so a path segment may hold one slash (written as is, or as ``%2F``: the
server sees both the same). The sub-resources of a device (``latest``, ``record``, ``history``) are
never taken as the key of a ``SITE/KEY`` reference, whatever order the routes are registered in:
``/devices/7/latest`` is device 7's latest values, not the device ``latest`` at site ``7``. A
device whose key is one of those words is named by its id or as a query (``?ref=``).
"""

from __future__ import annotations

from starlette.convertors import Convertor, register_url_convertor

#: Words that follow a device in a path: never read as a device key.
SUBRESOURCES = ("latest", "record", "history")


class DeviceRefConvertor(Convertor[str]):
    """One or two path segments naming a device; see the module docstring."""

    regex = r"[^/]+(?:/(?!(?:" + "|".join(SUBRESOURCES) + r")(?:/|$))[^/]+)?"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("device", DeviceRefConvertor())

#: The parameter's description in the OpenAPI document.
DEVICE_PATH_HELP = "the device: its id, SITE/KEY, GATEWAY/KEY, or a key unique in the fleet"
