"""Loads Lua scripts from a package's ``scripts/*.lua``.

Scripts live in their own files so they can be reviewed and highlighted as
Lua. Files whose name starts with ``_`` are shared helpers, prepended to every
script (Redis 6.2 has no function libraries). The broker core's scripts are in
``pipeline/streams/scripts``; a layer above keeps its own beside its modules and
may use the core's helpers (``helpers_from``).
"""

from __future__ import annotations

import functools
from importlib import resources

import redis
from redis.commands.core import Script


@functools.cache
def _read_sources(package: str) -> tuple[str, dict[str, str]]:
    folder = resources.files(package).joinpath("scripts")
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


def register_scripts(client: redis.Redis, package: str, *, helpers_from: tuple[str, ...] = ()) -> dict[str, Script]:
    """Register every script of ``package`` with ``client`` (sent once, then run by SHA), each
    preceded by the helpers of ``helpers_from`` and of ``package``."""
    helpers = "\n".join(_read_sources(name)[0] for name in (*helpers_from, package))
    return {name: client.register_script(helpers + "\n" + source) for name, source in _read_sources(package)[1].items()}
