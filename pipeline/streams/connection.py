"""Redis clients that survive a Redis restart, on one Redis, a Sentinel-watched one, or a Cluster.

Every client frameflow creates retries connection errors with exponential
backoff (redis-py's own :class:`~redis.retry.Retry`), checks idle connections
before use, and keeps TCP alive, so a restarted or briefly unreachable Redis
costs a pause, not a crashed worker. ``rediss://`` and ``user:password@`` URLs
work as redis-py documents them.

The URL's scheme picks the client:

* ``redis://``, ``rediss://``, ``unix://``: one Redis (:class:`redis.Redis`);
* ``redis+cluster://[user:pass@]host:port[,host:port...]/`` (``rediss+cluster://`` for
  TLS): a Redis Cluster (:class:`redis.cluster.RedisCluster`), the hosts being startup
  nodes; the query string takes redis-py's URL options (``?ssl_ca_certs=...``);
* ``redis+sentinel://[user:pass@]host:26379[,host:port...]/<service>[/<db>]``
  (``rediss+sentinel://``): the master that the sentinels name for ``service``
  (:meth:`redis.sentinel.Sentinel.master_for`), found again after a failover. The
  credentials are the master's; sentinels that have a password of their own get it as
  the options ``?sentinel_password=...`` (and ``&sentinel_username=...`` for an ACL user of
  the sentinels), masked like the URL's password wherever the URL is shown. TLS applies to both.

What an ACL user needs beyond the commands it runs (the README names the rules): on a
cluster, ``CLUSTER SLOTS`` (redis-py's discovery of the masters); a user without it gets one
:class:`~redis.exceptions.NoPermissionError` saying so, not redis-py's "Cluster mode is not enabled".
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import threading
import time
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoPermissionError, RedisClusterException
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel

from pipeline.errors import RedisUnreachable
from pipeline.settings import mask_url

logger = logging.getLogger(__name__)

#: :func:`wait_until_reachable`'s first pause between attempts, doubled after each, up to the cap.
REACHABLE_BACKOFF_FIRST_S = 0.1
REACHABLE_BACKOFF_CAP_S = 5.0

#: How long one try of :func:`wait_until_reachable` waits for each host (to connect, then to answer).
PROBE_TIMEOUT_S = 2.0

#: Errors worth retrying: the server went away or did not answer in time.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError, ConnectionResetError)

#: What :func:`connect` returns: a client with redis-py's command API.
RedisClient = redis.Redis | RedisCluster

_CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
_SENTINEL_SCHEMES = {"redis+sentinel": "redis", "rediss+sentinel": "rediss"}
_DEFAULT_PORTS = {"cluster": 6379, "sentinel": 26379}

#: Every URL scheme :func:`connect` takes, as a bad URL's message lists them.
SUPPORTED_SCHEMES: tuple[str, ...] = ("redis", "rediss", "unix", *_CLUSTER_SCHEMES, *_SENTINEL_SCHEMES)


def check_scheme(url: str) -> None:
    """Raise ``ValueError`` listing every supported scheme when ``url`` has none of them
    (redis-py's own message names only its three)."""
    scheme = url.partition("://")[0] if "://" in url else ""
    if scheme.lower() not in SUPPORTED_SCHEMES:
        supported = ", ".join(f"{name}://" for name in SUPPORTED_SCHEMES)
        raise ValueError(f"the scheme must be one of {supported}")


@dataclasses.dataclass(frozen=True)
class MultiHostURL:
    """A ``redis+cluster://`` or ``redis+sentinel://`` URL taken apart.

    ``node_url`` is a plain ``redis://``/``rediss://`` URL of the first host with the
    credentials and the query string, so redis-py's own URL parsing reads the options.
    """

    kind: str
    hosts: tuple[tuple[str, int], ...]
    node_url: str
    service: str | None = None
    db: int = 0


def parse_multi_host_url(url: str) -> MultiHostURL | None:
    """The parts of a cluster or sentinel URL; ``None`` for a plain Redis URL.

    Raises:
      ValueError: a cluster or sentinel URL that is malformed (the message has no password).
    """
    scheme, _, rest = url.partition("://")
    plain_scheme = _CLUSTER_SCHEMES.get(scheme) or _SENTINEL_SCHEMES.get(scheme)
    if plain_scheme is None:
        return None
    kind = "cluster" if scheme in _CLUSTER_SCHEMES else "sentinel"
    parts = urlsplit(f"{plain_scheme}://{rest}")
    userinfo, at, host_list = parts.netloc.rpartition("@")
    hosts = tuple(_host_and_port(item, _DEFAULT_PORTS[kind]) for item in host_list.split(",") if item)
    if not hosts:
        raise ValueError(f"a {scheme}:// URL needs at least one host:port")
    path = [unquote(segment) for segment in parts.path.split("/") if segment]
    service, db = None, 0
    if kind == "sentinel":
        if not path or len(path) > 2:
            raise ValueError(f"a {scheme}:// URL names the master's service: {scheme}://host:26379/<service>[/<db>]")
        service = path[0]
        db = _database(path[1]) if len(path) == 2 else 0
    elif path and (len(path) > 1 or _database(path[0]) != 0):
        raise ValueError("a Redis Cluster has only database 0")
    first_host, first_port = hosts[0]
    netloc = f"{userinfo}{at}{_bracketed(first_host)}:{first_port}"
    query = f"?{parts.query}" if parts.query else ""
    return MultiHostURL(kind, hosts, f"{plain_scheme}://{netloc}/{db}{query}", service, db)


def connect(url: str, **options: Any) -> RedisClient:
    """A client for ``url`` (see the module docstring) with retries, health checks and keepalive."""
    check_scheme(url)
    parsed = parse_multi_host_url(url)
    retry = options.pop("retry", None) or Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=6)
    if not url.startswith("unix://"):
        options.setdefault("socket_keepalive", True)
    options.setdefault("socket_connect_timeout", 5)
    if parsed is not None and parsed.kind == "cluster":
        # Node connections do not retry: the cluster client retries, after refreshing its slot map.
        return _cluster_client(parsed, retry=retry, **options)
    options.setdefault("retry_on_error", list(TRANSIENT_ERRORS))
    options.setdefault("health_check_interval", 15)
    if parsed is not None:
        return _sentinel_master(parsed, retry=retry, **options)
    return redis.Redis.from_url(url, retry=retry, **options)


def wait_until_reachable(url: str, timeout_s: float | None = 0.0, stopping: threading.Event | None = None) -> bool:
    """Return ``True`` once the Redis at ``url`` answers PING, trying for up to ``timeout_s``
    seconds (``None``: for as long as it takes); ``False`` as soon as ``stopping`` is set.

    Between attempts it waits 0.1 s, twice as long after each failure, 5 s at most, and
    logs one WARNING per retry naming the URL (password masked) and the pause: processes
    started before their Redis say why they wait, without flooding the log. One attempt
    gives each host :data:`PROBE_TIMEOUT_S` and is not retried inside redis-py, so sentinels
    that do not answer cost seconds per attempt, not their product.

    Raises:
      RedisUnreachable: it did not answer in time, refused the credentials, or ``url`` is not
        a Redis URL; the message shows the URL with its password masked.
    """
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    stopping = stopping or threading.Event()
    pause = 0.0
    while not stopping.is_set():
        client: RedisClient | None = None
        try:
            client = _probe_client(url)
            client.ping()
            return True
        except ValueError as error:
            raise RedisUnreachable(f"bad Redis URL {mask_url(url)}: {error}") from None
        except NoPermissionError as error:
            raise RedisUnreachable(
                f"Redis at {mask_url(url)} refused a command frameflow needs: {error}; "
                "give the ACL user the rules the README lists"
            ) from None
        except redis.AuthenticationError as error:
            if not _has_password(url):
                raise RedisUnreachable(
                    f"Redis at {mask_url(url)} requires a password: give it in the URL (redis://:PASSWORD@host:port/0)"
                ) from None
            raise RedisUnreachable(f"Redis at {mask_url(url)} refused the credentials: {error}") from None
        except (*TRANSIENT_ERRORS, RedisClusterException) as error:
            refusal = _sentinels_refusal(error)
            if refusal is not None:  # every sentinel answered, and said no: waiting will not change that
                raise RedisUnreachable(f"the sentinels of {mask_url(url)} {refusal}: {_reason(error, url)}") from None
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise RedisUnreachable(f"cannot reach Redis at {mask_url(url)}: {_reason(error, url)}") from None
            # One line per attempt, and the attempts back off: a few lines a minute at most.
            doubled = pause * 2 if pause else REACHABLE_BACKOFF_FIRST_S
            pause = min(doubled, REACHABLE_BACKOFF_CAP_S, math.inf if left is None else left)
            giving_up = "" if left is None else f" (giving up in {left:.0f}s)"
            logger.warning(
                "Redis at %s is not answering (%s); retrying in %.1fs%s.",
                mask_url(url),
                _reason(error, url),
                pause,
                giving_up,
            )
        finally:
            if client is not None:
                client.close()
        stopping.wait(pause)
    return False


def _probe_client(url: str) -> RedisClient:
    """A client that gives up fast, for :func:`wait_until_reachable`: one try per host, no retries."""
    check_scheme(url)
    parsed = parse_multi_host_url(url)
    quick: dict[str, Any] = {
        "socket_connect_timeout": PROBE_TIMEOUT_S,
        "socket_timeout": PROBE_TIMEOUT_S,
        "retry": Retry(NoBackoff(), retries=0),
    }
    if parsed is None:
        return redis.Redis.from_url(url, **quick)
    if parsed.kind == "cluster":
        return _cluster_client(parsed, **quick)
    return _sentinel_master(parsed, **quick)


def _cluster_client(parsed: MultiHostURL, **options: Any) -> RedisCluster:
    others = [ClusterNode(host, port) for host, port in parsed.hosts[1:]]
    try:
        return RedisCluster(url=parsed.node_url, startup_nodes=others, **options)
    except RedisClusterException as error:
        cause: BaseException | None = error
        while cause is not None and not isinstance(cause, redis.AuthenticationError | NoPermissionError):
            cause = cause.__cause__ or cause.__context__
        if isinstance(cause, NoPermissionError):  # redis-py says "Cluster mode is not enabled on this node"
            raise NoPermissionError(f"{cause} (finding the cluster's masters needs +cluster|slots)") from None
        if cause is not None:  # no node let us in: the credentials, not the network
            raise redis.AuthenticationError(str(error)) from None
        raise


def _sentinel_master(parsed: MultiHostURL, **options: Any) -> redis.Redis:
    assert parsed.service is not None
    kwargs = {**parse_url(parsed.node_url), **options}
    for name in ("host", "port"):
        kwargs.pop(name, None)
    tls = kwargs.pop("connection_class", None) is redis.SSLConnection
    sentinel_kwargs = {name: value for name, value in kwargs.items() if name.startswith(("socket_", "ssl_"))}
    for option in ("sentinel_username", "sentinel_password"):  # the sentinels' own credentials
        if option in kwargs:
            sentinel_kwargs[option.removeprefix("sentinel_")] = kwargs.pop(option)
    if tls:
        sentinel_kwargs["ssl"] = True
    sentinel = Sentinel(list(parsed.hosts), sentinel_kwargs=sentinel_kwargs, ssl=tls, **kwargs)
    return sentinel.master_for(parsed.service)


def _host_and_port(item: str, default_port: int) -> tuple[str, int]:
    if item.startswith("["):
        host, _, port = item[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = item.partition(":")
    if not host or (port and not port.isdigit()):
        raise ValueError(f"bad host:port {item!r}")
    return host, int(port) if port else default_port


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _database(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"bad database number {text!r}")
    return int(text)


def _has_password(url: str) -> bool:
    userinfo, at, _ = url.partition("://")[2].split("/", 1)[0].rpartition("@")
    return bool(at) and ":" in userinfo


#: How redis-py names each sentinel in a :class:`MasterNotFoundError`: the client's whole repr.
_SENTINEL_CLIENT_REPR = re.compile(r"<redis\.client\.Redis\(.*?\)>\)>\)> - (?:\w+:)?")


#: What sentinels that all refused a client say, by the error class each answered with.
_SENTINEL_REFUSALS = {
    "AuthenticationError": "refused the credentials (the sentinels' own: ?sentinel_password=..., "
    "&sentinel_username=...)",
    "NoPermissionError": "refused a command frameflow needs (give the sentinels' user +sentinel|masters)",
}


def _sentinels_refusal(error: Exception) -> str | None:
    """Why every sentinel turned the client away, when each answered with the same refusal; else None."""
    if not isinstance(error, MasterNotFoundError):
        return None
    answers = {re.split(r"\W", answer, maxsplit=1)[0] for answer in _SENTINEL_CLIENT_REPR.split(str(error))[1:]}
    return _SENTINEL_REFUSALS.get(answers.pop()) if len(answers) == 1 else None


def _reason(error: Exception, url: str) -> str:
    """``error``'s text for one log line: the password masked, and no sentinel client's repr
    (redis-py quotes one per sentinel, hundreds of characters each; the error that follows names
    the sentinel's address)."""
    text = _without_password(error, url)
    if isinstance(error, MasterNotFoundError):
        text = _SENTINEL_CLIENT_REPR.sub("", text).replace(" : ", ": ", 1)
    return text


def _without_password(error: Exception, url: str) -> str:
    """``error``'s text with the URL's password masked (redis-py's cluster errors quote node URLs)."""
    text = str(error)
    parts = urlsplit(url.replace("+cluster", "").replace("+sentinel", ""))
    passwords = [parts.password, *(value for name, value in parse_qsl(parts.query) if name.endswith("password"))]
    for password in filter(None, passwords):
        text = text.replace(password, "***")
    return text
