# stdin/stdout <-> a socket: `unix PATH [BATCH_S [WAIT_S]]` (QEMU's console and QMP, printing one
# line first so the controller knows the connection stands before it hands the stream over) or
# `tcp HOST PORT` (a proxy command into a network namespace, which must print nothing of its own).
# BATCH_S > 0 gathers what the socket gives for up to that long before writing it: a guest's hvc
# console comes 16 bytes per write, and every write would otherwise be one SSH packet for the
# controller to decrypt and dispatch (its CPU per cell). WAIT_S: how long the socket may take to
# appear and listen (the bridge may start before QEMU does, so that its own start costs no time);
# the bridge gives up at once when the controller closes its stdin.
import os, select, socket, sys, threading, time
batch = 0.0
if sys.argv[1] == "unix":
    batch = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    deadline = time.monotonic() + (float(sys.argv[4]) if len(sys.argv) > 4 else 5.0)
    early = b""
    while True:  # QEMU binds (the file appears) a moment before it listens
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(sys.argv[2])
            break
        except (ConnectionRefusedError, FileNotFoundError):
            s.close()
            if time.monotonic() > deadline:
                raise
            if select.select([0], [], [], 0.01)[0]:
                b = os.read(0, 65536)
                if not b:  # the controller went away (QEMU failed to start): nothing to connect
                    sys.exit(0)
                early += b
    os.write(1, b"ck-bridge-ok\n")
    s.sendall(early)
else:
    s = socket.create_connection((sys.argv[2], int(sys.argv[3])), timeout=10)
    s.settimeout(None)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # SSH's small packets: no Nagle delays
def up():
    while True:
        b = os.read(0, 65536)
        if not b:
            break
        s.sendall(b)
    s.shutdown(socket.SHUT_WR)
threading.Thread(target=up, daemon=True).start()
def out(b):
    while b:
        b = b[os.write(1, b):]
while True:
    b = s.recv(65536)
    if not b:
        break
    # Every write is read as it comes, only sent on at the batch's end: QEMU's console writes
    # block once the socket holds a few hundred unread 16-byte pieces (the kernel counts each at
    # its buffer's full size), stalling the guest (measured: a boot 1.2 s slower when the bridge
    # slept through its batch and drained it after).
    end = time.monotonic() + batch
    while batch and len(b) < 65536:
        left = end - time.monotonic()
        if left <= 0 or not select.select([s], [], [], left)[0]:
            break
        more = s.recv(65536)
        if not more:
            break
        b += more
    out(b)
