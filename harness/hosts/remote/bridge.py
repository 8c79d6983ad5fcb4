# stdin/stdout <-> a socket: `unix PATH [BATCH_S]` (QEMU's console and QMP, printing one line
# first so the controller knows the connection stands before it hands the stream over) or
# `tcp HOST PORT` (a proxy command into a network namespace, which must print nothing of its own).
# BATCH_S > 0 gathers what the socket gives for up to that long before writing it: a guest's hvc
# console comes 16 bytes per write, and every write would otherwise be one SSH packet for the
# controller to decrypt and dispatch (its CPU per cell).
import os, socket, sys, threading, time
batch = 0.0
if sys.argv[1] == "unix":
    batch = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    deadline = time.monotonic() + 5
    while True:  # QEMU binds (the file appears) a moment before it listens
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(sys.argv[2])
            break
        except ConnectionRefusedError:
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)
    os.write(1, b"ck-bridge-ok\n")
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
ended = False
while not ended:
    b = s.recv(65536)
    if not b:
        break
    if batch:
        # The batch is a span of time, not a condition: what the guest writes within it goes
        # with its first bytes, taken in one wake-up instead of one per write.
        time.sleep(batch)
        parts = [b]
        try:
            while True:
                more = s.recv(1 << 20, socket.MSG_DONTWAIT)
                if not more:
                    ended = True
                    break
                parts.append(more)
        except BlockingIOError:
            pass
        b = b"".join(parts)
    out(b)
