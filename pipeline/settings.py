"""frameflow's configuration, read from the environment in this one place."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str | None:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return None
    if raw not in choices:
        raise ValueError(f"{name}={raw!r} is not one of {', '.join(choices)}")
    return raw


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every environment variable frameflow reads, with its default.

    Attributes:
      redis_url: ``REDIS_URL``; else ``redis://$REDIS_HOST:$REDIS_PORT`` when
        ``REDIS_HOST`` is set (the seed's compose variables); else ``None``,
        which means "start the embedded Redis".
      namespace: ``FRAMEFLOW_NAMESPACE``, prefix of the broker's own keys.
      lease_ms: ``FRAMEFLOW_LEASE_MS``, how long a delivered message stays
        reserved for its consumer without a renewal.
      max_deliveries: ``FRAMEFLOW_MAX_DELIVERIES``, deliveries after which a
        message that keeps killing its workers is dead-lettered as poison.
      dead_letter_ttl_ms: ``FRAMEFLOW_DEAD_LETTER_TTL_MS``, how long dead letters are kept.
      health_host: ``FRAMEFLOW_HEALTH_HOST``, the address health and metrics endpoints bind.
      log_format: ``FRAMEFLOW_LOG_FORMAT``, ``text`` or ``json``; when set, frameflow's
        entry points configure logging (a stderr handler) if the application has not.
      log_level: ``FRAMEFLOW_LOG_LEVEL``, the root level when frameflow configures logging.
      trace_file: ``FRAMEFLOW_TRACE_FILE``, where the ``jsonfile`` trace exporter appends spans.
        (The standard ``OTEL_*`` variables are read by :mod:`pipeline.telemetry` and the SDK.)
      model_dir: ``FRAMEFLOW_MODEL_DIR``, the model cache ``frameflow models fetch`` fills and
        processors load from; else ``$XDG_CACHE_HOME/frameflow/models`` (``~/.cache/frameflow/models``).
    """

    redis_url: str | None = None
    namespace: str = "frameflow"
    lease_ms: int = 10_000
    max_deliveries: int = 5
    dead_letter_ttl_ms: int = 7 * 24 * 3600 * 1000
    health_host: str = "127.0.0.1"
    log_format: str | None = None
    log_level: str = "INFO"
    trace_file: str | None = None
    model_dir: str = os.path.join("~", ".cache", "frameflow", "models")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        url = env.get("REDIS_URL") or None
        if url is None and env.get("REDIS_HOST"):
            url = f"redis://{env['REDIS_HOST']}:{_int(env, 'REDIS_PORT', 6379)}"
        return cls(
            redis_url=url,
            namespace=env.get("FRAMEFLOW_NAMESPACE") or cls.namespace,
            lease_ms=_int(env, "FRAMEFLOW_LEASE_MS", cls.lease_ms),
            max_deliveries=_int(env, "FRAMEFLOW_MAX_DELIVERIES", cls.max_deliveries),
            dead_letter_ttl_ms=_int(env, "FRAMEFLOW_DEAD_LETTER_TTL_MS", cls.dead_letter_ttl_ms),
            health_host=env.get("FRAMEFLOW_HEALTH_HOST") or cls.health_host,
            log_format=_choice(env, "FRAMEFLOW_LOG_FORMAT", ("text", "json")),
            log_level=(env.get("FRAMEFLOW_LOG_LEVEL") or cls.log_level).upper(),
            trace_file=env.get("FRAMEFLOW_TRACE_FILE") or None,
            model_dir=env.get("FRAMEFLOW_MODEL_DIR") or _cache_dir(env, cls.model_dir),
        )


def _cache_dir(env: Mapping[str, str], default: str) -> str:
    """frameflow's models under ``XDG_CACHE_HOME`` when it is set, else ``default``."""
    cache_home = env.get("XDG_CACHE_HOME")
    return os.path.join(cache_home, "frameflow", "models") if cache_home else default


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, fit for logs and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))
