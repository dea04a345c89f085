"""The processes, above the middleware they assemble: processors, producers and the scheduler.

* :mod:`.processor` — :class:`ProcessorClient`, the seed's API on a Dramatiq worker; its frame's
  checks in :mod:`.intake`, its ack in :mod:`.frame_ack`, batching in :mod:`.batching`, its life
  under Dramatiq's CLI in :mod:`.lifecycle` and :mod:`.launch`, its numbers in :mod:`.processor_stats`;
* :mod:`.producer` — :class:`FrameProducer`: how cameras publish frames;
* :mod:`.scheduler` — health stream, reaping dead processors, dead-letter trimming, parked frames;
* :mod:`.heartbeat` — the registry refresh job; :mod:`.health` — ``/health`` and ``/metrics``;
  :mod:`.queue_metrics` — the scheduler's view of every queue for Prometheus.
"""
