"""A unix socket on an SSH host, reached through sshd itself: OpenSSH's
`direct-streamlocal@openssh.com` channel (what `ssh -L local:/remote/socket` uses).

Why: the alternative is a process on the host per socket (a python3 bridge). On an emulated host
every process runs under TCG, and a python3 start costs 0.25-0.6 s there; a cell opens three
sockets (QMP, console, heartbeat). With this channel sshd connects to the socket itself and no
process is started at all.

paramiko (3.x-5.x) has no public call for this channel type, so `open_streamlocal` builds the
CHANNEL_OPEN message the way `Transport.open_channel` does, with the payload from OpenSSH's
PROTOCOL file (section 2.4: string socket path, string reserved, uint32 reserved). It leans on
paramiko's private channel bookkeeping; if that ever changes, `StreamLocalUnsupported` says so
and the caller falls back to the bridge process.
"""

from __future__ import annotations

import threading
import time

import paramiko
from paramiko.common import cMSG_CHANNEL_OPEN
from paramiko.message import Message

from ..errors import HostError

KIND = "direct-streamlocal@openssh.com"

# RFC 4254 section 5.1 reason codes in SSH_MSG_CHANNEL_OPEN_FAILURE.
ADMINISTRATIVELY_PROHIBITED = 1
CONNECT_FAILED = 2
UNKNOWN_CHANNEL_TYPE = 3


class StreamLocalUnsupported(HostError):
    """This server (or this paramiko) cannot open streamlocal channels: use a bridge process.
    Never leaves SshHost, which falls back to the bridge."""


def open_streamlocal(transport: paramiko.Transport, path: str, timeout: float) -> paramiko.Channel:
    """A channel connected to the unix socket `path` on the server.

    Raises StreamLocalUnsupported when the server says it does not know the channel type or
    prohibits it, paramiko.ChannelException(CONNECT_FAILED) when the socket is not there or not
    listening, and paramiko.SSHException when the connection is gone. OpenSSH answers a
    forwarding its configuration forbids (`AllowStreamLocalForwarding no`, `DisableForwarding
    yes`) with CONNECT_FAILED too, so only the caller can tell that from a socket not listening."""
    if not transport.active:
        raise paramiko.SSHException("SSH session not active")
    try:
        with transport.lock:
            window = transport._sanitize_window_size(None)
            packet = transport._sanitize_packet_size(None)
            chanid = transport._next_channel()
            m = Message()
            m.add_byte(cMSG_CHANNEL_OPEN)
            m.add_string(KIND)
            m.add_int(chanid)
            m.add_int(window)
            m.add_int(packet)
            m.add_string(path)
            m.add_string("")  # reserved
            m.add_int(0)  # reserved
            chan = paramiko.Channel(chanid)
            transport._channels.put(chanid, chan)
            transport.channel_events[chanid] = event = threading.Event()
            transport.channels_seen[chanid] = True
            chan._set_transport(transport)
            chan._set_window(window, packet)
    except AttributeError as e:  # paramiko's internals moved: say so, never half-work
        raise StreamLocalUnsupported(f"this paramiko ({paramiko.__version__}) cannot build the channel: {e}") from e
    transport._send_user_message(m)
    deadline = time.monotonic() + timeout
    while not event.wait(0.05):
        if not transport.active:
            raise transport.get_exception() or paramiko.SSHException("the SSH connection dropped")
        if time.monotonic() > deadline:
            raise paramiko.SSHException(f"no answer to opening a channel to {path} within {timeout:.0f}s")
    got = transport._channels.get(chanid)
    if got is not None:
        return got
    e = transport.get_exception()
    if isinstance(e, paramiko.ChannelException) and e.code in (ADMINISTRATIVELY_PROHIBITED, UNKNOWN_CHANNEL_TYPE):
        raise StreamLocalUnsupported(f"the server refuses {KIND} channels ({e.text})") from e
    raise e or paramiko.SSHException(f"cannot open a channel to {path}")
