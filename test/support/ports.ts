import net from 'node:net';

/** Tries to bind `port` on `host` and releases it at once. */
export function canBind(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen({ host, port, exclusive: true }, () => s.close(() => resolve(true)));
  });
}

/**
 * Finds `count` consecutive ports that are free on 127.0.0.1 right now, from a random
 * base in 20000–30000 (below Linux's ephemeral range, and random so that test files
 * running in parallel rarely pick the same ports).
 */
export async function findFreePortRange(count: number, attempts = 100): Promise<{ start: number; end: number }> {
  for (let a = 0; a < attempts; a++) {
    const start = 20000 + Math.floor(Math.random() * (10000 - count));
    let ok = true;
    for (let p = start; p < start + count && ok; p++) ok = await canBind(p);
    if (ok) return { start, end: start + count - 1 };
  }
  throw new Error(`no ${count} consecutive free ports found in ${attempts} attempts`);
}

export async function findFreePort(): Promise<number> {
  return (await findFreePortRange(1)).start;
}
