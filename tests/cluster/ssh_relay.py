"""stdin/stdout <-> TCP relay, used as the SSH ``ProxyCommand`` of tests/cluster-local.yaml.

Ray's cluster launcher has no SSH-port setting (it always dials port 22); its only hook is
``auth.ssh_proxy_command``. The test's sshd listens on a free loopback port instead of 22 (22 is
privileged, shared with the other engineers of this machine, and may be in use), so the
proxy command is ``python ssh_relay.py %h PORT``. This does what ``nc %h PORT`` would, without
needing netcat on the machine.

Usage: python ssh_relay.py HOST PORT
"""

from __future__ import annotations

import os
import socket
import sys
import threading


def _pump_stdin(sock: socket.socket) -> None:
    fd = sys.stdin.fileno()
    try:
        while True:
            data = os.read(fd, 65536)
            if not data:
                break
            sock.sendall(data)
    except OSError:
        pass
    finally:
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: ssh_relay.py HOST PORT", file=sys.stderr)
        return 2
    host, port = argv[0], int(argv[1])
    sock = socket.create_connection((host, port), timeout=30)
    sock.settimeout(None)
    threading.Thread(target=_pump_stdin, args=(sock,), daemon=True).start()
    out = sys.stdout.fileno()
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                break
            view = memoryview(data)
            while view:
                view = view[os.write(out, view):]
    except OSError:
        return 1
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
