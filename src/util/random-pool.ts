import { randomBytes, randomFillSync } from 'node:crypto';

/**
 * Cryptographically random bytes, drawn from a pool that one `randomFillSync` call
 * refills (by default 4 KiB: 512 eight-byte vMotion secrets), instead of one call into
 * the crypto library and one Buffer of its own per secret. Every byte is handed out
 * once and wiped from the pool when it is; requests larger than the pool go to
 * `randomBytes` directly.
 */
export class RandomPool {
  private readonly pool: Buffer;
  private pos: number;

  constructor(readonly size = 4096) {
    this.pool = Buffer.alloc(size);
    this.pos = size;
  }

  /** `n` fresh random bytes (a copy the caller owns). */
  take(n: number): Buffer {
    if (n > this.size) return randomBytes(n);
    if (this.pos + n > this.size) {
      randomFillSync(this.pool);
      this.pos = 0;
    }
    const out = Buffer.allocUnsafe(n);
    this.pool.copy(out, 0, this.pos, this.pos + n);
    this.pool.fill(0, this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
}
