"""A libzmq (pyzmq) peer with CURVE or PLAIN security for lwmq's security tests.

    secure_peer.py TYPE bind|connect ENDPOINT ROLE [OPTIONS]

OPTIONS
  --curve-server SECRET        a CURVE server with this secret key (Z85)
  --curve-client SERVER SECRET a CURVE client of server key SERVER, with our SECRET
  --allow-key PUBLIC           with --curve-server: a ThreadAuthenticator allows only
                               this client key (a key file in a temporary directory,
                               read with configure_curve(location=...))
  --plain-client USER:PASSWORD a PLAIN client
  --heartbeat MS               ZMQ_HEARTBEAT_IVL, with a timeout of 5 intervals

ROLE
  serve    echo every message until stdin closes; a line "COUNT" on stdin is answered
           with "EVENTS accepted=A auth=U connected=C disconnected=D failed=F
           succeeded=S" (monitor events so far: handshakes succeeded and failed, U of
           the failures handshake-failed-auth)
  client   send each of the SAMPLES below and expect it back unchanged; print "OK"
  try      send one message and wait up to 3 s for the reply: print "REPLY" or
           "NOREPLY" (also when the message cannot go within 3 s), then the EVENTS
           line as for "serve"

Prints "ENDPOINT <uri>" once bound or connected.
"""

import os
import shutil
import sys
import tempfile

import zmq
from zmq.utils.monitor import recv_monitor_message

BIG = bytes(k % 251 for k in range(1 << 20))
# 0 B, 1 MiB, and a multipart message with an empty frame and a 1 MiB one.
SAMPLES = [[b""], [BIG], [b"first", b"", b"x" * 100, BIG]]


def fail(why):
    sys.stderr.write("secure_peer.py: %s\n" % why)
    sys.exit(1)


def main():
    stype, mode, endpoint, role = sys.argv[1:5]
    opts = sys.argv[5:]
    ctx = zmq.Context()
    s = ctx.socket(getattr(zmq, stype))
    s.linger = 0
    auth = None
    keydir = None
    i = 0
    while i < len(opts):
        o = opts[i]
        if o == "--curve-server":
            secret = opts[i + 1].encode()
            s.curve_secretkey = secret
            s.curve_publickey = zmq.curve_public(secret)
            s.curve_server = True
            i += 2
        elif o == "--curve-client":
            server, secret = opts[i + 1].encode(), opts[i + 2].encode()
            s.curve_serverkey = server
            s.curve_secretkey = secret
            s.curve_publickey = zmq.curve_public(secret)
            i += 3
        elif o == "--allow-key":
            from zmq.auth.thread import ThreadAuthenticator

            keydir = tempfile.mkdtemp(prefix="lwmq-allowed-keys-")
            with open(os.path.join(keydir, "client.key"), "w") as f:
                f.write('metadata\ncurve\n    public-key = "%s"\n' % opts[i + 1])
            auth = ThreadAuthenticator(ctx)
            auth.start()
            auth.configure_curve(domain="*", location=keydir)
            i += 2
        elif o == "--plain-client":
            user, _, password = opts[i + 1].partition(":")
            s.plain_username = user.encode()
            s.plain_password = password.encode()
            i += 2
        elif o == "--heartbeat":
            ms = int(opts[i + 1])
            s.heartbeat_ivl = ms
            s.heartbeat_timeout = 5 * ms
            i += 2
        else:
            fail("unknown option %r" % o)
    mon = s.get_monitor_socket()
    if mode == "bind":
        s.bind(endpoint)
    else:
        s.connect(endpoint)
    print("ENDPOINT %s" % s.getsockopt_string(zmq.LAST_ENDPOINT), flush=True)

    counts = {
        "accepted": 0,
        "auth": 0,
        "connected": 0,
        "disconnected": 0,
        "succeeded": 0,
        "failed": 0,
    }
    kinds = {
        zmq.EVENT_ACCEPTED: "accepted",
        zmq.EVENT_CONNECTED: "connected",
        zmq.EVENT_DISCONNECTED: "disconnected",
        zmq.EVENT_HANDSHAKE_SUCCEEDED: "succeeded",
        zmq.EVENT_HANDSHAKE_FAILED_AUTH: "failed",
        zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "failed",
        zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "failed",
    }

    def drain_monitor():
        while mon.poll(0):
            ev = recv_monitor_message(mon)
            k = kinds.get(ev["event"])
            if k:
                counts[k] += 1
            if ev["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                counts["auth"] += 1

    def print_counts():
        drain_monitor()
        print(
            "EVENTS " + " ".join("%s=%d" % kv for kv in sorted(counts.items())),
            flush=True,
        )

    if role == "serve":
        poller = zmq.Poller()
        poller.register(s, zmq.POLLIN)
        poller.register(mon, zmq.POLLIN)
        poller.register(sys.stdin, zmq.POLLIN)
        done = False
        while not done:
            for sock, _ in poller.poll():
                if sock is s:
                    s.send_multipart(s.recv_multipart())
                elif sock is mon:
                    drain_monitor()
                else:
                    line = sys.stdin.readline()
                    if not line:
                        done = True
                        break
                    print_counts()
    elif role == "client":
        s.rcvtimeo = 60000
        for n, want in enumerate(SAMPLES):
            s.send_multipart(want)
            try:
                got = s.recv_multipart()
            except zmq.Again:
                fail("no reply to sample %d" % n)
            if got != want:
                fail("sample %d differs: %d frames of %r" % (n, len(got), [len(f) for f in got]))
        print("OK", flush=True)
    elif role == "try":
        # A bound REQ has no pipe before a handshake succeeds: its send would block.
        s.sndtimeo = 3000
        try:
            s.send_multipart([b"anyone there?"])
        except zmq.Again:
            print("NOREPLY", flush=True)
        else:
            if s.poll(3000):
                s.recv_multipart()
                print("REPLY", flush=True)
            else:
                print("NOREPLY", flush=True)
        print_counts()
    else:
        fail("unknown role %r" % role)
    s.close(linger=0)
    mon.close()
    if auth is not None:
        auth.stop()
    if keydir is not None:
        shutil.rmtree(keydir, ignore_errors=True)
    ctx.term()


if __name__ == "__main__":
    main()
