"""Loads the broker's Lua scripts from ``pipeline/scripts/*.lua``.

Scripts live in their own files so they can be reviewed and highlighted as
Lua. Files whose name starts with ``_`` are shared helpers, prepended to every
script (Redis 6.2 has no function libraries).
"""

from __future__ import annotations

from importlib import resources

import redis
from redis.commands.core import Script


def _read_sources() -> tuple[str, dict[str, str]]:
    folder = resources.files(__package__).joinpath("scripts")
    helpers, scripts = [], {}
    for item in sorted(folder.iterdir(), key=lambda entry: entry.name):
        if not item.name.endswith(".lua"):
            continue
        text = item.read_text(encoding="utf-8")
        if item.name.startswith("_"):
            helpers.append(text)
        else:
            scripts[item.name[: -len(".lua")]] = text
    return "\n".join(helpers), scripts


_HELPERS, _SCRIPTS = _read_sources()


def register_scripts(client: redis.Redis) -> dict[str, Script]:
    """Register every script with ``client``; they are sent once, then run by SHA."""
    return {name: client.register_script(_HELPERS + "\n" + source) for name, source in _SCRIPTS.items()}
