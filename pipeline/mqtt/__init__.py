"""``frameflow mqtt``: results to an MQTT broker and Home Assistant.

An edge of the pipeline (see DESIGN.md's layers): it reads result streams through a
consumer group and publishes track events, counts, snapshots, availability and Home
Assistant discovery. Nothing in frameflow imports this package except the CLI's one
registration line, and paho-mqtt (the ``mqtt`` extra) is imported only here.
"""
