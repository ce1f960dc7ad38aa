import { VspcError } from '../errors.js';
import type { HostPort } from '../config.js';

/** Client of the admin API (HTTP/JSON), used by `vspc-admin`. */
export class AdminClient {
  constructor(
    private readonly addr: HostPort,
    private readonly timeoutMs = 10_000,
  ) {}

  get base(): string {
    const host = this.addr.host.includes(':') ? `[${this.addr.host}]` : this.addr.host;
    return `http://${host}:${this.addr.port}`;
  }

  get<T>(path: string): Promise<T> {
    return this.request<T>('GET', path);
  }

  post<T>(path: string): Promise<T> {
    return this.request<T>('POST', path);
  }

  private async request<T>(method: string, path: string): Promise<T> {
    let res: Response;
    try {
      res = await fetch(this.base + path, { method, signal: AbortSignal.timeout(this.timeoutMs) });
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause;
      const why = cause?.code ?? (err as Error).name;
      throw new VspcError('VSPC_ADMIN_UNREACHABLE', `cannot reach the vspc admin API at ${this.base} (${why}); is vspc running? (see --admin)`, {
        admin: this.base,
      });
    }
    const text = await res.text();
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      throw new VspcError('VSPC_ADMIN_BAD_RESPONSE', `unexpected answer from ${this.base}${path}: HTTP ${res.status}`);
    }
    if (!res.ok) {
      const e = (body as { error?: { code?: string; message?: string } }).error;
      throw new VspcError(e?.code ?? 'VSPC_ADMIN_ERROR', e?.message ?? `HTTP ${res.status}`);
    }
    return body as T;
  }
}
