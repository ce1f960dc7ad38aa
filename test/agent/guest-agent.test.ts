/**
 * The C guest agent in a real QEMU guest (issue 16): the project's busybox test guest
 * with the static agent, its init script and test/support/guest/vspc-agent-hook.sh
 * (variant 'agent'). ttyS0 is the console (a shell, for diagnostics and for killing
 * the agent); ttyS1 is the tunnel, an emulated 16550 UART on a unix socket. The host
 * side is the reference TunnelEndpoint (role 'host') on that socket. Services in the
 * guest are busybox `nc -ll -e`: echo (7), sha256sum (9), `seq 1 50000` (19).
 *
 * The variant is reusable (the SSH end-to-end test adds dropbear to it): the hook reads
 * the kernel command line (vspc.agent=, vspc.allow=, vspc.services=).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import net from 'node:net';
import { join } from 'node:path';
import { FrameDecoder, FrameType, MAX_LARGE_PAYLOAD, Reason, TunnelErrorCode } from '../../src/protocol/tunnel/index.js';
import { SerialConsole, guestArtifacts, guestCacheDir, startGuest, type Guest } from '../support/qemu.js';
import { HostSide, ROOT, buildCAgent, now, randomBytesSeeded, sha256, type HostStream } from './harness.js';

const VARIANT = 'agent';

/** Builds (stamp-based: instant when unchanged) the guest variant with the C agent. */
export function buildAgentGuest(): void {
  const { agent } = buildCAgent();
  execFileSync(
    'bash',
    [
      join(ROOT, 'test/support/guest/build-guest.sh'),
      '--variant', VARIANT,
      '--add-bin', `${agent}:/usr/local/sbin/vspc-agent`,
      '--add', `${join(ROOT, 'packaging/vspc-agent.init')}:/etc/init.d/vspc-agent`,
      '--add', `${join(ROOT, 'test/support/guest/vspc-agent-hook.sh')}:/etc/vspc-init.d/50-vspc-agent.sh`,
    ],
    { stdio: ['ignore', 'ignore', 'inherit'], timeout: 300_000, env: { ...process.env, VSPC_GUEST_CACHE: guestCacheDir() } },
  );
}

async function transfer(host: HostSide, port: number, data: Buffer | undefined, timeoutMs: number): Promise<HostStream> {
  const s = host.open(port, { keep: true });
  if (data) await s.writeAll(data, 16384, timeoutMs);
  s.end();
  await host.until(() => s.closed || s.error !== undefined, `stream to guest port ${port} closes (got ${s.received} bytes)`, timeoutMs);
  if (s.error) throw s.error;
  return s;
}

describe('C guest agent in a real QEMU guest (emulated UART ttyS1, virtio-serial)', () => {
  test('handshake, echo, half-close, a known stream, refusal, a virtio-serial port, agent restart under its init script', { timeout: 300_000 }, async (t) => {
    buildAgentGuest();
    const artifacts = guestArtifacts(VARIANT);
    let guest: Guest | undefined;
    let con: SerialConsole | undefined;
    let line: net.Socket | undefined;
    let host: HostSide | undefined;
    let vline: net.Socket | undefined;
    let vhost: HostSide | undefined;
    try {
      guest = await startGuest({
        artifacts,
        serial: ['unix:{dir}/ttyS0.sock,server=on,wait=off', 'unix:{dir}/ttyS1.sock,server=on,wait=off'],
        args: ['-device', 'virtio-serial', '-chardev', 'socket,id=vt,path={dir}/vport.sock,server=on,wait=off', '-device', 'virtserialport,chardev=vt,name=vspc.tunnel'],
        append: 'vspc.agent=/dev/ttyS1 vspc.allow=7,9,19 vspc.agent_opts=-v vspc.services=1',
      });
      con = await SerialConsole.connectUnix(guest.path('ttyS0.sock'));
      const bootMs = await con.waitForShell(90_000, guest.spawnedAt);
      t.diagnostic(`guest booted in ${bootMs} ms`);

      // The tunnel: the host endpoint on QEMU's ttyS1 socket.
      line = net.connect(guest.path('ttyS1.sock'));
      await new Promise<void>((resolve, reject) => {
        line!.once('connect', resolve);
        line!.once('error', reject);
      });
      const sock = line;
      host = new HostSide({ write: (b) => sock.write(b) });
      const h = host;
      sock.on('data', (b: Buffer) => h.receive(b));
      sock.on('drain', () => h.drained());
      sock.on('error', () => {});
      host.start();
      await host.waitUp(30_000);
      assert.deepEqual(host.errors.map((e) => e.code), [], 'no echo: the agent put ttyS1 in raw mode');
      const log = await con.run('cat /var/log/vspc-agent.log; stty -F /dev/ttyS1 -a | grep -o -- "-echo \\|-icanon\\|-opost"');
      assert.match(log.output, /line \/dev\/ttyS1 open \(tty, raw/);
      assert.match(log.output, /link up: new session/);

      // Echo both ways.
      const data = randomBytesSeeded(64 * 1024, 1);
      let t0 = now();
      const e = await transfer(host, 7, data, 120_000);
      let ms = now() - t0;
      assert.equal(e.digest, sha256(data), 'echo through the UART');
      t.diagnostic(`64 KiB echoed in ${ms.toFixed(0)} ms (${((64 * 1000) / ms).toFixed(1)} KiB/s each way, at once)`);

      // host → guest bulk, FIN, then the guest's answer (sha256sum after end of input).
      const up = randomBytesSeeded(256 * 1024, 2);
      t0 = now();
      const sum = await transfer(host, 9, up, 120_000);
      ms = now() - t0;
      assert.equal(sum.text().trim().split(/\s+/)[0], sha256(up), 'sha256sum in the guest of what the host sent');
      t.diagnostic(`host → guest: 256 KiB in ${ms.toFixed(0)} ms (${((256 * 1000) / ms).toFixed(1)} KiB/s)`);

      // guest → host: a known stream, then the guest's FIN.
      t0 = now();
      const seq = await transfer(host, 19, undefined, 120_000);
      ms = now() - t0;
      const want = Array.from({ length: 50000 }, (_, i) => `${i + 1}\n`).join('');
      assert.equal(seq.received, want.length);
      assert.equal(seq.digest, sha256(Buffer.from(want)), '`seq 1 50000` from the guest, intact');
      t.diagnostic(`guest → host: ${(want.length / 1024).toFixed(0)} KiB in ${ms.toFixed(0)} ms (${(want.length / 1.024 / ms).toFixed(1)} KiB/s)`);

      // Not allowed in the guest.
      const denied = host.open(22);
      await host.until(() => denied.error !== undefined, 'OPEN_FAIL for port 22');
      assert.equal(denied.error!.code, TunnelErrorCode.OPEN_FAILED);
      assert.equal(denied.error!.reason, Reason.NOT_ALLOWED);

      // A second agent on a virtio-serial port (not a tty; it hangs up while nobody is
      // connected on the host side, so the agent retries quietly until we connect).
      const dev = (await con.run('for p in /sys/class/virtio-ports/*; do [ "$(cat $p/name)" = vspc.tunnel ] && echo /dev/${p##*/}; done')).output.trim();
      assert.match(dev, /^\/dev\/vport\d+p\d+$/);
      await con.run(`(/usr/local/sbin/vspc-agent --device ${dev} --allow 7,9 </dev/null >/var/log/agent-virtio.log 2>&1 &)`);
      // Connect once the agent has met the hangup of the unconnected port (an event in its log).
      await con.run('until grep -q "retrying quietly" /var/log/agent-virtio.log; do usleep 50000; done', 30_000);
      vline = net.connect(guest.path('vport.sock'));
      await new Promise<void>((resolve, reject) => {
        vline!.once('connect', resolve);
        vline!.once('error', reject);
      });
      const vsock = vline;
      // As vspc does (src/access/tunnel/link.ts): accept large frames; the agent announces
      // them on this port (not a tty), so the session uses 16 KiB frames (spec 5.1).
      vhost = new HostSide({ write: (b) => vsock.write(b) }, { maxPayload: MAX_LARGE_PAYLOAD });
      const vh = vhost;
      // The largest DATA frame the agent sends (a copy of the line, decoded).
      const tap = new FrameDecoder(MAX_LARGE_PAYLOAD);
      let largestFromAgent = 0;
      vsock.on('data', (b: Buffer) => {
        for (const f of tap.decode(b)) if (f.type === FrameType.DATA) largestFromAgent = Math.max(largestFromAgent, f.payload.length);
        vh.receive(b);
      });
      vsock.on('drain', () => vh.drained());
      vsock.on('error', () => {});
      vhost.start();
      await vhost.waitUp(30_000);
      const big = randomBytesSeeded(1 << 20, 7);
      t0 = now();
      const ve = await transfer(vhost, 7, big, 120_000);
      ms = now() - t0;
      assert.equal(ve.digest, sha256(big), 'echo over virtio-serial');
      t.diagnostic(`virtio-serial: 1 MiB echoed in ${ms.toFixed(0)} ms (${((1024 * 1000) / ms).toFixed(0)} KiB/s each way, at once)`);
      const vsum = await transfer(vhost, 9, big, 120_000);
      assert.equal(vsum.text().trim().split(/\s+/)[0], sha256(big));
      const vlog = (await con.run('cat /var/log/agent-virtio.log')).output;
      assert.match(vlog, /open \(not a tty; frames up to 16384 bytes\)/);
      assert.equal(largestFromAgent, MAX_LARGE_PAYLOAD, 'large frames over virtio-serial');
      assert.ok((vlog.match(/ lost /g) ?? []).length <= 2, `the hangups before the host connected are logged once:\n${vlog}`);
      vhost.destroy();
      vline.destroy();

      // Kill the agent mid-stream: the init script restarts it, its new boot id resets
      // the stream, and new streams work.
      const open = host.open(7);
      await host.until(() => open.opened, 'a stream held open');
      const restarts = host.peerRestarts;
      // The init script's supervisor runs the agent and records its pid.
      const killed = await con.run('kill -9 "$(cat /run/vspc-agent.agent.pid)"');
      assert.equal(killed.status, 0, `the agent was killed: ${killed.output}`);
      await host.until(() => open.error !== undefined, 'the stream is reset by the restarted agent', 30_000);
      assert.equal(open.error!.reason, Reason.PEER_RESTARTED);
      assert.equal(host.peerRestarts, restarts + 1);
      await host.waitUp(30_000);
      const again = await transfer(host, 7, Buffer.from('after the restart\n'), 60_000);
      assert.equal(again.text(), 'after the restart\n');
      const status = await con.run('/etc/init.d/vspc-agent status && /etc/init.d/vspc-agent stats');
      assert.equal(status.status, 0, status.output);
      const st = host.ep.stats();
      t.diagnostic(`host: frames out ${st.framing.framesOut}, retransmits ${st.link.retransmits}, srtt ${st.link.srtt?.toFixed(1)} ms, discarded ${st.framing.discardedBytes} bytes`);
    } catch (err) {
      if (con) {
        try {
          (err as Error).message += `\n--- guest agent log ---\n${(await con.run('cat /var/log/vspc-agent.log', 10_000)).output}`;
        } catch {
          /* the console is gone */
        }
      }
      throw err;
    } finally {
      vhost?.destroy();
      vline?.destroy();
      host?.destroy();
      line?.destroy();
      con?.close();
      await guest?.stop();
    }
  });
});
