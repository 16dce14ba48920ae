// Subscribe to steel-edge events from Node.js with the `zeromq` package (v6 API).
//
//   npm install zeromq@6 && node subscriber.js [tcp://127.0.0.1:5555]
//
// Messages are multipart [topic, JSON payload, optional JPEG crop]; the payload format is described by
// edge/steel_edge/schemas/event.schema.json. `seq` counts every message of one publisher run, whatever
// its kind, so subscribing to everything makes a jump in seq a lost message; a new `publisher` id is a
// restarted daemon, not a gap.
"use strict";
const zmq = require("zeromq");

async function main(endpoint) {
  const sock = new zmq.Subscriber();
  sock.connect(endpoint); // the daemon binds, subscribers connect
  sock.subscribe(); // everything: filtering kinds out would make seq skip
  process.on("SIGINT", () => sock.close());
  const lastSeq = new Map(); // publisher run -> highest seq seen
  for await (const [, payload] of sock) {
    let event;
    try {
      event = JSON.parse(payload.toString("utf8"));
    } catch (err) {
      console.error(`skipping malformed message: ${err.message}`);
      continue;
    }
    const last = lastSeq.get(event.publisher);
    if (last !== undefined && event.seq > last + 1) {
      console.error(`GAP: publisher ${event.publisher.slice(0, 8)}: seq ${last + 1}..${event.seq - 1} lost`);
    }
    if (last === undefined || event.seq > last) lastSeq.set(event.publisher, event.seq);
    if (event.kind === "result") {
      const found = event.defects.map((d) => `${d.class_name} ${d.score.toFixed(2)} at [${d.bbox}]`).join(", ");
      console.log(`${event.camera} ${event.frame_id}: ${found || "no defects"}`);
    } else if (event.kind === "error") {
      console.log(`${event.camera} error (${event.error}): ${event.message}`);
    } else if (event.kind === "eos") {
      console.log(`${event.camera} end of stream: ${event.frames_processed} frames`);
    }
  }
}

main(process.argv[2] || "tcp://127.0.0.1:5555").catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
