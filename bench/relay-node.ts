/**
 * The benchmark's do-nothing relay in Node.js (the same command line and output as
 * the C one, bench/relay.c): what a user-space proxy hop written in Node costs on
 * this machine when it does nothing but move bytes.
 *
 *   node relay-node.js LISTEN_PORT:TARGET_PORT [LISTEN_PORT:TARGET_PORT ...]
 *
 * Each pair listens on 127.0.0.1:LISTEN_PORT (0: any free port) and connects each
 * accepted connection to 127.0.0.1:TARGET_PORT; bytes are copied both ways with
 * backpressure (a side whose peer does not take its bytes is paused until 'drain').
 * Prints "ports P1 P2 ..." once every listener is bound; exits when stdin closes.
 */
import net from 'node:net';

function pipe(from: net.Socket, to: net.Socket): void {
  from.on('data', (d: Buffer) => {
    if (!to.write(d)) from.pause();
  });
  to.on('drain', () => from.resume());
}

async function main(pairs: string[]): Promise<void> {
  const ports: number[] = [];
  for (const pair of pairs) {
    const m = /^(\d+):(\d+)$/.exec(pair);
    if (!m) throw new Error(`bad pair ${pair}`);
    const target = Number(m[2]);
    const server = net.createServer((c) => {
      c.setNoDelay(true);
      const t = net.connect({ host: '127.0.0.1', port: target });
      t.setNoDelay(true);
      pipe(c, t);
      pipe(t, c);
      c.on('error', () => t.destroy());
      t.on('error', () => c.destroy());
      c.on('close', () => t.destroy());
      t.on('close', () => c.destroy());
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: '127.0.0.1', port: Number(m[1]), backlog: 4096 }, () => resolve());
    });
    ports.push((server.address() as net.AddressInfo).port);
  }
  process.stdout.write(`ports ${ports.join(' ')}\n`);
  process.stdin.on('data', () => undefined);
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('close', () => process.exit(0));
}

main(process.argv.slice(2)).catch((err: Error) => {
  process.stderr.write(`relay-node: ${err.message}\n`);
  process.exit(1);
});
