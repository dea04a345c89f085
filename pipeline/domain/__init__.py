"""The frame domain, above the broker core: what a frame is, who can process it, and what comes back.

* :mod:`.frames` — :class:`Frame`: the seed's fields, validation, staleness;
* :mod:`.keys` — every Redis key of the domain (processors, parked frames, images, counts);
* :mod:`.registry` — processors register, heartbeat and expire (TTL liveness);
* :mod:`.claim_check` — an image stored once for every copy of a frame, released with the last;
* :mod:`.results` — a result as a flat stream entry, and :class:`ResultReader`;
* :mod:`.images` — a frame's image decoded once, with Pillow;
* :mod:`.telemetry` and :mod:`.log_context` — trace context and log fields of a frame.
"""
