"""A real RTSP camera for the tests: GStreamer's RTSP server streaming H.264 on 127.0.0.1.

Run by the **system** ``python3`` (PyGObject and GStreamer come from Debian's packages, which
``scripts/ensure-gstreamer`` installs), never imported by the tests: :mod:`tests.cameras` starts it
as a child process, SIGKILLs it to cut a stream, SIGSTOPs it to stall one (the server's sockets stay
open, no packet leaves). ``python3 tests/rtsp_server.py --port 8554`` serves
``rtsp://127.0.0.1:8554/cam`` (``rtsp://USER:PASSWORD@...`` with ``--credentials USER:PASSWORD``).
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="an H.264 test pattern over RTSP on 127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/cam")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--gop", type=int, default=30, help="frames from one key frame to the next")
    parser.add_argument("--pattern", default="ball", help="videotestsrc's pattern (ball: a ball on black)")
    parser.add_argument("--motion", type=int, default=0, help="pixels the pattern moves each frame")
    parser.add_argument("--tcp-only", action="store_true", help="refuse RTP over UDP")
    parser.add_argument("--credentials", metavar="USER:PASSWORD", help="require Basic authentication")
    args = parser.parse_args(argv)

    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f"( videotestsrc is-live=true pattern={args.pattern} horizontal-speed={args.motion} "
        f"! video/x-raw,width={args.width},height={args.height},framerate={args.fps}/1 "
        f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={args.gop} "
        f"! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )
    factory.set_shared(True)
    if args.tcp_only:
        gi.require_version("GstRtsp", "1.0")
        from gi.repository import GstRtsp

        factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP)
    if args.credentials:
        user, _, password = args.credentials.partition(":")
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, user)
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
        server.set_auth(auth)
        permissions = GstRtspServer.RTSPPermissions()
        for permission in (
            GstRtspServer.RTSP_PERM_MEDIA_FACTORY_ACCESS,
            GstRtspServer.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT,
        ):
            permissions.add_permission_for_role(user, permission, True)
        factory.set_permissions(permissions)
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        print(f"cannot serve RTSP on 127.0.0.1:{args.port}", file=sys.stderr)
        return 1
    print(f"serving rtsp://127.0.0.1:{args.port}{args.path}", flush=True)
    GLib.MainLoop().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
