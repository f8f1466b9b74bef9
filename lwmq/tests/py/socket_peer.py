"""A libzmq (pyzmq) peer for lwmq's interop tests, driven by its arguments.

    socket_peer.py TYPE bind|connect ENDPOINT ROLE COUNT

TYPE is a ZeroMQ socket type (REQ, REP, ...). ROLE is one of
  echo          receive COUNT messages, send each back unchanged
  client        send message i, expect it back unchanged (COUNT times)
  client-delim  the same with an empty delimiter frame in front (DEALER talking to REP)
  pub           send probes until "GO" arrives on stdin, then the COUNT messages
  sub           subscribe to everything, print SUBSCRIBED at the first probe, then
                expect the COUNT messages in order
  push          send the COUNT messages
  pull          expect the COUNT messages in order
A ROLE may end in "+plain": the socket is then a PLAIN server that accepts only the
user "admin" with password "secret" (through a ZAP handler), e.g. "echo+plain". A ROLE
may end in "+curve": the socket uses CURVE with the secret key in $LWMQ_CURVE_SECRET, as
a client of the server key in $LWMQ_CURVE_SERVERKEY when that is set, else as a server.

Message i is `message(i)` below (the Rust side builds the same): its index, an empty
frame, a short frame, and every 1000th message a 1 MiB frame. Prints "ENDPOINT <uri>"
once bound or connected, and "OK" after a verifying role succeeded; exits non-zero with
the reason on stderr otherwise.
"""

import select
import sys

import zmq

BIG = bytes(k % 251 for k in range(1 << 20))


def message(i):
    frames = [str(i).encode(), b"", bytes([i % 256]) * (i % 50)]
    if i % 1000 == 0:
        r = i % 251
        frames.append(BIG[r:] + BIG[:r])
    return frames


def fail(why):
    sys.stderr.write("socket_peer.py: %s\n" % why)
    sys.exit(1)


def describe(frames):
    return [f if len(f) < 64 else b"<%d bytes>" % len(f) for f in frames]


def expect(got, want, i):
    if got != want:
        fail("message %d differs: got %r, want %r" % (i, describe(got), describe(want)))


def main():
    stype, mode, endpoint, role, count = sys.argv[1:6]
    count = int(count)
    ctx = zmq.Context()
    auth = None
    if role.endswith("+plain"):
        role = role[: -len("+plain")]
        from zmq.auth.thread import ThreadAuthenticator

        auth = ThreadAuthenticator(ctx)
        auth.start()
        auth.configure_plain(domain="*", passwords={"admin": "secret"})
    curve = role.endswith("+curve")
    if curve:
        role = role[: -len("+curve")]
    s = ctx.socket(getattr(zmq, stype))
    if auth is not None:
        s.plain_server = True
    if curve:
        import os

        secret = os.environ["LWMQ_CURVE_SECRET"].encode()
        s.curve_secretkey = secret
        s.curve_publickey = zmq.curve_public(secret)
        server = os.environ.get("LWMQ_CURVE_SERVERKEY")
        if server:
            s.curve_serverkey = server.encode()
        else:
            s.curve_server = True
    s.sndhwm = 0
    s.rcvhwm = 0
    if mode == "bind":
        s.bind(endpoint)
    else:
        s.connect(endpoint)
    print("ENDPOINT %s" % s.getsockopt_string(zmq.LAST_ENDPOINT), flush=True)

    if role == "echo":
        for _ in range(count):
            s.send_multipart(s.recv_multipart(copy=True))
    elif role in ("client", "client-delim"):
        prefix = [b""] if role == "client-delim" else []
        for i in range(count):
            want = prefix + message(i)
            s.send_multipart(want)
            expect(s.recv_multipart(), want, i)
        print("OK", flush=True)
    elif role == "pub":
        while True:
            s.send_multipart([b"probe"])
            ready, _, _ = select.select([sys.stdin], [], [], 0.01)
            if ready:
                line = sys.stdin.readline()
                if line.strip() == "GO":
                    break
                if not line:
                    fail("stdin closed before GO")
        for i in range(count):
            s.send_multipart(message(i))
    elif role == "sub":
        if stype == "XSUB":
            s.send(b"\x01")
        else:
            s.setsockopt(zmq.SUBSCRIBE, b"")
        told = False
        i = 0
        while i < count:
            m = s.recv_multipart()
            if m == [b"probe"]:
                if not told:
                    print("SUBSCRIBED", flush=True)
                    told = True
                continue
            expect(m, message(i), i)
            i += 1
        print("OK", flush=True)
    elif role == "push":
        for i in range(count):
            s.send_multipart(message(i))
    elif role == "pull":
        for i in range(count):
            expect(s.recv_multipart(), message(i), i)
        print("OK", flush=True)
    else:
        fail("unknown role %r" % role)
    s.close(linger=-1)
    if auth is not None:
        auth.stop()
    ctx.term()


if __name__ == "__main__":
    main()
