"""A Redis Sentinel set-up for tests: one master, its replicas and the sentinels watching it.

:class:`LocalSentinel` is for the ``redis+sentinel://`` URL and real failovers: every server an
:class:`~pipeline.streams.embedded.EmbeddedRedis` on a loopback port (the sentinels are
``redis-server --sentinel``), optionally with passwords and TLS. Replicas take their first copy
through a file, as in :mod:`tests.cluster`, and entering waits until they are in step.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from urllib.parse import urlencode

import redis

from pipeline.streams.embedded import AclUser, EmbeddedRedis, TlsFiles
from tests.cluster import REPLICATION_ARGS, replicas_in_step, set_user, tls_options
from tests.polling import wait_until


class _SentinelProcess(EmbeddedRedis):
    """``redis-server --sentinel``, watching one master; its configuration file is its own (0600).
    With ``own_password`` clients of the sentinel authenticate (``requirepass``); with ``tls`` it
    listens with TLS only and reaches the master over TLS."""

    def __init__(
        self,
        binary: str,
        service: str,
        master: EmbeddedRedis,
        password: str | None,
        *,
        own_password: str | None = None,
        tls: TlsFiles | None = None,
        down_after_ms: int = 2000,
        failover_timeout_ms: int = 10000,
    ) -> None:
        # The password as EmbeddedRedis reads it for its readiness PING; it is written to the config file only.
        super().__init__(binary=binary, tls=tls, extra_args=["--requirepass", own_password] if own_password else [])
        self.service, self.master, self.master_password = service, master, password
        self.own_password = own_password
        self.down_after_ms, self.failover_timeout_ms = down_after_ms, failover_timeout_ms

    def command_line(self) -> list[str]:
        config = Path(self.data_dir, "sentinel.conf")
        listen = [f"port {self.port}"]
        if self.tls is not None:
            listen = ["port 0", *_tls_config(self.tls, self.port)]
        lines = [
            *listen,
            "bind 127.0.0.1",
            f"dir {self.data_dir}",
            f"sentinel monitor {self.service} 127.0.0.1 {self.master.port} 1",
            f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}",
            f"sentinel failover-timeout {self.service} {self.failover_timeout_ms}",
        ]
        if self.master_password:
            lines.append(f"sentinel auth-pass {self.service} {self.master_password}")
        if self.own_password:
            lines += [f"requirepass {self.own_password}", f"sentinel sentinel-pass {self.own_password}"]
        config.touch(mode=0o600)
        config.write_text("\n".join(lines) + "\n")
        return [self.binary, str(config), "--sentinel"]


class LocalSentinel:
    """One master (with ``--requirepass`` when ``password`` is given), ``replicas`` replicas of it,
    and ``sentinels`` sentinels watching it (a quorum of one: any sentinel may start a failover, which
    a majority of the sentinels must still vote for); with ``sentinel_password`` the sentinels want a
    password of their own, with ``tls`` every server listens with TLS only.

    With replicas, entering returns once every replica acknowledged the master's writes and every
    sentinel knows the replicas and the other sentinels, so a failover can start at once.
    ``down_after_ms``: how long a master may not answer before a sentinel thinks it down;
    ``failover_timeout_ms``: the sentinels' ``failover-timeout``.
    """

    def __init__(
        self,
        binary: str,
        *,
        service: str = "cameras",
        password: str | None = None,
        replicas: int = 0,
        sentinels: int = 1,
        sentinel_password: str | None = None,
        tls: TlsFiles | None = None,
        down_after_ms: int = 2000,
        failover_timeout_ms: int = 10000,
    ) -> None:
        self.service, self.password = service, password
        self.sentinel_password, self.tls = sentinel_password, tls
        auth = ["--requirepass", password, "--masterauth", password] if password else []
        auth += ["--tls-replication", "yes"] if tls is not None else []
        auth += REPLICATION_ARGS
        self.master = EmbeddedRedis(binary=binary, extra_args=auth, tls=tls)
        self.replicas = [
            EmbeddedRedis(binary=binary, extra_args=[*auth, "--replicaof", "127.0.0.1", str(self.master.port)], tls=tls)
            for _ in range(replicas)
        ]
        options = {"own_password": sentinel_password, "tls": tls}
        timeouts = {"down_after_ms": down_after_ms, "failover_timeout_ms": failover_timeout_ms}
        self.sentinels = [
            _SentinelProcess(binary, service, self.master, password, **options, **timeouts) for _ in range(sentinels)
        ]

    @property
    def sentinel(self) -> _SentinelProcess:
        return self.sentinels[0]

    def url(self, db: int = 0) -> str:
        auth = f":{self.password}@" if self.password else ""
        return self.url_as(auth, db)

    def url_as(self, credentials: str, db: int = 0, *, sentinel_user: AclUser | None = None) -> str:
        """The ``redis+sentinel://`` URL with the master's ``credentials`` (``user:password@``), and
        the sentinels' credentials (``sentinel_user``'s, else their password) and the TLS options
        as URL options."""
        scheme = "rediss+sentinel" if self.tls is not None else "redis+sentinel"
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        options = self.tls.url_options() if self.tls is not None else {}
        if sentinel_user is not None:
            options.update(sentinel_username=sentinel_user.name, sentinel_password=sentinel_user.password)
        elif self.sentinel_password:
            options["sentinel_password"] = self.sentinel_password
        query = f"?{urlencode(options)}" if options else ""
        return f"{scheme}://{credentials}{hosts}/{self.service}/{db}{query}"

    def add_user(self, user: AclUser) -> None:
        """``ACL SETUSER`` ``user`` on the master and its replicas (a promoted replica must let it in)."""
        for server in [self.master, *self.replicas]:
            with self.server_client(server) as client:
                set_user(client, user)

    def add_sentinel_user(self, user: AclUser) -> None:
        """``ACL SETUSER`` ``user`` on every sentinel (a sentinel's users are its own)."""
        for sentinel in self.sentinels:
            with self._client(sentinel.port, self.sentinel_password) as client:
                set_user(client, user)

    def server_client(self, server: EmbeddedRedis) -> redis.Redis:
        """An admin client of the master or a replica."""
        return self._client(server.port, self.password)

    def sentinel_client(self) -> redis.Redis:
        return self._client(self.sentinel.port, self.sentinel_password)

    def _client(self, port: int, password: str | None) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, password=password, **tls_options(self.tls))

    def master_port(self) -> int:
        """The port of the master the first sentinel names now."""
        with self.sentinel_client() as client:
            _host, port = client.sentinel_get_master_addr_by_name(self.service)
        return int(port)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until every replica acknowledged the master's writes (``WAIT``) and every sentinel
        knows all replicas and all other sentinels (they learn of each other through the master
        every 2 s): a failover started then has its votes and a replica in step."""
        count = len(self.replicas)
        with self.server_client(self.master) as master:
            wait_until(partial(replicas_in_step, master, count), timeout, "the replicas to be in step", 0.05)

        def sentinels_know_all() -> bool:
            for sentinel in self.sentinels:
                with self._client(sentinel.port, self.sentinel_password) as client:
                    state = client.sentinel_master(self.service)
                if (state["num-slaves"], state["num-other-sentinels"]) != (count, len(self.sentinels) - 1):
                    return False
            return True

        wait_until(sentinels_know_all, timeout, "every sentinel to know the replicas and the other sentinels", 0.1)

    def server_on(self, port: int) -> EmbeddedRedis:
        """The data server listening on ``port``."""
        return next(server for server in [self.master, *self.replicas] if server.port == port)

    def fail_over(self, timeout: float = 30.0) -> EmbeddedRedis:
        """Promote a replica (``SENTINEL FAILOVER``, once the sentinel knows a synced one) and wait until
        the old master is its replica; return the promoted server."""

        def known_replica() -> bool:
            with self.sentinel_client() as client:
                replicas = client.sentinel_slaves(self.service)
            return any(replica.get("master-link-status") == "ok" for replica in replicas)

        wait_until(known_replica, timeout, "a sentinel to see a synced replica", 0.1)
        old = self.master_port()
        with self.server_client(self.server_on(old)) as master:
            # A planned failover loses nothing: the replicas first acknowledge every write so far.
            master.execute_command("WAIT", len(self.replicas), int(timeout * 1000))
        with self.sentinel_client() as client:
            client.execute_command("SENTINEL", "FAILOVER", self.service)
        wait_until(lambda: self.master_port() != old, timeout, "the sentinel to name the promoted replica", 0.05)
        promoted = self.server_on(self.master_port())
        demoted = self.server_on(old)

        def roles_swapped() -> bool:
            with self.server_client(promoted) as new_master, self.server_client(demoted) as old_master:
                roles = (new_master.info("replication")["role"], old_master.info("replication")["role"])
            return roles == ("master", "slave")

        # Until the sentinel reconfigures the old master, it still takes writes from clients connected
        # to it (asynchronous replication's split brain): the failover is complete once it is a replica.
        wait_until(roles_swapped, timeout, "the promoted replica to be master and the old master its replica", 0.05)
        return promoted

    def __enter__(self) -> LocalSentinel:
        started: list[EmbeddedRedis] = []
        try:
            for server in [self.master, *self.replicas, *self.sentinels]:
                server.start()
                started.append(server)
            if self.replicas:
                self.wait_ready()
        except BaseException:
            for server in reversed(started):
                server.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        for server in [*self.sentinels, *self.replicas, self.master]:
            server.stop()


def _tls_config(tls: TlsFiles, port: int) -> list[str]:
    """A sentinel's configuration lines for ``tls``: :meth:`TlsFiles.server_args` as a file's lines."""
    args = tls.server_args(port)[2:]  # after "--port 0"
    lines = [f"{name.removeprefix('--')} {value}" for name, value in zip(args[::2], args[1::2], strict=True)]
    return [*lines, "tls-replication yes"]
