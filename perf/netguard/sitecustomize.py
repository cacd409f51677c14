"""Loaded (via PYTHONPATH) into the offline scenario's builds: an audit hook notes every
attempt to resolve a name or open a connection, one line each, in $APKPERF_NET_LOG.

The build also runs in a network namespace of its own (`unshare -n`), so such an attempt
fails; this log is how the scenario names the address the build tried, even when the build
swallowed the error and succeeded."""

import os
import sys

_LOG = os.environ.get("APKPERF_NET_LOG")
_WATCHED = {
    "socket.connect": lambda args: args[1],
    "socket.sendto": lambda args: args[1],
    "socket.sendmsg": lambda args: args[1],
    "socket.getaddrinfo": lambda args: (args[0], args[1]),
    "socket.gethostbyname": lambda args: args[0],
    "socket.gethostbyaddr": lambda args: args[0],
}


def _hook(event: str, args: tuple) -> None:
    where = _WATCHED.get(event)
    if where is None or _LOG is None:  # _LOG is set: the hook is only added then
        return
    line = f"{event} {where(args)!r}\n".encode()
    fd = os.open(_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


if _LOG:
    sys.addaudithook(_hook)
