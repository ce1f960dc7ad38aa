import http from 'node:http';
import https from 'node:https';
import { isErrorCode, VspcError } from '../errors.js';
import type { HostPort } from '../config/config.js';

export interface AdminClientOptions {
  /** Sent as `Authorization: Bearer <token>`. */
  token?: string | null;
  /** Speak HTTPS; `ca` (PEM) is trusted in addition to the system's CAs. */
  tls?: { ca?: Buffer } | null;
  timeoutMs?: number;
}

/** Client of the admin API (HTTP(S)/JSON), used by `vspc-admin`. */
export class AdminClient {
  constructor(
    private readonly addr: HostPort,
    private readonly options: AdminClientOptions = {},
  ) {}

  get base(): string {
    const host = this.addr.host.includes(':') ? `[${this.addr.host}]` : this.addr.host;
    return `${this.options.tls ? 'https' : 'http'}://${host}:${this.addr.port}`;
  }

  get<T>(path: string): Promise<T> {
    return this.request<T>('GET', path);
  }

  /** A GET whose answer is bytes (e.g. `/api/v1/log?format=raw`); errors as for `get`. */
  async getBytes(path: string): Promise<Buffer> {
    const { status, body } = await this.send('GET', path);
    if (status >= 200 && status <= 299) return body;
    return this.request<never>('GET', path);
  }

  /**
   * A GET whose answer is a stream of bytes (`/api/v1/log?follow=1`): each chunk goes
   * to `onData` as it arrives; resolves when the server ends the stream. The timeout
   * covers the wait for the answer, not the stream. Rejects as `get` does on an error
   * answer, and with VSPC_ADMIN_UNREACHABLE when the stream breaks off.
   */
  stream(path: string, onData: (chunk: Buffer) => void): Promise<void> {
    const o = this.options;
    const headers: Record<string, string> = { accept: 'application/octet-stream, application/json' };
    if (o.token) headers.authorization = `Bearer ${o.token}`;
    const lib = o.tls ? https : http;
    return new Promise((resolve, reject) => {
      const req = lib.request(
        { host: this.addr.host, port: this.addr.port, method: 'GET', path, headers, timeout: o.timeoutMs ?? 10_000, agent: false, ...(o.tls?.ca ? { ca: o.tls.ca } : {}) },
        (res) => {
          const status = res.statusCode ?? 0;
          if (status < 200 || status > 299) {
            // An error answer is JSON, as for any call.
            const chunks: Buffer[] = [];
            res.on('data', (c: Buffer) => chunks.push(c));
            res.on('end', () => {
              try {
                this.answer<never>(status, Buffer.concat(chunks), path);
                reject(new VspcError('VSPC_ADMIN_BAD_RESPONSE', `unexpected answer from ${this.base}${path}: HTTP ${status}`));
              } catch (err) {
                reject(err);
              }
            });
            res.on('error', (err) => reject(this.unreachable(err)));
            return;
          }
          req.setTimeout(0); // a quiet console sends nothing for hours
          let ended = false;
          res.on('data', (c: Buffer) => onData(c));
          res.on('end', () => {
            ended = true;
            resolve();
          });
          res.on('aborted', () => reject(this.broken()));
          res.on('error', () => reject(this.broken()));
          res.on('close', () => {
            if (!ended) reject(this.broken());
          });
        },
      );
      req.on('timeout', () => req.destroy(Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' })));
      req.on('error', (err) => reject(this.unreachable(err)));
      req.end();
    });
  }

  private broken(): VspcError {
    return new VspcError('VSPC_ADMIN_UNREACHABLE', `the stream from the vspc admin API at ${this.base} broke off (did vspc stop?)`, { admin: this.base });
  }

  /** Parameters travel in the query string; the JSON body and its type make this a non-simple request (src/admin/request-guard.ts). */
  post<T>(path: string): Promise<T> {
    return this.request<T>('POST', path);
  }

  private async request<T>(method: string, path: string): Promise<T> {
    const { status, body: raw } = await this.send(method, path);
    return this.answer<T>(status, raw, path);
  }

  /** A JSON answer's body, or its error as a VspcError. */
  private answer<T>(status: number, raw: Buffer, path: string): T {
    const text = raw.toString('utf8');
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      throw new VspcError('VSPC_ADMIN_BAD_RESPONSE', `unexpected answer from ${this.base}${path}: HTTP ${status}`);
    }
    if (status < 200 || status > 299) {
      const e = (body as { error?: { code?: string; message?: string } }).error;
      // A newer server may answer a code this client does not know: keep it in the context.
      const code = isErrorCode(e?.code) ? e.code : 'VSPC_ADMIN_ERROR';
      let message = e?.message ?? `HTTP ${status}`;
      if (code === 'VSPC_AUTH_REQUIRED') message = 'the admin API requires a token: give --token-file FILE, or set VSPC_ADMIN_TOKEN';
      if (code === 'VSPC_AUTH_FAILED') message = 'the admin API did not accept the token (--token, --token-file or VSPC_ADMIN_TOKEN)';
      throw new VspcError(code, message, { status, ...(e?.code && e.code !== code ? { serverCode: String(e.code).slice(0, 64) } : {}) });
    }
    return body as T;
  }

  private send(method: string, path: string): Promise<{ status: number; body: Buffer }> {
    const o = this.options;
    const headers: Record<string, string> = { accept: 'application/json' };
    const body = method === 'GET' ? null : '{}';
    if (body !== null) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = String(Buffer.byteLength(body));
    }
    if (o.token) headers.authorization = `Bearer ${o.token}`;
    const lib = o.tls ? https : http;
    return new Promise((resolve, reject) => {
      const req = lib.request(
        {
          host: this.addr.host,
          port: this.addr.port,
          method,
          path,
          headers,
          timeout: o.timeoutMs ?? 10_000,
          // One-shot calls: no keep-alive socket left to hold the caller's process open.
          agent: false,
          ...(o.tls?.ca ? { ca: o.tls.ca } : {}),
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
          res.on('error', (err) => reject(this.unreachable(err)));
        },
      );
      req.on('timeout', () => req.destroy(Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' })));
      req.on('error', (err) => reject(this.unreachable(err)));
      req.end(body ?? undefined);
    });
  }

  /**
   * A call that becomes a byte stream (HTTP Upgrade; `vspc-admin tunnel`): resolves with
   * the socket once the server answered 101 (and any bytes that came with the answer),
   * rejects with the API's error (its code and message) otherwise.
   */
  upgrade(path: string, protocol: string): Promise<{ socket: import('node:net').Socket; head: Buffer }> {
    const o = this.options;
    const headers: Record<string, string> = { connection: 'Upgrade', upgrade: protocol };
    if (o.token) headers.authorization = `Bearer ${o.token}`;
    const lib = o.tls ? https : http;
    return new Promise((resolve, reject) => {
      const req = lib.request({
        host: this.addr.host,
        port: this.addr.port,
        method: 'GET',
        path,
        headers,
        timeout: o.timeoutMs ?? 60_000,
        agent: false,
        ...(o.tls?.ca ? { ca: o.tls.ca } : {}),
      });
      req.on('upgrade', (_res, socket, head) => {
        socket.setTimeout(0);
        resolve({ socket, head });
      });
      req.on('response', (res) => {
        // Not switched: the API's JSON error, turned into a VspcError as for any call.
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => reject(this.errorOf(res.statusCode ?? 0, Buffer.concat(chunks), path)));
        res.on('error', (err) => reject(this.unreachable(err)));
      });
      req.on('timeout', () => req.destroy(Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' })));
      req.on('error', (err) => reject(this.unreachable(err)));
      req.end();
    });
  }

  /** The VspcError for a non-2xx answer (or one that is not the API's JSON). */
  private errorOf(status: number, raw: Buffer, path: string): VspcError {
    let body: unknown;
    try {
      body = JSON.parse(raw.toString('utf8'));
    } catch {
      return new VspcError('VSPC_ADMIN_BAD_RESPONSE', `unexpected answer from ${this.base}${path}: HTTP ${status}`);
    }
    const e = (body as { error?: { code?: string; message?: string } }).error;
    const code = isErrorCode(e?.code) ? e.code : 'VSPC_ADMIN_ERROR';
    let message = e?.message ?? `HTTP ${status}`;
    if (code === 'VSPC_AUTH_REQUIRED') message = 'the admin API requires a token: give --token-file FILE, or set VSPC_ADMIN_TOKEN';
    if (code === 'VSPC_AUTH_FAILED') message = 'the admin API did not accept the token (--token, --token-file or VSPC_ADMIN_TOKEN)';
    return new VspcError(code, message, { status, ...(e?.code && e.code !== code ? { serverCode: String(e.code).slice(0, 64) } : {}) });
  }

  private unreachable(err: Error): VspcError {
    const code = (err as NodeJS.ErrnoException).code ?? err.name;
    let hint = 'is vspc running? (see --admin)';
    if (this.options.tls) {
      if (code === 'EPROTO' || /wrong version number|packet length too long/i.test(err.message)) hint = 'the admin API does not speak HTTPS here; drop --admin-tls';
      else if (/CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS/.test(code)) hint = `its certificate is not trusted (${err.message}); give --admin-ca FILE`;
    } else if (code === 'ECONNRESET' || code === 'HPE_INVALID_CONSTANT') {
      hint = 'if the admin API uses HTTPS, give --admin-tls (or --admin https://HOST:PORT)';
    }
    return new VspcError('VSPC_ADMIN_UNREACHABLE', `cannot reach the vspc admin API at ${this.base} (${code}); ${hint}`, {
      admin: this.base,
    });
  }
}
