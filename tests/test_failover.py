"""Redis failovers with real processes: frameflow follows the promoted replica without a restart.

Each test runs a scheduler, two echo processors (:mod:`tests.echo_processor`) and a camera
publishing 100 frames a second (:class:`tests.chaos.Camera`) against a Redis with replicas
(:mod:`tests.cluster`), then takes the primary away mid-run. The figures (accepted,
processed, duplicated, dropped, unreplicated, lost) are printed (``pytest -s``) and appended
to ``FRAMEFLOW_FAULT_REPORT``.

What may be lost: replication is asynchronous, so frames the primary accepted and never
sent to its replica die with it. The tests read the replica the instant its primary goes
silent (:func:`tests.failover_harness.read_replica_cut_off`) and assert that every lost
frame is one of those, and that every frame the promoted replica received, or that was
accepted after the failover, is processed.

The durable variants run the camera and the processors with ``durability="replicated"``
(:data:`DURABLE`): a publish no replica confirmed raises ``NotReplicated`` and is counted as
*not replicated*, never as accepted, and they assert ``lost == 0`` among accepted frames. The
replica lags before the kill (:func:`tests.failover_harness.lag_replica`), and the killed
server comes back as the promoted one's replica, since durable writes need one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from pipeline.streams.connection import connect
from tests.chaos import Camera, FaultFigures, Fleet, account, results_per_frame, wait_registered
from tests.cluster import LocalCluster, cluster_server_binary
from tests.failover_harness import (
    assert_all_alive,
    conclude,
    conclude_durable,
    frames_held,
    lag_replica,
    lost_frames,
    pause,
    read_replica_cut_off,
    replication,
    resume,
    wait_replicated,
)
from tests.polling import wait_until
from tests.sentinel import LocalSentinel

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

LEASE_MS = 1000
PROCESSORS = ("echo-a", "echo-b")

#: Sentinel timings: a master silent for a second is down; a stalled failover is retried after 3 s.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000

#: The camera's images: a few bytes, or 100 kB (a lagging replica's backlog then outgrows the socket buffers).
SMALL_IMAGE = b"\xff\xd8small\xff\xd9"
LARGE_IMAGE = b"\xff\xd8" + bytes(100_000) + b"\xff\xd9"

#: Cluster timing: a master silent for a second is failing; its replica then takes over.
NODE_TIMEOUT_MS = 1000

#: Frames the camera must get accepted after the failover before it stops.
AFTER_FAILOVER = 100

#: The durable tests' durability (``primary`` here shows what they catch: lost frames), and how long a
#: durable write waits for its replica: long beside a loopback replica's confirmation (well under 10 ms),
#: short enough that a publish refused while the replica lags or is missing costs little of the run.
DURABLE = "replicated"
REPLICA_TIMEOUT_MS = 250


def server_binary() -> str:
    binary = cluster_server_binary()
    if binary is None:
        pytest.fail(
            "the failover tests need redis-server 7 (apt-get install redis-server, or set FRAMEFLOW_REDIS_SERVER)"
        )
    return binary


@pytest.fixture
def sentinel() -> Iterator[LocalSentinel]:
    with LocalSentinel(
        server_binary(),
        replicas=1,
        sentinels=3,
        down_after_ms=DOWN_AFTER_MS,
        failover_timeout_ms=FAILOVER_TIMEOUT_MS,
    ) as sentinel:
        yield sentinel


def wait_promoted(sentinel: LocalSentinel) -> None:
    port = sentinel.replicas[0].port
    wait_until(lambda: sentinel.master_port() == port, 30, "the sentinels to promote the replica")


class Run:
    """The processes of one failover test on ``url``, started against ``primary``."""

    def __init__(
        self, url: str, primary: redis.Redis, log_dir: Path, *, durability: str = "primary", **camera_options: Any
    ) -> None:
        self.fleet = Fleet(url, log_dir, lease_ms=LEASE_MS)
        # The processors' acks (with their results) are as durable as the camera's publishes.
        durable = {"FRAMEFLOW_DURABILITY": durability, "FRAMEFLOW_REPLICA_TIMEOUT_MS": str(REPLICA_TIMEOUT_MS)}
        self.workers = [self.fleet.echo(processor_id, **durable) for processor_id in PROCESSORS]
        self.scheduler = self.fleet.scheduler()
        for processor_id, process in zip(PROCESSORS, self.workers, strict=True):
            wait_registered(primary, processor_id, process)
        durable_camera = {"durability": durability, "replica_timeout_ms": REPLICA_TIMEOUT_MS}
        self.camera = Camera(url, frames=100_000, interval_s=0.01, **durable_camera, **camera_options)
        self.camera.start()
        wait_until(lambda: len(results_per_frame(primary)) >= 100, 30, "the first 100 results")

    def accepted_after(self, count: int) -> None:
        """Let the camera go on until ``count`` more frames were accepted, then stop it."""
        before = len(self.camera.owed())
        wait_until(lambda: len(self.camera.owed()) >= before + count, 60, f"{count} frames accepted after the fault")
        self.camera.finish()

    def wait_processed(self, client: redis.Redis, owed: set[str]) -> None:
        wait_until(lambda: not lost_frames(owed, client), 60, lambda: f"{len(lost_frames(owed, client))} owed frames")

    def figures(self, fault: str, owed: set[str], client: redis.Redis) -> FaultFigures:
        """The fault's figures, with the camera's refused and not replicated publishes."""
        refused = len(self.camera.refused)
        return account(fault, owed, client, refused=refused, not_replicated=self.camera.not_replicated)

    def stop(self) -> None:
        self.camera.finish()
        self.fleet.stop_all()


@pytest.mark.parametrize("lagging", [False, True], ids=["replica-in-step", "replica-lagging"])
def test_sentinel_primary_sigkill_loses_only_frames_the_replica_never_received(sentinel, tmp_path, lagging) -> None:
    old = sentinel.server_client(sentinel.master)
    replica = sentinel.server_client(sentinel.replicas[0])
    # Lagging: frames of 100 kB, so that what the primary accepts while its replica does not read fills
    # the sockets' buffers and waits in the primary's own, which dies with it.
    run = Run(sentinel.url(), old, tmp_path, image=LARGE_IMAGE if lagging else SMALL_IMAGE)
    try:
        if lagging:
            # The replica stops reading for a moment (less than the sentinels' down-after time, so it
            # stays eligible for the promotion).
            pause(sentinel.replicas[0])
            paused_at = len(run.camera.owed())
            wait_until(lambda: len(run.camera.owed()) >= paused_at + 50, 10, "frames accepted while the replica lags")
        sentinel.master.kill()
        resume(sentinel.replicas[0])
        held = read_replica_cut_off(replica, killed=True)
        offset_at_kill = replication(replica).get("slave_repl_offset")
        accepted_before = set(run.camera.owed())
        unreplicated = accepted_before - held
        wait_promoted(sentinel)
        run.accepted_after(AFTER_FAILOVER)
        owed = set(run.camera.owed())
        run.wait_processed(replica, owed - unreplicated)
        fault = "Sentinel: primary SIGKILL" + (" while its replica lags" if lagging else "")
        figures = run.figures(fault, owed, replica)
        conclude(figures, owed, unreplicated, replica, replica_offset_at_kill=offset_at_kill)
        assert_all_alive([*run.workers, run.scheduler])
    finally:
        run.stop()
        old.close()
        replica.close()


def test_sentinel_primary_sigkill_with_durable_writes_loses_no_accepted_frame(sentinel, tmp_path) -> None:
    """The lagging replica's case, with the camera and the processors durable (:data:`DURABLE`): a
    publish the replica did not confirm raises ``NotReplicated`` (its caller knows: not accepted), so
    every accepted frame is on the promoted replica and is processed; duplicates allowed."""
    old = sentinel.server_client(sentinel.master)
    replica = sentinel.server_client(sentinel.replicas[0])
    run = Run(sentinel.url(), old, tmp_path, durability=DURABLE, image=LARGE_IMAGE)
    try:
        lag_replica(sentinel.replicas[0], old, run.camera)
        sentinel.master.kill()
        resume(sentinel.replicas[0])
        held = read_replica_cut_off(replica, killed=True)
        unreplicated = set(run.camera.owed()) - held
        wait_promoted(sentinel)
        # Durable writes need a replica: the killed primary comes back (as a supervisor restarts it) and
        # follows the promoted one (the sentinels would tell it to some 8 s later). Until then every
        # durable write waits its timeout and is refused.
        sentinel.master.start()
        old.execute_command("REPLICAOF", "127.0.0.1", sentinel.replicas[0].port)
        wait_replicated(replica)
        run.accepted_after(AFTER_FAILOVER)
        owed = set(run.camera.owed())
        run.wait_processed(replica, owed - unreplicated)
        figures = run.figures(f"Sentinel: primary SIGKILL while its replica lags, {DURABLE} writes", owed, replica)
        conclude_durable(figures, owed, unreplicated, replica)
        assert_all_alive([*run.workers, run.scheduler])
    finally:
        resume(sentinel.replicas[0])
        run.stop()
        old.close()
        replica.close()


def test_sentinel_partitioned_primary_takes_no_write_after_it_comes_back(sentinel, tmp_path) -> None:
    old = sentinel.server_client(sentinel.master)
    replica = sentinel.server_client(sentinel.replicas[0])
    run = Run(sentinel.url(), old, tmp_path)
    try:
        pause(sentinel.master)
        held = read_replica_cut_off(replica, killed=False)
        unreplicated = set(run.camera.owed()) - held
        wait_promoted(sentinel)
        promoted_at = len(run.camera.owed())
        wait_until(lambda: len(run.camera.owed()) >= promoted_at + 50, 30, "the promoted replica to accept frames")
        # The partition outlasts the failover timeout (a length, not a synchronisation).
        time.sleep(FAILOVER_TIMEOUT_MS / 1000)
        resume(sentinel.master)
        # While the sentinels have not yet turned it into a replica, it is a master again: read what it holds.
        seen_there: set[str] = set()

        def demoted() -> bool:
            if replication(old)["role"] == "master":
                seen_there.update(frames_held(old))
                return False
            state = replication(old)
            return state.get("master_port") == sentinel.replicas[0].port and state.get("master_link_status") == "up"

        wait_until(demoted, 60, "the old primary to become the promoted replica's replica", 0.05)
        run.accepted_after(AFTER_FAILOVER)
        owed = set(run.camera.owed())
        run.wait_processed(replica, owed - unreplicated)
        fault = "Sentinel: primary partitioned (SIGSTOP), then back"
        figures = run.figures(fault, owed, replica)
        took_after = seen_there - held
        conclude(figures, owed, unreplicated, replica, frames_the_old_primary_held_after_it_came_back=len(took_after))
        # Nothing frameflow wrote lives only on the old primary: every accepted frame it held is processed.
        assert (took_after & owed) - set(results_per_frame(replica)) <= unreplicated
        assert_all_alive([*run.workers, run.scheduler])
    finally:
        resume(sentinel.master)
        run.stop()
        old.close()
        replica.close()


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(server_binary(), replicas=1, node_timeout_ms=NODE_TIMEOUT_MS) as cluster:
        yield cluster


class ClusterFault:
    """The master of echo-a's queue (the results and echo-b's queue may live there too), its replica
    (read on a ``READONLY`` connection) and the other masters, on ``cluster``."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.victim = cluster.owner_of(key_slot(b"frames:ready:echo-a"))
        self.master = cluster.nodes[self.victim]
        self.replica_server = cluster.replicas[self.victim][0]
        others = [node for index, node in enumerate(cluster.nodes) if index != self.victim]
        self.survivors = [cluster.client_of(node) for node in others]
        self.replica = cluster.client_of(self.replica_server, single_connection=True)
        self.replica.execute_command("READONLY")  # a cluster replica answers reads only on such a connection

    def kill_master(self, camera: Camera) -> set[str]:
        """SIGKILL the master; the accepted frames neither its replica nor another master holds."""
        self.master.kill()
        resume(self.replica_server)  # if it was lagging
        held = read_replica_cut_off(self.replica, killed=True)
        held |= {frame_id for survivor in self.survivors for frame_id in frames_held(survivor)}
        unreplicated = set(camera.owed()) - held
        wait_until(
            lambda: replication(self.replica)["role"] == "master", 30, "the replica to take over its master's slots"
        )
        return unreplicated

    def close(self) -> None:
        resume(self.replica_server)
        for survivor in [*self.survivors, self.replica]:
            survivor.close()


def test_cluster_master_sigkill_loses_only_frames_its_replica_never_received(cluster, tmp_path) -> None:
    client = connect(cluster.url)
    run = Run(cluster.url, client, tmp_path)  # type: ignore[arg-type]
    fault = ClusterFault(cluster)
    try:
        unreplicated = fault.kill_master(run.camera)
        run.accepted_after(AFTER_FAILOVER)
        owed = set(run.camera.owed())
        run.wait_processed(client, owed - unreplicated)  # type: ignore[arg-type]
        figures = run.figures("Cluster: a master SIGKILL", owed, client)  # type: ignore[arg-type]
        conclude(figures, owed, unreplicated, client)  # type: ignore[arg-type]
        assert_all_alive([*run.workers, run.scheduler])
    finally:
        run.stop()
        fault.close()
        client.close()


def test_cluster_master_sigkill_with_durable_writes_loses_no_accepted_frame(cluster, tmp_path) -> None:
    """A master dies while its replica lags, the camera and the processors durable: a write its replica
    did not confirm is refused (``NotReplicated``), every accepted frame is processed."""
    client = connect(cluster.url)
    run = Run(cluster.url, client, tmp_path, durability=DURABLE, image=LARGE_IMAGE)  # type: ignore[arg-type]
    fault = ClusterFault(cluster)
    primary = cluster.client_of(fault.master)
    try:
        lag_replica(fault.replica_server, primary, run.camera)
        unreplicated = fault.kill_master(run.camera)
        # Durable writes to its slots need a replica: the killed master comes back (as a supervisor
        # restarts it), learns from the others that its replica took over, and follows it.
        fault.master.start()
        wait_replicated(fault.replica)
        run.accepted_after(AFTER_FAILOVER)
        owed = set(run.camera.owed())
        run.wait_processed(client, owed - unreplicated)  # type: ignore[arg-type]
        figures = run.figures(f"Cluster: a master SIGKILL while its replica lags, {DURABLE} writes", owed, client)  # type: ignore[arg-type]
        conclude_durable(figures, owed, unreplicated, client)  # type: ignore[arg-type]
        assert_all_alive([*run.workers, run.scheduler])
    finally:
        run.stop()
        fault.close()
        primary.close()
        client.close()
