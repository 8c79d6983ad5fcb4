"""The test bed's stand-in for a network route to an SSH test host: run inside the host's network
namespace with a listening socket inherited from the root namespace (127.0.0.1), it connects each
accepted client to ADDRESS:PORT inside the namespace and copies bytes both ways.

    ip netns exec NS python3 -I loopback_relay.py LISTEN_FD ADDRESS PORT

Why not the inventory's proxy command: a proxy command is the controller's child, so a benchmark
of the controller's own CPU counted this copying, which a farm's controller (talking TCP to its
hosts) never does. One process and one selector loop for every connection; it ends when its
stdin closes (the test bed holds the other end) or on SIGTERM.
"""

from __future__ import annotations

import selectors
import socket
import sys


def main() -> int:
    fd, address, port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    listener = socket.socket(fileno=fd)
    listener.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, "accept")
    sel.register(sys.stdin, selectors.EVENT_READ, "stdin")
    peer: dict[socket.socket, socket.socket] = {}

    def drop(s: socket.socket) -> None:
        for x in (s, peer.pop(s, None)):
            if x is not None:
                peer.pop(x, None)
                sel.unregister(x)
                x.close()

    while True:
        for key, _ in sel.select():
            if key.data == "stdin":
                return 0
            if key.data == "accept":
                try:
                    client, _ = listener.accept()
                except BlockingIOError:
                    continue
                try:
                    server = socket.create_connection((address, port), timeout=10)
                except OSError as e:
                    print(f"relay: {address}:{port}: {e}", file=sys.stderr)
                    client.close()
                    continue
                for s in (client, server):
                    s.setblocking(True)  # small writes: the peer's buffer is never the bottleneck here
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    sel.register(s, selectors.EVENT_READ, "data")
                peer[client], peer[server] = server, client
                continue
            s = key.fileobj
            if s not in peer:
                continue  # dropped earlier in this round with its peer
            try:
                data = s.recv(65536)
            except OSError:
                data = b""
            if not data:
                drop(s)
                continue
            try:
                peer[s].sendall(data)
            except OSError:
                drop(s)


if __name__ == "__main__":
    sys.exit(main())
