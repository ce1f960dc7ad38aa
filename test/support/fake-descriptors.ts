/**
 * A descriptor budget for tests (src/domain/descriptors.ts): `free` descriptors to hand
 * out, counts of what is held and asked for, and waiters called by `give()`.
 */
import type { DescriptorBudget, DescriptorLease } from '../../src/domain/descriptors.js';

export class FakeDescriptorBudget implements DescriptorBudget {
  held = 0;
  readonly asked: string[] = [];
  private readonly waiters = new Set<() => void>();

  constructor(public free: number) {}

  acquire(use: string, consoleName: string): DescriptorLease | null {
    this.asked.push(`${use}:${consoleName}`);
    if (this.free <= 0) return null;
    this.free--;
    this.held++;
    let done = false;
    return {
      release: () => {
        if (done) return;
        done = true;
        this.free++;
        this.held--;
      },
    };
  }

  whenAvailable(retry: () => void): () => void {
    this.waiters.add(retry);
    return () => void this.waiters.delete(retry);
  }

  get waiting(): number {
    return this.waiters.size;
  }

  /** `n` more descriptors, and every waiter told. */
  give(n: number): void {
    this.free += n;
    const ws = [...this.waiters];
    this.waiters.clear();
    for (const w of ws) w();
  }
}
