/**
 * The SSH front door's host keys: ed25519 (every OpenSSH since 6.5) and ECDSA P-256
 * (older clients, PuTTY before 0.68... anything that predates ed25519), in files named
 * as sshd names them (`ssh_host_ed25519_key`, `ssh_host_ecdsa_key`, OpenSSH format,
 * with a `.pub` beside each). Created on first start with mode 0600; vspc refuses to
 * start when a key file can be read by group or others, or cannot be parsed. An
 * operator may put keys of their own there (`ssh-keygen -t ed25519 -N '' -f DIR/ssh_host_ed25519_key`).
 *
 * Synchronous: it runs once, at start.
 */
import { chmodSync, existsSync, linkSync, mkdirSync, readFileSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import ssh2 from 'ssh2';
import type { ParsedKey } from 'ssh2';
import { VspcError } from '../../errors.js';
import { fingerprintOf } from './fingerprint.js';

export interface HostKey {
  /** `ssh-ed25519`, `ecdsa-sha2-nistp256`. */
  readonly type: string;
  readonly fingerprint: string;
  readonly path: string;
  /** The private key, OpenSSH format, for ssh2's Server. */
  readonly privateKey: string;
  /** Created by this start (else read). */
  readonly created: boolean;
}

const KINDS = [
  { file: 'ssh_host_ed25519_key', type: 'ssh-ed25519', generate: () => ssh2.utils.generateKeyPairSync('ed25519', { comment: 'vspc host key' }) },
  { file: 'ssh_host_ecdsa_key', type: 'ecdsa-sha2-nistp256', generate: () => ssh2.utils.generateKeyPairSync('ecdsa', { bits: 256, comment: 'vspc host key' }) },
] as const;

/** Reads the host keys in `dir`, creating the ones missing (and `dir`, mode 0700). Throws VspcError. */
export function loadHostKeys(dir: string): HostKey[] {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw new VspcError('VSPC_SSH_HOST_KEY_INVALID', `cannot create the SSH host key directory ${dir}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { dir });
  }
  return KINDS.map((k) => {
    const path = join(dir, k.file);
    let created = false;
    if (!existsSync(path)) created = create(path, generateParsable(k.generate));
    return read(path, k.type, created);
  });
}

/**
 * A new key pair that ssh2 can read back: ssh2's generateKeyPairSync('ed25519') makes,
 * about once in 200 keys, a private key its own parseKey rejects ("Malformed OpenSSH
 * private key"), which would stop vspc from starting with a key file it made itself.
 * Such a key is thrown away and another generated.
 */
function generateParsable(generate: () => { private: string; public: string }): { private: string; public: string } {
  for (let attempt = 1; ; attempt++) {
    const pair = generate();
    if (!(ssh2.utils.parseKey(pair.private) instanceof Error) || attempt >= 20) return pair;
  }
}

/** Writes a new key beside its final name, then links it into place: never a half-written key file, never two writers' keys mixed. */
function create(path: string, pair: { private: string; public: string }): boolean {
  const tmp = `${path}.${process.pid}.tmp`;
  try {
    writeFileSync(tmp, pair.private, { mode: 0o600, flag: 'wx' });
    try {
      linkSync(tmp, path);
    } catch (err) {
      // Someone else created it meanwhile: theirs is used.
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      return false;
    } finally {
      unlinkSync(tmp);
    }
    const pub = `${path}.pub`;
    if (!existsSync(pub)) {
      writeFileSync(pub, `${pair.public.trim()}\n`, { mode: 0o644 });
      chmodSync(pub, 0o644);
    }
    return true;
  } catch (err) {
    throw new VspcError('VSPC_SSH_HOST_KEY_INVALID', `cannot create the SSH host key ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { path });
  }
}

function read(path: string, type: string, created: boolean): HostKey {
  let text: string;
  try {
    const mode = statSync(path).mode & 0o777;
    if ((mode & 0o077) !== 0) {
      throw new VspcError(
        'VSPC_SSH_HOST_KEY_INSECURE',
        `the SSH host key ${path} is accessible by group or others (mode ${mode.toString(8).padStart(4, '0')}): chmod 600 it`,
        { path, mode: mode.toString(8) },
      );
    }
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if (err instanceof VspcError) throw err;
    throw new VspcError('VSPC_SSH_HOST_KEY_INVALID', `cannot read the SSH host key ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { path });
  }
  const parsed = ssh2.utils.parseKey(text);
  const key = (Array.isArray(parsed) ? parsed[0] : parsed) as ParsedKey | Error | undefined;
  if (!key || key instanceof Error || !key.isPrivateKey()) {
    throw new VspcError('VSPC_SSH_HOST_KEY_INVALID', `the SSH host key ${path} is not an unencrypted private key${key instanceof Error ? `: ${key.message}` : ''}`, { path });
  }
  if (key.type !== type) {
    throw new VspcError('VSPC_SSH_HOST_KEY_INVALID', `the SSH host key ${path} is a ${key.type} key, expected ${type}`, { path });
  }
  return { type, fingerprint: fingerprintOf(key.getPublicSSH()), path, privateKey: text, created };
}
