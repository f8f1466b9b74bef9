"""A libzmq (pyzmq) peer for lwmq's proto interop tests, driven over stdin/stdout.

Usage: proto_peer.py TYPE (bind | connect PORT) [--hb IVL,TTL,TIMEOUT] [--monitor]
                     [--plain-server USER:PW] [--plain-client USER:PW] [--identity ID]
                     [--curve-server SECRET [--curve-allow PUBLIC]]
                     [--curve-client SERVER_PUBLIC --curve-secret SECRET]

CURVE keys are Z85 text. --curve-allow starts a ZAP authenticator that admits only that
client key (without it libzmq admits any client, as it does without a ZAP handler).

On start it prints "port N" (bind, on 127.0.0.1, an ephemeral port) or "ready" (connect).
Then it answers one line per command line:
  send F...      send a multipart message; each F is hex, "-" for an empty frame -> "ok"
  recv           receive one message (10 s timeout) -> "frames F..." or "timeout"
  repeat F...    send the message every 50 ms until the next line arrives (which must
                 be "stop") -> "ok <count>"
  events         every monitor event seen so far -> "events NAME..."
  quit           exit
"""
import os
import select
import sys

import zmq
import zmq.auth.thread
from zmq.utils.monitor import recv_monitor_message


def enc(frames):
    return " ".join(f.hex() if f else "-" for f in frames)


def dec(words):
    return [b"" if w == "-" else bytes.fromhex(w) for w in words]


class Lines:
    """Lines from stdin without blocking: libzmq only attaches a bound socket's new
    pipes (and sends a SUB's subscriptions on them) when the application thread calls
    into the socket, so the loop must keep touching the socket while it waits."""

    def __init__(self):
        self.buf = b""
        self.eof = False

    def next(self, timeout):
        if b"\n" not in self.buf and not self.eof:
            r, _, _ = select.select([0], [], [], timeout)
            if r:
                chunk = os.read(0, 1 << 20)
                if not chunk:
                    self.eof = True
                self.buf += chunk
        if b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            return line.decode()
        if self.eof:
            raise EOFError
        return None


def main():
    args = sys.argv[1:]
    kind, mode = args[0], args[1]
    port = int(args[2]) if mode == "connect" else None
    rest = args[3:] if mode == "connect" else args[2:]
    opts = {}
    i = 0
    while i < len(rest):
        if rest[i] == "--monitor":
            opts["monitor"] = True
            i += 1
        else:
            opts[rest[i]] = rest[i + 1]
            i += 2

    ctx = zmq.Context.instance()
    auth = None
    sock = ctx.socket(getattr(zmq, kind))
    sock.setsockopt(zmq.LINGER, 1000)
    sock.setsockopt(zmq.RCVTIMEO, 10000)
    if "--hb" in opts:
        ivl, ttl, timeout = (int(x) for x in opts["--hb"].split(","))
        sock.setsockopt(zmq.HEARTBEAT_IVL, ivl)
        sock.setsockopt(zmq.HEARTBEAT_TTL, ttl)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, timeout)
    if "--plain-server" in opts:
        user, pw = opts["--plain-server"].split(":", 1)
        auth = zmq.auth.thread.ThreadAuthenticator(ctx)
        auth.start()
        auth.configure_plain(domain="*", passwords={user: pw})
        sock.plain_server = True
    if "--plain-client" in opts:
        user, pw = opts["--plain-client"].split(":", 1)
        sock.plain_username = user.encode()
        sock.plain_password = pw.encode()
    if "--curve-server" in opts:
        secret = opts["--curve-server"].encode()
        sock.curve_secretkey = secret
        sock.curve_publickey = zmq.curve_public(secret)
        sock.curve_server = True
        if "--curve-allow" in opts:
            allowed = opts["--curve-allow"].encode()

            class OneKey:
                def callback(self, domain, key):
                    return key == allowed  # pyzmq passes the key in Z85

            auth = zmq.auth.thread.ThreadAuthenticator(ctx)
            auth.start()
            auth.configure_curve_callback(domain="*", credentials_provider=OneKey())
    if "--curve-client" in opts:
        secret = opts["--curve-secret"].encode()
        sock.curve_serverkey = opts["--curve-client"].encode()
        sock.curve_secretkey = secret
        sock.curve_publickey = zmq.curve_public(secret)
    if "--identity" in opts:
        sock.setsockopt(zmq.ROUTING_ID, opts["--identity"].encode())
    mon = sock.get_monitor_socket() if opts.get("monitor") else None
    seen = []
    if kind == "SUB":
        sock.setsockopt(zmq.SUBSCRIBE, b"")
    if mode == "bind":
        sock.bind("tcp://127.0.0.1:*")
        ep = sock.getsockopt(zmq.LAST_ENDPOINT).decode()
        print("port", ep.rsplit(":", 1)[1], flush=True)
    else:
        sock.connect("tcp://127.0.0.1:%d" % port)
        print("ready", flush=True)
    if kind == "XSUB":
        sock.send(b"\x01")

    lines = Lines()
    while True:
        try:
            line = lines.next(0.02)
        except EOFError:
            break
        sock.getsockopt(zmq.EVENTS)  # lets libzmq process its commands
        if line is None:
            continue
        words = line.split()
        if not words:
            continue
        op = words[0]
        if op == "send":
            sock.send_multipart(dec(words[1:]))
            print("ok", flush=True)
        elif op == "recv":
            try:
                print("frames", enc(sock.recv_multipart()), flush=True)
            except zmq.Again:
                print("timeout", flush=True)
        elif op == "repeat":
            frames = dec(words[1:])
            n = 0
            while True:
                sock.send_multipart(frames)
                n += 1
                if lines.next(0.05) is not None:
                    break
            print("ok", n, flush=True)
        elif op == "events":
            while mon is not None and mon.poll(0):
                ev = recv_monitor_message(mon)
                seen.append(zmq.Event(ev["event"]).name)
            print("events", " ".join(seen), flush=True)
        elif op == "quit":
            break
    sock.close(0)
    if auth is not None:
        auth.stop()
    ctx.term()


main()
