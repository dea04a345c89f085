"""The edge where the original system's frames come in: ``frameflow ingest`` reads detektr's
``frames:metadata`` stream and routes each entry through ``FrameProducer.publish``
(:mod:`.mapping` maps an entry, :mod:`.service` reads, acknowledges and dead-letters)."""
