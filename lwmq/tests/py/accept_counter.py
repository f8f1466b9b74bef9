"""A libzmq (pyzmq) socket that counts the connections it accepts, for lwmq's tests of
what happens against an incompatible libzmq peer.

    accept_counter.py TYPE [plain]

Binds a socket of TYPE (PUB, REP, ...) on tcp://127.0.0.1:*, with "plain" as a PLAIN
server accepting only "admin" / "secret" (through a ZAP handler), prints "ENDPOINT <uri>",
then counts ACCEPTED monitor events. Each line "COUNT" on stdin is answered with
"ACCEPTED <n>" (every connection accepted so far); it exits when stdin closes.
"""

import select
import sys

import zmq
from zmq.utils.monitor import recv_monitor_message


def main():
    ctx = zmq.Context()
    plain = sys.argv[2:] == ["plain"]
    if plain:
        from zmq.auth.thread import ThreadAuthenticator

        auth = ThreadAuthenticator(ctx)
        auth.start()
        auth.configure_plain(domain="*", passwords={"admin": "secret"})
    s = ctx.socket(getattr(zmq, sys.argv[1]))
    s.linger = 0
    s.plain_server = plain
    s.bind("tcp://127.0.0.1:*")
    mon = s.get_monitor_socket(zmq.EVENT_ACCEPTED)
    print("ENDPOINT", s.getsockopt_string(zmq.LAST_ENDPOINT), flush=True)
    accepted = 0
    poller = zmq.Poller()
    poller.register(mon, zmq.POLLIN)
    poller.register(sys.stdin, zmq.POLLIN)
    while True:
        for sock, _ in poller.poll():
            if sock is mon:
                recv_monitor_message(mon)
                accepted += 1
            else:
                line = sys.stdin.readline()
                if not line:
                    return
                # Count what the monitor has already seen before answering.
                while mon.poll(0):
                    recv_monitor_message(mon)
                    accepted += 1
                print("ACCEPTED", accepted, flush=True)


if __name__ == "__main__":
    main()
