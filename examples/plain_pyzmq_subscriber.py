"""Subscribe to steel-edge events with nothing but pyzmq and json (no steel_edge import).

    python plain_pyzmq_subscriber.py [tcp://127.0.0.1:5555]

Messages are multipart [topic, JSON payload, optional JPEG crop]; the payload format is described by
edge/steel_edge/schemas/event.schema.json. `seq` counts every message of one publisher run, whatever its
kind, so subscribing to everything (b"") makes a jump in seq a lost message; a new `publisher` id is a
restarted daemon, not a gap.
"""

import json
import sys

import zmq

endpoint = sys.argv[1] if len(sys.argv) > 1 else "tcp://127.0.0.1:5555"
ctx = zmq.Context()
sock = ctx.socket(zmq.SUB)
sock.connect(endpoint)  # the daemon binds, subscribers connect
sock.setsockopt(zmq.SUBSCRIBE, b"")  # everything: filtering kinds out would make seq skip
last_seq = {}  # publisher run -> highest seq seen
try:
    while True:
        frames = sock.recv_multipart()
        try:
            event = json.loads(frames[1])
            run, seq, kind = event["publisher"], event["seq"], event["kind"]
        except (IndexError, ValueError, KeyError, TypeError) as err:
            print(f"skipping malformed message: {err}", file=sys.stderr)
            continue
        last = last_seq.get(run)
        if last is not None and seq > last + 1:
            print(f"GAP: publisher {run[:8]}: seq {last + 1}..{seq - 1} lost", file=sys.stderr)
        if last is None or seq > last:
            last_seq[run] = seq
        if kind == "result":
            found = ", ".join(f"{d['class_name']} {d['score']:.2f} at {d['bbox']}" for d in event["defects"])
            print(f"{event['camera']} {event['frame_id']}: {found or 'no defects'}")
        elif kind == "error":
            print(f"{event['camera']} error ({event['error']}): {event['message']}")
        elif kind == "eos":
            print(f"{event['camera']} end of stream: {event['frames_processed']} frames")
except KeyboardInterrupt:
    pass
finally:
    sock.close(linger=0)  # close before term, or the process hangs
    ctx.term()
