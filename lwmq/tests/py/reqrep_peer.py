"""A libzmq (pyzmq) peer for lwmq's reliable request/reply interop tests.

    reqrep_peer.py ROLE ARGS...

Roles:
  rep ENDPOINT            bind a REP, answer each request with its frames + b"|py"
  rep-hang ENDPOINT       bind a REP, print "GOT <body>" for the first request, never reply
  req-plain ENDPOINT N    connect a plain REQ, send b"same" N times, expect b"same" back
  req-correlate ENDPOINT N
                          the same with REQ_CORRELATE and REQ_RELAXED, bodies b"c<i>"
  dealer-dup ENDPOINT     connect a DEALER (routing id b"py-dealer"), send a request with
                          a request id, wait for its reply, send the very same request
                          again, wait for the reply: both must be equal
  proxy FRONT BACK        bind a ROUTER on FRONT and a DEALER on BACK, zmq.proxy them

Prints "ENDPOINT <uri>" (or "FRONT <uri>" and "BACK <uri>") once bound, "OK" after a
verifying role succeeded; exits non-zero with the reason on stderr otherwise. Every
receive gives up after 30 s.
"""

import sys
import time

import zmq


def fail(why):
    sys.stderr.write("reqrep_peer.py: %s\n" % why)
    sys.exit(1)


def say(*words):
    print(*words, flush=True)


def main():
    role = sys.argv[1]
    ctx = zmq.Context()
    if role in ("rep", "rep-hang"):
        s = ctx.socket(zmq.REP)
        s.bind(sys.argv[2])
        say("ENDPOINT", s.getsockopt(zmq.LAST_ENDPOINT).decode())
        while True:
            frames = s.recv_multipart()
            if role == "rep-hang":
                say("GOT", b"+".join(frames).decode())
                time.sleep(3600)  # never answer; the copies queue up
            s.send_multipart(frames + [b"|py"])
    elif role in ("req-plain", "req-correlate"):
        s = ctx.socket(zmq.REQ)
        s.setsockopt(zmq.RCVTIMEO, 30000)
        if role == "req-correlate":
            s.setsockopt(zmq.REQ_CORRELATE, 1)
            s.setsockopt(zmq.REQ_RELAXED, 1)
        s.connect(sys.argv[2])
        for i in range(int(sys.argv[3])):
            body = b"same" if role == "req-plain" else b"c%d" % i
            s.send(body)
            got = s.recv_multipart()
            if got != [body]:
                fail("request %d: got %r" % (i, got))
        say("OK")
    elif role == "dealer-dup":
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.RCVTIMEO, 30000)
        s.setsockopt(zmq.ROUTING_ID, b"py-dealer")
        s.connect(sys.argv[2])
        request = [b"\x01\x02\x03\x04", b"", b"dup"]
        s.send_multipart(request)
        first = s.recv_multipart()
        s.send_multipart(request)
        second = s.recv_multipart()
        if first != second or first[:2] != request[:2]:
            fail("replies differ: %r %r" % (first, second))
        say("OK", first[2].decode())
    elif role == "proxy":
        front = ctx.socket(zmq.ROUTER)
        front.bind(sys.argv[2])
        back = ctx.socket(zmq.DEALER)
        back.bind(sys.argv[3])
        say("FRONT", front.getsockopt(zmq.LAST_ENDPOINT).decode())
        say("BACK", back.getsockopt(zmq.LAST_ENDPOINT).decode())
        zmq.proxy(front, back)
    else:
        fail("unknown role " + role)


if __name__ == "__main__":
    main()
