"""A Redis Cluster for tests: three masters on loopback ports, optionally a replica each (and a Sentinel set-up).

Each node is an :class:`~pipeline.streams.embedded.EmbeddedRedis` (so it dies with the
test session, ``PR_SET_PDEATHSIG`` included) started with ``--cluster-enabled``
and a cluster bus port of its own. The slots are split in three ranges with
``CLUSTER ADDSLOTS``, the nodes meet each other with ``CLUSTER MEET``, replicas
follow their master with ``CLUSTER REPLICATE``, and :meth:`LocalCluster.start`
returns once every node says ``cluster_state:ok`` and every replica holds its master's data.

Replicas take their first copy through a file (``--repl-diskless-sync no``): with a
diskless first sync Redis 7.0 waits ``repl-diskless-sync-delay`` (5 s) for more replicas,
and with a delay of 0 a replica was seen reporting its link up at offset 0, having never
received a write. Fixtures wait for ``WAIT`` to count every replica before a test starts.

The Sentinel set-up is :mod:`tests.sentinel`. Both need the system's ``redis-server`` (Debian's 7.0 at
``/usr/bin/redis-server``, or ``FRAMEFLOW_REDIS_SERVER``); without one the test
that asks for a cluster fails with a message saying so.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from functools import partial
from typing import Any
from urllib.parse import urlencode

import redis

from pipeline.streams.embedded import AclUser, EmbeddedRedis, TlsFiles, free_port
from tests.polling import wait_until

#: Redis Cluster's number of hash slots.
SLOTS = 16384

#: Arguments every node that has, or may get, replicas runs with (see the module docstring).
REPLICATION_ARGS = ("--repl-diskless-sync", "no")


def cluster_server_binary() -> str | None:
    """The ``redis-server`` to build a cluster from: ``FRAMEFLOW_REDIS_SERVER``, else the one on PATH."""
    return os.environ.get("FRAMEFLOW_REDIS_SERVER") or shutil.which("redis-server")


class LocalCluster:
    """Three (``masters``) cluster-enabled ``redis-server`` processes owning all slots, each with
    ``replicas`` replicas.

    Parameters:
      binary: the ``redis-server`` to run.
      masters: how many masters share the slots.
      replicas: how many replicas each master has (a killed master's replica takes over its slots
        once the others have not heard from it for ``node_timeout_ms``).
      node_timeout_ms: ``cluster-node-timeout``.
      extra_args: more ``redis-server`` arguments for every node (``--requirepass`` ...).
      tls: every node listens with TLS only, the cluster bus too (``rediss+cluster://``).
    """

    def __init__(
        self,
        binary: str,
        *,
        masters: int = 3,
        replicas: int = 0,
        node_timeout_ms: int = 5000,
        extra_args: Sequence[str] = (),
        tls: TlsFiles | None = None,
    ) -> None:
        tls_args = ["--tls-cluster", "yes", "--tls-replication", "yes"] if tls is not None else []

        def node() -> EmbeddedRedis:
            # Every port differs from the others chosen (all are free now, none bound before start).
            port, bus_port = self._new_port(), self._new_port()
            arguments = [*_cluster_args(bus_port, node_timeout_ms), *REPLICATION_ARGS, *tls_args, *extra_args]
            self._bus_ports[port] = bus_port
            return EmbeddedRedis(port=port, binary=binary, tls=tls, extra_args=arguments)

        self._bus_ports: dict[int, int] = {}
        self._chosen_ports: set[int] = set()
        #: The masters the cluster starts with (index = the ``index`` of :meth:`node_client`).
        self.nodes = [node() for _ in range(masters)]
        #: ``replicas[i]`` follow ``nodes[i]`` at the start.
        self.replicas = [[node() for _ in range(replicas)] for _ in range(masters)]
        self.tls = tls
        self._password = _argument(extra_args, "--requirepass")

    def _new_port(self) -> int:
        port = free_port()
        while port in self._chosen_ports:
            port = free_port()
        self._chosen_ports.add(port)
        return port

    @property
    def servers(self) -> list[EmbeddedRedis]:
        """Every node, masters first."""
        return [*self.nodes, *(replica for group in self.replicas for replica in group)]

    @property
    def url(self) -> str:
        """The cluster's ``redis+cluster://`` URL, every master as a startup node."""
        auth = f":{self._password}@" if self._password else ""
        return self.url_as(auth)

    def url_as(self, credentials: str) -> str:
        """The cluster's URL with ``credentials`` (``user:password@``, quoted), TLS options included."""
        scheme = "rediss+cluster" if self.tls is not None else "redis+cluster"
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)
        query = f"?{urlencode(self.tls.url_options())}" if self.tls is not None else ""
        return f"{scheme}://{credentials}{hosts}/{query}"

    def add_user(self, user: AclUser) -> None:
        """``ACL SETUSER`` ``user`` with its rules on every master (ACL users are per node)."""
        for index in range(len(self.nodes)):
            with self.node_client(index) as client:
                set_user(client, user)

    def node_client(self, index: int) -> redis.Redis:
        """A plain client of one master (cluster commands, ``FLUSHALL``, faults)."""
        return self.client_of(self.nodes[index])

    def client_of(self, server: EmbeddedRedis, *, single_connection: bool = False) -> redis.Redis:
        """A plain client of any node (on one connection: for ``READONLY`` on a replica)."""
        return redis.Redis(
            host="127.0.0.1",
            port=server.port,
            password=self._password,
            single_connection_client=single_connection,
            **tls_options(self.tls),
        )

    def node_id(self, index: int) -> str:
        with self.node_client(index) as client:
            return client.execute_command("CLUSTER", "MYID").decode()

    def start(self, timeout: float = 20.0) -> LocalCluster:
        """Start the nodes, give each master a third of the slots, join them, make the replicas
        follow their masters, wait for ``cluster_state:ok`` and for every replica to be in step."""
        for server in self.servers:
            server.start()
        bounds = [round(SLOTS * index / len(self.nodes)) for index in range(len(self.nodes) + 1)]
        for index in range(len(self.nodes)):
            with self.node_client(index) as client:
                client.execute_command("CLUSTER", "ADDSLOTS", *range(bounds[index], bounds[index + 1]))
        with self.node_client(0) as first:
            for server in self.servers[1:]:
                first.execute_command("CLUSTER", "MEET", "127.0.0.1", server.port, self._bus_ports[server.port])
        wait_until(self._healthy, timeout, lambda: f"cluster_state:ok on every node ({self._states()})", 0.05)
        for index, group in enumerate(self.replicas):
            master_id = self.node_id(index)
            for replica in group:
                with self.client_of(replica) as client:
                    # A replica can follow a master only once it knows it (the MEET spreads by gossip).
                    wait_until(
                        partial(_knows_node, client, master_id),
                        timeout,
                        f"node {replica.port} to learn of master {index}",
                        0.05,
                    )
                    client.execute_command("CLUSTER", "REPLICATE", master_id)
        self.wait_in_step(timeout)
        wait_until(self._healthy, timeout, lambda: f"cluster_state:ok on every node ({self._states()})", 0.05)
        return self

    def wait_in_step(self, timeout: float = 20.0) -> None:
        """Wait until every starting master's replicas acknowledged its writes (``WAIT``)."""
        for index, group in enumerate(self.replicas):
            if group:
                with self.node_client(index) as client:
                    wait_until(
                        partial(replicas_in_step, client, len(group)),
                        timeout,
                        f"the replicas of master {index} to be in step",
                        0.05,
                    )

    def _states(self) -> list[str]:
        states = []
        for server in self.servers:
            if server.process is None or server.process.poll() is not None:
                continue  # killed by the test
            with self.client_of(server) as client:
                info = client.execute_command("CLUSTER", "INFO").decode()
            fields = dict(line.split(":", 1) for line in info.split() if ":" in line)
            states.append(f"{fields.get('cluster_state')}/{fields.get('cluster_known_nodes')}")
        return states

    def _healthy(self) -> bool:
        return all(state == f"ok/{len(self.servers)}" for state in self._states())

    def flush(self) -> None:
        """Empty every master (``FLUSHALL`` on each; the cluster client's ``flushdb`` does the same)."""
        for server in self.servers:
            with self.client_of(server) as client:
                if client.info("replication")["role"] == "master":
                    client.flushall()

    def migrate_slot(self, slot: int, source: int, target: int) -> None:
        """Move ``slot`` and its keys from master ``source`` to master ``target``, as
        ``redis-cli --cluster reshard`` does; clients that knew the old owner get ``MOVED``."""
        source_id, target_id = self.node_id(source), self.node_id(target)
        with self.node_client(source) as old, self.node_client(target) as new:
            new.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
            old.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
            while keys := old.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
                auth = ("AUTH", self._password) if self._password else ()
                old.execute_command("MIGRATE", "127.0.0.1", self.nodes[target].port, "", 0, 5000, *auth, "KEYS", *keys)
            for index in range(len(self.nodes)):
                with self.node_client(index) as client:
                    client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)

    def owner_of(self, slot: int) -> int:
        """The index of the master that serves ``slot``, as master 0 sees the cluster."""
        with self.node_client(0) as client:
            for start, end, (_, port, *_rest), *_replicas in client.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return [node.port for node in self.nodes].index(int(port))
        raise AssertionError(f"no master serves slot {slot}")

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def __enter__(self) -> LocalCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def set_user(client: redis.Redis, user: AclUser) -> None:
    """``ACL SETUSER`` ``user`` (from scratch: ``reset``) on the server of ``client``."""
    client.execute_command("ACL", "SETUSER", user.name, "reset", "on", f">{user.password}", *user.rules)


def tls_options(tls: TlsFiles | None) -> dict[str, Any]:
    """redis-py's options for a client of a server that has ``tls``."""
    if tls is None:
        return {}
    options = tls.url_options()
    return {
        "ssl": True,
        "ssl_ca_certs": options["ssl_ca_certs"],
        "ssl_certfile": options.get("ssl_certfile"),
        "ssl_keyfile": options.get("ssl_keyfile"),
    }


def replicas_in_step(master: redis.Redis, count: int) -> bool:
    """Whether ``count`` replicas acknowledge every write ``master`` took so far (``WAIT``, 100 ms)."""
    return int(master.execute_command("WAIT", count, 100)) >= count


def _knows_node(client: redis.Redis, node_id: str) -> bool:
    return node_id.encode() in client.execute_command("CLUSTER", "NODES")


def _cluster_args(bus_port: int, node_timeout_ms: int) -> list[str]:
    return [
        "--cluster-enabled", "yes",
        "--cluster-config-file", "nodes.conf",
        "--cluster-port", str(bus_port),
        "--cluster-node-timeout", str(node_timeout_ms),
    ]  # fmt: skip


def _argument(arguments: Sequence[str], name: str) -> str | None:
    return arguments[list(arguments).index(name) + 1] if name in arguments else None
