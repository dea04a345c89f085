"""frameflow's configuration, read from the environment in this one place."""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import os
import re
import tempfile
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

from pipeline.errors import BadSetting

#: The shortest ``FRAMEFLOW_IDLE_CONSUMER_S``: three of the intervals at which a live consumer says it
#: lives (``pipeline.streams.consumer.LIVENESS_INTERVAL_S``), so a busy moment never looks like death.
MIN_IDLE_CONSUMER_S = 3.0

#: The values of ``FRAMEFLOW_DURABILITY`` (the ``durability`` option of producers, processors and the
#: broker), each with how many replicas must confirm a write before it counts as done
#: (:mod:`pipeline.streams.durability`): ``primary``, the primary's reply alone (the default, no wait);
#: ``replicated``, at least one replica too.
DURABILITIES: Mapping[str, int] = {"primary": 0, "replicated": 1}


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise BadSetting(f"{name}={raw!r} is not an integer") from None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BadSetting(f"{name}={raw!r} is not a number") from None
    if not math.isfinite(value):
        raise BadSetting(f"{name}={raw!r} is not a finite number")
    return value


def _at_least(env: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    value = _float(env, name, default)
    if value < minimum:
        raise BadSetting(f"{name}={env[name]!r} must be {minimum:g} or more")
    return value


def _whole_at_least(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    value = _int(env, name, default)
    if value < minimum:
        raise BadSetting(f"{name}={env[name]!r} must be {minimum} or more")
    return value


def _positive_or_none(env: Mapping[str, str], name: str) -> int | None:
    """A whole number above 0, or ``None`` when the variable is unset or empty."""
    if not env.get(name):
        return None
    value = _int(env, name, 0)
    if value < 1:
        raise BadSetting(f"{name}={env[name]!r} must be 1 or more")
    return value


def _port_or_none(env: Mapping[str, str], name: str) -> int | None:
    """A TCP port, 0 to 65535 (0: any free one), or ``None`` when the variable is unset or empty."""
    if not env.get(name):
        return None
    value = _int(env, name, 0)
    if not 0 <= value <= 65535:
        raise BadSetting(f"{name}={env[name]!r} is not a port (0 to 65535; 0: any free port)")
    return value


def _patterns(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated list, blanks around and between the commas ignored."""
    return tuple(part.strip() for part in (env.get(name) or "").split(",") if part.strip())


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str | None:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return None
    if raw not in choices:
        raise BadSetting(f"{name}={raw!r} is not one of {', '.join(choices)}")
    return raw


def _runtime_dir(env: Mapping[str, str]) -> str:
    """frameflow's folder under ``XDG_RUNTIME_DIR`` when it is set, else one per user in the temporary folder."""
    runtime_home = env.get("XDG_RUNTIME_DIR")
    if runtime_home:
        return os.path.join(runtime_home, "frameflow")
    return os.path.join(tempfile.gettempdir(), f"frameflow-{os.getuid()}")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every environment variable frameflow reads, with its default.

    Attributes:
      redis_url: ``REDIS_URL``; else ``redis://$REDIS_HOST:$REDIS_PORT`` when
        ``REDIS_HOST`` is set (the seed's compose variables); else ``None``,
        which means "localhost:6379 when it answers, else the shared embedded Redis"
        (:mod:`pipeline.streams.shared_redis`).
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
        (The standard ``OTEL_*`` variables are read by :mod:`pipeline.domain.telemetry` and the SDK.)
      model_dir: ``FRAMEFLOW_MODEL_DIR``, the model cache ``frameflow models fetch`` fills and
        processors load from; else ``$XDG_CACHE_HOME/frameflow/models`` (``~/.cache/frameflow/models``).
      allowed_processors: ``FRAMEFLOW_ALLOWED_PROCESSORS``, comma-separated processor ids, shell-style
        globs allowed (``face-*,objects-1``). When set, a processor may register only under an id it
        matches, and routers and the scheduler ignore registry entries of other ids; empty (the
        default), any id may register. A guard against misconfigured processors, not against someone
        who can write to Redis: that is what Redis ACLs are for.
      wait_for_redis_s: ``FRAMEFLOW_WAIT_FOR_REDIS``, seconds a processor's ``start()`` (the seed's
        way, ``python -m workers.x``, ``frameflow worker``) waits for its Redis to answer before it
        exits with one line (``frameflow worker --wait-for-redis`` overrides it); 0, the default,
        waits for as long as it takes, as a Dramatiq or Celery worker keeps retrying its broker.
      results_maxlen: ``FRAMEFLOW_RESULTS_MAXLEN``, about how many entries a result stream keeps
        (``XADD ... MAXLEN ~``); 0 keeps every result. A consumer that falls this many results
        behind loses the oldest, as with any capped stream.
      parked_bound: ``FRAMEFLOW_PARKED_BOUND``, how many frames wait at most on the parked stream of
        a capability no live processor serves; beyond it the oldest is dropped and counted
        (``overflow``). 0 keeps every parked frame.
      snapshot_ttl_s: ``FRAMEFLOW_SNAPSHOT_TTL_S``, seconds a processor keeps the image of a frame whose
        result found something, for snapshots (``pipeline/kept_images.py``); 0, the default, keeps none.
      preview_interval_s: ``FRAMEFLOW_PREVIEW_INTERVAL_S``, seconds between two previews of one camera
        a producer keeps for the dashboard (its newest frame's image, :mod:`pipeline.domain.previews`);
        0 keeps none. 1 by default.
      idle_consumer_s: ``FRAMEFLOW_IDLE_CONSUMER_S``, seconds a consumer of a queue's group may go
        without a sign of life, holding nothing, before the scheduler removes it from the group (the
        consumer of a worker that died or restarted); at least 3 (a live consumer says it lives every
        second), 300 by default.
      processor_id: ``PROCESSOR_ID``, the id a processor module registers under (else its own default).
      orchestrator_url: ``ORCHESTRATOR_URL``, kept for the seed's constructor; frameflow does not use it.
      processor_capacity: ``PROCESSOR_CAPACITY``, frames a processor works on at once (else its default).
      health_check_interval_s: ``HEALTH_CHECK_INTERVAL``, seconds between a processor's heartbeats.
      runtime_dir: ``FRAMEFLOW_RUNTIME_DIR``, where the shared embedded Redis keeps its URL, its
        users and its lock; else ``$XDG_RUNTIME_DIR/frameflow``, else ``/tmp/frameflow-$UID``.
      shared_redis_grace_s: ``FRAMEFLOW_SHARED_REDIS_GRACE_S``, seconds the shared embedded Redis
        keeps running after its last user is gone (a process started next finds it still there).
      durability: ``FRAMEFLOW_DURABILITY``, one of :data:`DURABILITIES`: when a publish, a send or a
        processor's ack (its results with it) counts as done. ``primary`` (the default): when the primary
        wrote it; ``replicated``: when a replica confirmed it too (``WAIT``), so that a failover loses
        nothing acknowledged, at the cost of one replication delay per round trip.
      replica_timeout_ms: ``FRAMEFLOW_REPLICA_TIMEOUT_MS``, how long a ``replicated`` write waits for its
        replica before it fails with :class:`~pipeline.errors.NotReplicated`; 1 or more, 1000 by default.
      health_port: ``HEALTH_PORT``, where a processor serves ``/health`` and ``/metrics`` (0: any free
        port, each process its own; the port bound is announced in the registry); unset: not served.

    A malformed value raises :class:`~pipeline.errors.BadSetting` (a ``ValueError``) naming the variable.
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
    allowed_processors: tuple[str, ...] = ()
    wait_for_redis_s: float = 0.0
    results_maxlen: int = 10_000
    parked_bound: int = 1000
    snapshot_ttl_s: int = 0
    preview_interval_s: float = 1.0
    idle_consumer_s: float = 300.0
    processor_id: str | None = None
    orchestrator_url: str = ""
    processor_capacity: int | None = None
    health_check_interval_s: float = 5.0
    runtime_dir: str = _runtime_dir({})
    shared_redis_grace_s: float = 10.0
    health_port: int | None = None
    durability: str = "primary"
    replica_timeout_ms: int = 1000

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
            allowed_processors=_patterns(env, "FRAMEFLOW_ALLOWED_PROCESSORS"),
            wait_for_redis_s=_float(env, "FRAMEFLOW_WAIT_FOR_REDIS", cls.wait_for_redis_s),
            results_maxlen=_int(env, "FRAMEFLOW_RESULTS_MAXLEN", cls.results_maxlen),
            parked_bound=_int(env, "FRAMEFLOW_PARKED_BOUND", cls.parked_bound),
            snapshot_ttl_s=_int(env, "FRAMEFLOW_SNAPSHOT_TTL_S", cls.snapshot_ttl_s),
            preview_interval_s=_at_least(env, "FRAMEFLOW_PREVIEW_INTERVAL_S", cls.preview_interval_s, 0),
            idle_consumer_s=_at_least(env, "FRAMEFLOW_IDLE_CONSUMER_S", cls.idle_consumer_s, MIN_IDLE_CONSUMER_S),
            processor_id=env.get("PROCESSOR_ID") or None,
            orchestrator_url=env.get("ORCHESTRATOR_URL", cls.orchestrator_url),
            processor_capacity=_positive_or_none(env, "PROCESSOR_CAPACITY"),
            health_check_interval_s=_float(env, "HEALTH_CHECK_INTERVAL", cls.health_check_interval_s),
            runtime_dir=env.get("FRAMEFLOW_RUNTIME_DIR") or _runtime_dir(env),
            shared_redis_grace_s=_float(env, "FRAMEFLOW_SHARED_REDIS_GRACE_S", cls.shared_redis_grace_s),
            health_port=_port_or_none(env, "HEALTH_PORT"),
            durability=_choice(env, "FRAMEFLOW_DURABILITY", tuple(DURABILITIES)) or cls.durability,
            replica_timeout_ms=_whole_at_least(env, "FRAMEFLOW_REPLICA_TIMEOUT_MS", cls.replica_timeout_ms, 1),
        )

    def processor_allowed(self, processor_id: str) -> bool:
        """Whether ``processor_id`` may register (see ``allowed_processors``)."""
        return processor_allowed(processor_id, self.allowed_processors)


def processor_allowed(processor_id: str, patterns: tuple[str, ...]) -> bool:
    """True when ``patterns`` is empty (no allow-list) or ``processor_id`` matches one of them
    (shell-style, case-sensitive: ``face-*`` allows ``face-1``, not ``Face-1``)."""
    return not patterns or any(fnmatch.fnmatchcase(processor_id, pattern) for pattern in patterns)


def _cache_dir(env: Mapping[str, str], default: str) -> str:
    """frameflow's models under ``XDG_CACHE_HOME`` when it is set, else ``default``."""
    cache_home = env.get("XDG_CACHE_HOME")
    return os.path.join(cache_home, "frameflow", "models") if cache_home else default


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, fit for logs and errors.

    The hosts are kept as written, so a cluster's or sentinels' list
    (``redis+cluster://:pw@a:7000,b:7001/``) is masked too, and so are passwords given as
    options (``?sentinel_password=...``, ``?password=...``)."""
    parts = urlsplit(url)
    query = _PASSWORD_OPTION.sub(r"\1***", parts.query)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    netloc = f"{userinfo.partition(':')[0]}:***@{hosts}" if at and ":" in userinfo else parts.netloc
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


#: A password given as a URL option: the sentinels' (``sentinel_password``) or redis-py's ``password``.
_PASSWORD_OPTION = re.compile(r"((?:^|&)(?:sentinel_)?password=)[^&]*")
