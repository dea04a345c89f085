"""``frameflow mqtt``: the click command that runs the bridge (or forgets a camera).

Importing this module imports neither paho-mqtt nor the bridge, so ``frameflow`` works without
the ``mqtt`` extra; running the command without it says what to install, in one line.
"""

from __future__ import annotations

import importlib.util
import logging
import signal
import sys
from typing import Any

import click

from pipeline.errors import FrameflowError

logger = logging.getLogger(__name__)


@click.command("mqtt")
@click.option("--mqtt-url", metavar="URL", help="The broker [default: MQTT_URL, else mqtt://127.0.0.1:1883].")
@click.option("--prefix", help="First level of every topic [default: FRAMEFLOW_MQTT_PREFIX, else frameflow].")
@click.option("--discovery-prefix", help="Home Assistant's discovery prefix; '' for none [default: homeassistant].")
@click.option("--gap", "gap_s", type=float, help="Seconds a label may go unseen before its track ends [default: 5].")
@click.option("--mapping", "mapping_file", type=click.Path(dir_okay=False), help="YAML mapping of results to labels.")
@click.option("--group", help="Consumer group on the result streams [default: mqtt-bridge].")
@click.option("--consumer", help="This bridge's consumer name; keep it stable across restarts [default: bridge-1].")
@click.option("--client-id", help="MQTT client id [default: frameflow-bridge].")
@click.option(
    "--wait-for-mqtt",
    "wait_for_mqtt_s",
    type=click.FloatRange(min=0),
    help="Give up after this many seconds (0: never).",
)
@click.option("--from-beginning", is_flag=True, help="A new consumer group starts at each stream's first entry.")
@click.option("--metrics-port", type=click.IntRange(min=0), help="Serve /health and /metrics on this port (0: any).")
@click.option("--forget", "forget", metavar="CAMERA", help="Remove CAMERA's entities and retained states, then exit.")
@click.pass_context
def mqtt(
    context: click.Context, forget: str | None, from_beginning: bool, metrics_port: int | None, **options: Any
) -> None:
    """Publish result streams to an MQTT broker: track events, counts, snapshots, Home Assistant discovery.

    At least once: a result is acknowledged in Redis only after the broker acknowledged (QoS 1)
    everything it caused. Runs until SIGINT or SIGTERM.
    """
    if importlib.util.find_spec("paho") is None:
        raise click.ClickException("frameflow mqtt needs paho-mqtt: pip install 'frameflow[mqtt]'")
    from .errors import MqttConfigError
    from .mapping import CAMERA, ResultMapping
    from .settings import MqttSettings

    obj = context.obj
    try:
        settings = MqttSettings.from_env(
            url=options["mqtt_url"],
            prefix=options["prefix"],
            discovery_prefix=options["discovery_prefix"],
            gap_s=options["gap_s"],
            mapping_file=options["mapping_file"],
            group=options["group"],
            consumer=options["consumer"],
            client_id=options["client_id"],
            wait_for_mqtt_s=options["wait_for_mqtt_s"],
        )
    except MqttConfigError as error:
        raise click.ClickException(str(error)) from None
    if forget is not None:
        if not CAMERA.fullmatch(forget):
            raise click.ClickException(f"{forget!r} is not a camera id")
        from .forget import forget_camera

        cleared = forget_camera(settings, forget)
        click.echo(f"forgot camera {forget}: {len(cleared)} retained message(s) cleared on {settings.url.masked}")
        return
    mapping = ResultMapping.from_file(settings.mapping_file) if settings.mapping_file else ResultMapping.default()
    _run(obj, settings, mapping, from_beginning=from_beginning, metrics_port=metrics_port)


def _run(obj: Any, settings: Any, mapping: Any, *, from_beginning: bool, metrics_port: int | None) -> None:
    from pipeline.processes.health import HealthServer
    from pipeline.settings import Settings

    from .bridge import Bridge

    if not obj.debug:
        logging.getLogger().setLevel(logging.INFO)
    bridge = Bridge(obj.client(), settings, mapping, namespace=obj.namespace, from_beginning=from_beginning)
    signal.signal(signal.SIGTERM, lambda *_: bridge.stop())
    signal.signal(signal.SIGINT, lambda *_: bridge.stop())
    server = None
    if metrics_port is not None:
        server = HealthServer(
            bridge.health, metrics_port, Settings.from_env().health_host, registry=bridge.metrics.registry
        )
        server.start()
    click.echo(
        f"frameflow mqtt: {', '.join(mapping.streams)} on {obj.masked_url} to {settings.url.masked}"
        + (f", metrics at http://{server.host}:{server.port}/metrics" if server is not None else "")
    )
    sys.stdout.flush()
    try:
        bridge.run()
    except FrameflowError:
        raise
    finally:
        if server is not None:
            server.stop()
    click.echo("frameflow mqtt stopped")
