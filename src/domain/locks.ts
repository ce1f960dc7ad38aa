/**
 * Mutual-exclusion locks on one VM serial port, by the rules of VMware's own
 * concentrator (see ../shared/docs/vspc-protocol.md):
 *
 *   READWRITE    shared writer (default); others may read or write unless someone
 *                holds EXCLUSIVE or EXCL_WRITE
 *   READONLY     reader; refused only while someone holds EXCLUSIVE
 *   EXCLUSIVE    nobody else at all
 *   EXCL_WRITE   the only writer; readers are fine
 *   READONLY_OK  a request, not a held mode: READWRITE if possible, else READONLY
 *
 * A conflicting request is refused with the holders named, never silently
 * degraded (READONLY_OK is the one request that asks to be degraded). With `force`
 * the conflicting holders are displaced instead; the caller tells them why and
 * closes them. Pure data structure: no I/O, no timers.
 */
export const LOCK_MODES = ['readwrite', 'readonly', 'exclusive', 'excl_write', 'readonly_ok'] as const;
export type LockRequest = (typeof LOCK_MODES)[number];
/** What a client holds once granted. */
export type LockMode = Exclude<LockRequest, 'readonly_ok'>;

export function parseLockMode(text: string): LockRequest | undefined {
  const t = text.trim().toLowerCase().replace(/-/g, '_');
  return (LOCK_MODES as readonly string[]).includes(t) ? (t as LockRequest) : undefined;
}

/**
 * How an access method established who a client is, when it did (SSH: a public key);
 * absent for telnet, whose user name is only what the client says.
 */
export interface ClientAuth {
  /** The access method: `ssh`. */
  readonly method: string;
  /** The key's fingerprint, `SHA256:...`. */
  readonly keyFingerprint?: string;
}

/** "ssh, key SHA256:..." */
export function describeAuth(auth: ClientAuth): string {
  return auth.keyFingerprint ? `${auth.method}, key ${auth.keyFingerprint}` : auth.method;
}

export interface LockHolder {
  readonly clientId: number;
  readonly peer: string;
  readonly user?: string;
  readonly auth?: ClientAuth;
  readonly mode: LockMode;
  readonly since: number;
}

export type LockDecision =
  | { granted: true; mode: LockMode; displaced: LockHolder[] }
  | { granted: false; reason: string; holders: LockHolder[] };

export function isWriter(mode: LockMode): boolean {
  return mode !== 'readonly';
}

/** Holders that prevent `mode` from being granted. */
function conflicts(mode: LockMode, holders: Iterable<LockHolder>): LockHolder[] {
  const out: LockHolder[] = [];
  for (const h of holders) {
    const clash =
      mode === 'exclusive' ||
      h.mode === 'exclusive' ||
      (mode === 'excl_write' && isWriter(h.mode)) ||
      (mode === 'readwrite' && h.mode === 'excl_write');
    if (clash) out.push(h);
  }
  return out;
}

export function describeHolder(h: LockHolder): string {
  const via = h.auth ? `${describeAuth(h.auth)}, ` : '';
  return `${h.user ? `${h.user}@` : ''}${h.peer} (${via}${h.mode.toUpperCase()} since ${new Date(h.since).toISOString()})`;
}

/** The holders of every table nobody asked a lock of yet (shared, never written). */
const NO_HOLDERS: ReadonlyMap<number, LockHolder> = new Map();

export class LockTable {
  /** Allocated on the first request: a console nobody attached to (most of thousands) has none. */
  private holders: Map<number, LockHolder> = NO_HOLDERS as Map<number, LockHolder>;

  get size(): number {
    return this.holders.size;
  }

  list(): LockHolder[] {
    return [...this.holders.values()];
  }

  get(clientId: number): LockHolder | undefined {
    return this.holders.get(clientId);
  }

  /**
   * Ask for a lock. Granted locks are recorded; displaced holders (with `force`)
   * are removed from the table and returned for the caller to close.
   */
  request(
    who: { clientId: number; peer: string; user?: string; auth?: ClientAuth },
    requested: LockRequest,
    force = false,
    now = Date.now(),
  ): LockDecision {
    if (this.holders === NO_HOLDERS) this.holders = new Map();
    this.holders.delete(who.clientId);
    let mode: LockMode;
    let blocking: LockHolder[];
    if (requested === 'readonly_ok') {
      const asWriter = conflicts('readwrite', this.holders.values());
      if (asWriter.length === 0) {
        mode = 'readwrite';
        blocking = [];
      } else {
        mode = 'readonly';
        blocking = conflicts('readonly', this.holders.values());
      }
    } else {
      mode = requested;
      blocking = conflicts(mode, this.holders.values());
    }
    if (blocking.length > 0 && !force) {
      const names = blocking.map(describeHolder).join(', ');
      return {
        granted: false,
        holders: blocking,
        reason: `${requested.toUpperCase()} refused: held by ${names}`,
      };
    }
    for (const b of blocking) this.holders.delete(b.clientId);
    this.holders.set(who.clientId, { clientId: who.clientId, peer: who.peer, user: who.user, ...(who.auth ? { auth: who.auth } : {}), mode, since: now });
    return { granted: true, mode, displaced: blocking };
  }

  release(clientId: number): void {
    this.holders.delete(clientId);
  }
}
