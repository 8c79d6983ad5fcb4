# stdin/stdout <-> a socket: `unix PATH` (QEMU's console and QMP, printing one line first so the
# controller knows the connection stands before it hands the stream over) or `tcp HOST PORT`
# (a proxy command into a network namespace, which must print nothing of its own).
import os, socket, sys, threading
if sys.argv[1] == "unix":
    import time
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
while True:
    b = s.recv(65536)
    if not b:
        break
    os.write(1, b)
