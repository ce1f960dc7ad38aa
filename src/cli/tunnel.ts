/**
 * `vspc-admin tunnel NAME PORT`: a stdio bridge to a port in a guest through its serial
 * tunnel, for `ssh -o ProxyCommand="vspc-admin tunnel %h 22" root@web01` (or `scp`,
 * `rsync -e ...`, anything that takes a command for its connection).
 *
 * It goes through the admin API (`GET /api/v1/tunnel?tunnel=NAME&port=PORT`, `Upgrade:
 * vspc-tunnel`) with the same address, TLS and token as every other command: the
 * server answers `101` once the guest's agent accepted the stream, so a refusal (a
 * port not on the agent's allow list, nothing listening, no agent) is an error message
 * here and exit status 1, not a silent hang-up. stdin → the guest port (its end is a
 * half-close), the guest's bytes → stdout; exit 0 when the guest side ends, 1 when the
 * stream is reset.
 */
import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';
import { VspcError } from '../errors.js';
import type { AdminClient } from './admin-client.js';

function parseGuestPort(text: string): number {
  if (!/^\d+$/.test(text) || Number(text) < 1 || Number(text) > 65535) throw new InvalidArgumentError('give a port 1-65535 in the guest.');
  return Number(text);
}

export function addTunnelCommand(program: Command, client: (timeoutMs?: number) => AdminClient): void {
  program
    .command('tunnel')
    .description('connect stdin/stdout to a port in a guest through its serial tunnel (ssh -o ProxyCommand="vspc-admin tunnel %h 22")')
    .argument('<name>', 'the tunnel (config file tunnels: name)')
    .argument('<port>', 'the port in the guest (its agent must allow it)', parseGuestPort)
    .action(async (name: string, port: number) => {
      // Waiting for the guest to answer may take the tunnel's open timeout (30 s).
      const { socket, head } = await client(60_000).upgrade(`/api/v1/tunnel?tunnel=${encodeURIComponent(name)}&port=${port}`, 'vspc-tunnel');
      socket.setNoDelay(true);
      if (head.length > 0) process.stdout.write(head);
      process.stdin.pipe(socket);
      socket.pipe(process.stdout, { end: false });
      await new Promise<void>((resolve, reject) => {
        let failed: Error | null = null;
        socket.on('error', (err: NodeJS.ErrnoException) => {
          failed = new VspcError('VSPC_TUNNEL_STREAM_RESET', `the tunnel stream to ${name} port ${port} was reset (${err.code ?? err.message})`);
        });
        socket.on('close', () => {
          process.stdin.unpipe(socket);
          process.stdin.pause();
          if (failed) reject(failed);
          else resolve();
        });
      });
    });
}
