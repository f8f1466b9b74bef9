"""A pyzmq (libzmq) peer for the lwmq command-line tests.

Usage: cli_peer.py MODE [ARGS...]

Every mode binds a TCP port on 127.0.0.1, prints "ENDPOINT tcp://127.0.0.1:PORT" on
its first line, then:

  push FRAME...      sends one message of these frames every 20 ms until killed
  pull N             prints N received messages, frames joined by tabs
  rep N REPLY        answers N requests with REPLY, printing each request
  req REQUEST        sends REQUEST, prints the reply
  pub TOPIC PAYLOAD  publishes [TOPIC, PAYLOAD] every 20 ms until killed
  router N           prints N messages as hex routing id + frames, answers each "ok"

Every receive gives up after 30 s (exit code 3), so a broken test cannot leave this
process behind for long.
"""
import sys
import time

import zmq

TIMEOUT_MS = 30000


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    kinds = {"push": zmq.PUSH, "pull": zmq.PULL, "rep": zmq.REP, "req": zmq.REQ,
             "pub": zmq.PUB, "router": zmq.ROUTER}
    ctx = zmq.Context()
    s = ctx.socket(kinds[mode])
    s.setsockopt(zmq.RCVTIMEO, TIMEOUT_MS)
    s.setsockopt(zmq.LINGER, 1000)
    port = s.bind_to_random_port("tcp://127.0.0.1")
    print(f"ENDPOINT tcp://127.0.0.1:{port}", flush=True)
    try:
        if mode == "push" or mode == "pub":
            frames = [a.encode() for a in args]
            while True:
                s.send_multipart(frames)
                time.sleep(0.02)
        elif mode == "pull":
            for _ in range(int(args[0])):
                print("\t".join(f.decode() for f in s.recv_multipart()), flush=True)
        elif mode == "rep":
            for _ in range(int(args[0])):
                print("\t".join(f.decode() for f in s.recv_multipart()), flush=True)
                s.send(args[1].encode())
        elif mode == "req":
            # The connecting side may not be up yet; REQ queues until it is.
            s.send(args[0].encode())
            print("\t".join(f.decode() for f in s.recv_multipart()), flush=True)
        elif mode == "router":
            for _ in range(int(args[0])):
                frames = s.recv_multipart()
                print(frames[0].hex() + "\t" + "\t".join(f.decode() for f in frames[1:]),
                      flush=True)
                s.send_multipart([frames[0], b"ok"])
    except zmq.Again:
        print("timeout", file=sys.stderr, flush=True)
        sys.exit(3)


if __name__ == "__main__":
    main()
