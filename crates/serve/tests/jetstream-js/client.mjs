// A real Jetstream consumer, @skyware/jetstream, for tests/jetstream_npm.rs.
//
//   node client.mjs <endpoint> <count> [--collection NSID]... [--did DID]... [--cursor US]
//                   [--typed NSID]... [--timeout-ms MS]
//
// Prints one JSON line per event the client emits (its `commit`, `identity` and `account`
// events, with the fields read through its typed view), plus one line per `onCreate` /
// `onUpdate` / `onDelete` callback for each `--typed` collection. After <count> events it prints
// {"on":"done",...} and exits 0; after the timeout (default 30 s) it exits 1.
//
// Node has no global WebSocket before 22, so the client is given `ws`, as skyware documents for
// Node; that works the same on Node 18, 20 and 22.
import { Jetstream } from "@skyware/jetstream";
import WebSocket from "ws";

const [endpoint, countText, ...rest] = process.argv.slice(2);
const count = Number(countText);
if (!endpoint || !Number.isInteger(count) || count < 1) {
	console.error("usage: node client.mjs <endpoint> <count> [--collection NSID]... [--did DID]... [--cursor US] [--typed NSID]... [--timeout-ms MS]");
	process.exit(2);
}
const wantedCollections = [];
const wantedDids = [];
const typed = [];
let cursor;
let timeoutMs = 30_000;
for (let i = 0; i < rest.length; i += 2) {
	const [flag, value] = [rest[i], rest[i + 1]];
	if (value === undefined) {
		console.error(`${flag} needs a value`);
		process.exit(2);
	}
	switch (flag) {
		case "--collection": wantedCollections.push(value); break;
		case "--did": wantedDids.push(value); break;
		case "--typed": typed.push(value); break;
		case "--cursor": cursor = Number(value); break;
		case "--timeout-ms": timeoutMs = Number(value); break;
		default:
			console.error(`unknown flag ${flag}`);
			process.exit(2);
	}
}

const print = (line) => process.stdout.write(`${JSON.stringify(line)}\n`);

const jetstream = new Jetstream({ ws: WebSocket, endpoint, wantedCollections, wantedDids, cursor });

let received = 0;
function counted() {
	received += 1;
	if (received === count) {
		print({ on: "done", received, cursor: jetstream.cursor });
		jetstream.close();
		// stdout is a pipe: let it drain before leaving.
		process.stdout.write("", () => process.exit(0));
	}
}

jetstream.on("commit", (event) => {
	const { collection, operation, rkey, record, cid } = event.commit;
	print({ on: "commit", did: event.did, time_us: event.time_us, collection, operation, rkey, record: record ?? null, cid: cid ?? null, event });
	// The collection handlers run after this one returns; count the event after them.
	queueMicrotask(counted);
});
jetstream.on("identity", (event) => {
	print({ on: "identity", did: event.did, time_us: event.time_us, handle: event.identity.handle, event });
	counted();
});
jetstream.on("account", (event) => {
	const { active, status } = event.account;
	print({ on: "account", did: event.did, time_us: event.time_us, active, status: status ?? null, event });
	counted();
});
for (const collection of typed) {
	jetstream.onCreate(collection, (event) => print({ on: "create", collection: event.commit.collection, rkey: event.commit.rkey, did: event.did }));
	jetstream.onUpdate(collection, (event) => print({ on: "update", collection: event.commit.collection, rkey: event.commit.rkey, did: event.did }));
	jetstream.onDelete(collection, (event) => print({ on: "delete", collection: event.commit.collection, rkey: event.commit.rkey, did: event.did }));
}
jetstream.on("open", () => console.error("client.mjs: connected"));
jetstream.on("close", () => console.error("client.mjs: connection closed"));
jetstream.on("error", (error) => console.error(`client.mjs: ${error?.stack ?? error}`));

setTimeout(() => {
	console.error(`client.mjs: timed out after ${timeoutMs} ms with ${received} of ${count} events`);
	process.exit(1);
}, timeoutMs);

jetstream.start();
