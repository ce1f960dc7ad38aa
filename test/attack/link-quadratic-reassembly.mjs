// ATTACK REPRO (script, not a test): LinkSession.receive concatenates the pending partial frame
// with every chunk, so a peer sending a 64 KiB frame in 1-byte TLS records costs O(n^2) copying.
// Run after the build: node test/attack/link-quadratic-reassembly.mjs
import { LinkSession } from '../../dist/src/protocol/cluster/link.js';
const a = new LinkSession({ role: 'dialer', nodeId: 'node-a', expectPeer: 'node-b' });
const b = new LinkSession({ role: 'acceptor', nodeId: 'node-b' });
a.receive(b.hello()); b.receive(a.hello());
// A CLOSE frame for an unknown stream with a 4096-byte reason is small; use DATA of an unknown stream: 64 KiB - 5, dropped.
const body = Buffer.alloc(65536 - 5);
const f = Buffer.alloc(4 + 65536); f.writeUInt32BE(65536, 0); f[4] = 5; f.writeUInt32BE(999, 5);
for (const size of [1, 16]) {
  const t0 = process.hrtime.bigint();
  for (let off = 0; off < f.length; off += size) b.receive(f.subarray(off, off + size));
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  console.log(`one 64 KiB frame in ${size}-byte chunks: ${ms.toFixed(0)} ms of CPU; in one chunk:`, (() => { const t=process.hrtime.bigint(); b.receive(f); return (Number(process.hrtime.bigint()-t)/1e6).toFixed(2); })(), 'ms');
}
