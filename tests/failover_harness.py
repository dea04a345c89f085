"""Helpers for the failover tests (``tests/test_failover.py``): what a replica holds, and the table.

Redis replication is asynchronous: a write the primary acknowledged may not have reached
its replica when the primary dies, and a failover then loses it. To tell that loss from a
loss of frameflow's own, the tests read the replica at the instant it stops hearing from its
primary (before any sentinel or cluster promotes it, so nothing new has arrived yet):
:func:`frames_held` lists every frame it holds, queued, parked or with a result. A frame
``publish`` accepted before the fault and absent there is *unreplicated*; a frame present
there is owed a result like any other, and so is every frame accepted after the failover.

:func:`print_table` prints each fault's figures (``pytest -s`` shows them), and
:meth:`tests.chaos.FaultFigures.record` appends them to ``FRAMEFLOW_FAULT_REPORT``.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable
from functools import partial

import redis

from pipeline.errors import MalformedEntry
from pipeline.streams.wire import decode_entry
from tests.chaos import RESULT_STREAM, Camera, FaultFigures, results_per_frame
from tests.cluster import replicas_in_step
from tests.polling import holds_for, wait_until
from tests.processes import WorkerProcess


def frames_held(client: redis.Redis, namespace: str = "frameflow") -> set[str]:
    """The frame ids a server holds: queued on a processor queue, parked, or with a result. Only
    the keys the server has are read (``SCAN``), so on a cluster node it reads its own slots."""
    held: set[str] = set()
    if any(client.scan_iter(match=RESULT_STREAM)):
        held.update(results_per_frame(client, RESULT_STREAM))
    keys = [*client.scan_iter(match="frames:ready:*", _type="stream"), *client.scan_iter(match=f"{namespace}:parked:*")]
    for key in keys:
        for _, fields in client.xrange(key):
            try:
                held.add(str(decode_entry(fields).args[0]["frame_id"]))
            except (MalformedEntry, LookupError, TypeError):
                continue  # not a frame
    return held


def replication(client: redis.Redis) -> dict[str, object]:
    return dict(client.info("replication"))


def read_replica_cut_off(replica: redis.Redis, *, killed: bool) -> set[str]:
    """What ``replica`` holds once its primary stopped sending: after a kill, once the replica saw
    its link go down (it applied every byte that was on its way); after a pause (SIGSTOP: the
    link stays up), once its replication offset stopped moving. Fails if the replica was
    promoted meanwhile (the read would include new writes)."""
    if killed:
        wait_until(lambda: replication(replica).get("master_link_status") == "down", 10, "the replica to lose its link")
    else:
        offsets = [replication(replica).get("slave_repl_offset")]

        def unchanged() -> bool:
            offsets.append(replication(replica).get("slave_repl_offset"))
            return offsets[-1] == offsets[-2]

        holds_for(unchanged, 0.3, "the replica's offset to stay still")
    held = frames_held(replica)
    assert replication(replica)["role"] == "slave", "the replica was promoted before it could be read"
    return held


def unsent_to_replicas(primary: redis.Redis) -> int:
    """Bytes ``primary`` holds in its own memory for its replicas (their output buffers): written
    to it, not yet to the sockets, so a kill loses them."""
    return sum(int(client["omem"]) for client in primary.client_list(_type="replica"))


#: What a lagging replica leaves in its primary's memory: ten frames of 100 kB (a moment's output is
#: held there between two writes to the socket even when the replica keeps up).
LAG_BYTES = 1_000_000


def lag_replica(replica: object, primary: redis.Redis, camera: Camera, *, refusals: int = 2) -> None:
    """Pause ``replica`` (SIGSTOP) until ``primary`` holds :data:`LAG_BYTES` of writes for it in its own
    memory (what a kill then loses), or until the camera had ``refusals`` publishes refused as not
    replicated (a durable camera waits for the replica, so it writes little meanwhile); it stays paused."""
    pause(replica)
    wait_until(
        lambda: unsent_to_replicas(primary) >= LAG_BYTES or camera.not_replicated >= refusals,
        20,
        "the primary to hold writes its paused replica has not read",
        0.02,
    )


def wait_replicated(master: redis.Redis) -> None:
    """Wait until ``master`` has a replica in step (``WAIT 1``): durable writes can be confirmed again."""
    wait_until(partial(replicas_in_step, master, 1), 60, "the new master to have a replica in step", 0.1)


def pause(server: object) -> None:
    """SIGSTOP a server (a network partition as its clients see it: connections open, no answers)."""
    os.kill(_pid(server), signal.SIGSTOP)


def resume(server: object) -> None:
    os.kill(_pid(server), signal.SIGCONT)


def _pid(server: object) -> int:
    process = getattr(server, "process", None)
    assert process is not None, f"{server!r} is not running"
    return int(process.pid)


def lost_frames(owed: Iterable[str], client: redis.Redis) -> set[str]:
    """The owed frames without a result on ``client`` (the failover tests drop nothing: no bound, no age)."""
    results = results_per_frame(client)
    return {frame_id for frame_id in owed if not results[frame_id]}


def assert_all_alive(processes: Iterable[WorkerProcess]) -> None:
    """The same processes run after the fault: frameflow followed the failover without a restart."""
    for process in processes:
        assert process.alive(), f"{process!r} died:\n{process.log_tail()}"


COLUMNS = (
    "fault", "accepted", "refused", "not replicated", "processed", "duplicated", "dropped", "unreplicated", "lost",
)  # fmt: skip


def print_table(figures: FaultFigures, **notes: object) -> None:
    """Print the fault's figures as a table (``pytest -s``) and record them (``FRAMEFLOW_FAULT_REPORT``)."""
    dropped = sum(figures.dropped.values())
    values = (figures.fault, figures.accepted, figures.refused, figures.not_replicated, figures.processed)
    values += (figures.duplicated, dropped)
    cells = [str(value) for value in (*values, figures.unreplicated, figures.lost)]
    widths = [max(len(name), len(cell)) for name, cell in zip(COLUMNS, cells, strict=True)]
    print()
    print(" | ".join(name.ljust(width) for name, width in zip(COLUMNS, widths, strict=True)))
    print(" | ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)))
    for name, value in notes.items():
        print(f"  {name}: {value}")
    figures.record()


def conclude(
    figures: FaultFigures, owed: set[str], unreplicated: set[str], client: redis.Redis, **notes: object
) -> None:
    """Count, print and record the fault's figures, then assert frameflow's promise through a failover:
    a lost frame (accepted, no result) is one the promoted replica never received.

    ``lost`` is counted here by frame: a frame may be both processed and dropped as ``image_expired``
    (processed on the old primary, whose result and image release reached the replica but whose ack,
    a round trip later, did not: delivered again, it finds its image gone), which is no loss; any
    other drop is a failure, as these tests bound nothing and nothing goes stale.
    """
    lost = lost_frames(owed, client)
    figures.unreplicated, figures.lost = len(unreplicated), len(lost)
    print_table(figures, **notes)
    assert lost <= unreplicated, f"frames the promoted replica received were lost: {sorted(lost - unreplicated)}"
    assert set(figures.dropped) <= {"image_expired"}, figures


def conclude_durable(
    figures: FaultFigures, owed: set[str], unreplicated: set[str], client: redis.Redis, **notes: object
) -> None:
    """:func:`conclude`, then the promise of durable writes: every accepted frame reached the replica
    (a publish no replica confirmed raised ``NotReplicated`` instead), so none is lost."""
    conclude(figures, owed, unreplicated, client, **notes)
    assert figures.lost == 0, f"{figures.lost} accepted frame(s) lost: {figures}"
    assert not unreplicated, f"{len(unreplicated)} accepted frame(s) never reached the replica: {figures}"
