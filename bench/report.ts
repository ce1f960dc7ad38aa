/** Turns a benchmark report into rows, a text table, a Markdown table and target verdicts. */
import type { BenchReport } from './harness.js';

export interface Row {
  /** Footnote number of the workload: 1 scale, 2 storm, 3 throughput, 4 latency, 5 vMotion, 6 SSH, 7 tunnel. */
  ref: number;
  figure: string;
  result: string;
  target: string;
  /** true / false against the target; null when there is no target or no number. */
  met: boolean | null;
}

function n(x: number | null | undefined, digits = 2): string {
  if (x === null || x === undefined || Number.isNaN(x)) return 'n/a';
  return x.toFixed(digits).replace(/\.?0+$/, (m) => (m.startsWith('.') ? '' : m));
}

function ms(x: number): string {
  return x >= 10 ? x.toFixed(1) : x.toFixed(3).replace(/0+$/, '').replace(/\.$/, '');
}

export function rows(r: BenchReport): Row[] {
  const out: Row[] = [];
  const s = r.scale;
  if (s) {
    out.push({
      ref: 1,
      figure: 'scale: VM serial ports registered and listed',
      result: `${s.listed} of ${s.vmPorts} (${s.listenErrors} listen errors, ${s.connectFailures} connect failures)`,
      target: '',
      met: null,
    });
    out.push({
      ref: 1,
      figure: 'scale: time to register all',
      result: `${n(s.timeToRegisterS)} s (${s.registerRatePerS}/s; server CPU ${s.serverCpuUsPerRegistration ?? 'n/a'} µs per VM); list ${s.listMs} ms`,
      target: '',
      met: null,
    });
    const rss = s.perVmPort.rssKiB;
    out.push({
      ref: 1,
      figure: 'scale: server memory per idle VM port',
      result: `RSS ${n(rss, 1)} KiB (heap ${n(s.perVmPort.heapUsedKiB, 1)} KiB, external ${n(s.perVmPort.externalKiB, 1)} KiB)`,
      target: '< 50 KiB RSS',
      met: rss === null ? null : rss < 50,
    });
    out.push({
      ref: 1,
      figure: 'scale: server RSS / heap, baseline → loaded',
      result: `${n(s.baseline?.rssMiB, 1)} → ${n(s.loaded?.rssMiB, 1)} MiB / ${n(s.baseline?.heapUsedMiB, 1)} → ${n(s.loaded?.heapUsedMiB, 1)} MiB`,
      target: '',
      met: null,
    });
    out.push({
      ref: 1,
      figure: 'scale: fds per VM port; ceiling at the fd limit',
      result: `${n(s.perVmPort.fds, 2)} fds; limit ${s.fdLimit ?? 'n/a'} → ≈ ${s.fdCeiling ?? 'n/a'} VM ports`,
      target: '≥ 9000 VM ports',
      met: s.fdCeiling === null ? null : s.fdCeiling >= 9000 && s.listed === s.vmPorts,
    });
  }
  const st = r.storm;
  if (st) {
    out.push({
      ref: 2,
      figure: st.restarted ? 'storm: restart → all VMs back on their ports' : 'storm: drop → all VMs back on their ports',
      result:
        `${n(st.allBackS)} s (${st.restarted ? `new process ready after ${n(st.readyS)} s; ` : ''}` +
        `${st.samePort} same port, ${st.portChanged} changed, ${st.missing} missing; server CPU ${n(st.serverCpuS)} s = ${st.serverCpuUsPerVm ?? 'n/a'} µs per VM)`,
      target: st.vms >= 5000 ? '< 10 s for 5000' : '< 10 s (for 5000)',
      met: st.samePort === st.vms ? st.allBackS < 10 : false,
    });
  }
  const t = r.throughput;
  if (t) {
    for (const c of t.cases) {
      out.push({
        ref: 3,
        figure: `throughput: VM → clients, ${c.clientsPerVm} client${c.clientsPerVm > 1 ? 's' : ''}/VM`,
        result: `${n(c.deliveredMBps, 1)} MB/s to ${c.clients} clients (VMs sent ${n(c.vmSentMBps, 1)} MB/s; server CPU ${n(c.serverCpuPct, 0)}% = ${c.mbPerServerCpuS ?? 'n/a'} MB per CPU-second, load generators ${n(c.loadGenCpuPct, 0)}%; ${c.clientsDropped} dropped)`,
        target: '≥ 200 MB/s',
        met: c.deliveredMBps >= 200,
      });
    }
  }
  const l = r.latency;
  if (l) {
    const fmt = (d: { p50: number; p99: number; max: number }) => `p50 ${ms(d.p50)} / p99 ${ms(d.p99)} / max ${ms(d.max)} ms`;
    out.push({ ref: 4, figure: 'latency idle: echo round trip via vspc', result: fmt(l.idle.vspc), target: '', met: null });
    out.push({ ref: 4, figure: 'latency idle: direct loopback round trip', result: fmt(l.idle.direct), target: '', met: null });
    if (l.idle.relay) out.push({ ref: 4, figure: 'latency idle: through a minimal relay process', result: fmt(l.idle.relay), target: '', met: null });
    out.push({
      ref: 4,
      figure: 'latency idle: added by vspc (vs direct; vs relay)',
      result: `${fmt(l.idle.added)}${l.idle.addedOverRelay ? `; ${fmt(l.idle.addedOverRelay)}` : ''}`,
      target: '',
      met: null,
    });
    if (l.loaded) {
      const k = l.loaded.streamers;
      out.push({ ref: 4, figure: `latency, ${k} VMs streaming: via vspc`, result: fmt(l.loaded.vspc), target: '', met: null });
      out.push({
        ref: 4,
        figure: `latency, ${k} VMs streaming: direct; relay`,
        result: `${fmt(l.loaded.direct)}${l.loaded.relay ? `; ${fmt(l.loaded.relay)}` : ''}`,
        target: '',
        met: null,
      });
      out.push({
        ref: 4,
        figure: `latency, ${k} VMs streaming: added by vspc vs direct`,
        result: `${fmt(l.loaded.added)} (streams ${n(l.loaded.streamedMBps)} MB/s, server CPU ${n(l.loaded.serverCpuPct, 0)}%)`,
        target: 'p99 < 2 ms with 1000',
        met: k >= 1000 ? l.loaded.added.p99 < 2 : null,
      });
      if (l.loaded.addedOverRelay) {
        out.push({ ref: 4, figure: `latency, ${k} VMs streaming: added by vspc vs relay`, result: fmt(l.loaded.addedOverRelay), target: '', met: null });
      }
    }
  }
  const v = r.vmotion;
  if (v) {
    const runs = [v.paced, v.max].filter((x): x is NonNullable<typeof x> => !!x);
    for (const run of runs) {
      const label = run.targetPerS > 0 ? `paced at ${run.targetPerS}/s` : 'back to back (max)';
      out.push({
        ref: 5,
        figure: `vMotion ${label}: rate`,
        result: `${n(run.ratePerS, 1)}/s (${run.completed} completed, ${run.failed} failed${run.targetPerS > 0 ? `, ${run.missed} starts missed` : ''}; server CPU ${n(run.serverCpuPct, 0)}% = ${n(run.serverCpuMsPerVmotion, 3)} ms per vMotion)`,
        target: '≥ 500/s',
        met: run.targetPerS > 0 || run.ratePerS >= 500 ? run.ratePerS >= 500 * 0.98 && run.failed === 0 && run.missed === 0 : false,
      });
      out.push({
        ref: 5,
        figure: `vMotion ${label}: bytes lost (checked both ways)`,
        result: `${run.lostBytes} of ${run.bytesVmToClient + run.bytesClientToVm} (${run.vmsWithErrors} VMs with a mismatch)`,
        target: '0',
        met: run.lostBytes === 0 && run.vmsWithErrors === 0,
      });
      out.push({
        ref: 5,
        figure: `vMotion ${label}: switch-over time`,
        result: `p50 ${ms(run.switchoverMs.p50)} / p99 ${ms(run.switchoverMs.p99)} / max ${ms(run.switchoverMs.max)} ms`,
        target: '',
        met: null,
      });
    }
  }
  const h = r.ssh;
  if (h) {
    const fmt = (d: { p50: number; p99: number; max: number }) => `p50 ${ms(d.p50)} / p99 ${ms(d.p99)} / max ${ms(d.max)} ms`;
    out.push({
      ref: 6,
      figure: `ssh: session setup, first ${h.alone.sessions} sessions (of ${h.sessions})`,
      result: `${n(h.alone.ratePerS, 1)}/s (per session ${fmt(h.alone.perSessionMs)}; server CPU ${n(h.alone.serverCpuMsPerSession, 2)} ms per session; ${h.alone.failed} failed)`,
      target: '≥ 50/s',
      met: h.alone.failed === 0 ? h.alone.ratePerS >= 50 : false,
    });
    if (h.duringFlood) {
      const f = h.duringFlood;
      out.push({
        ref: 6,
        figure: 'ssh: session setup during a flood of failed logins',
        result: `${n(f.ratePerS, 1)}/s (per session ${fmt(f.perSessionMs)}; server CPU ${n(f.serverCpuMsPerSession, 2)} ms per session; ${f.failed} failed) while ${f.floodAttempts} failed logins came in: ${f.floodRejected} examined, ${f.floodRefusedAtAccept} refused at accept`,
        target: '≥ 50/s',
        met: f.failed === 0 ? f.ratePerS >= 50 : false,
      });
    }
    out.push({
      ref: 6,
      figure: 'ssh: server memory per session',
      result: `RSS ${n(h.perSession.rssKiB, 1)} KiB (heap ${n(h.perSession.heapUsedKiB, 1)} KiB, ${n(h.perSession.fds, 2)} fds)`,
      target: '≤ 200 KiB RSS',
      met: h.perSession.rssKiB === null ? null : h.perSession.rssKiB <= 200,
    });
    out.push({ ref: 6, figure: 'ssh: keystroke echo via SSH; via telnet', result: `${fmt(h.latency.ssh)}; ${fmt(h.latency.telnet)}`, target: '', met: null });
    out.push({
      ref: 6,
      figure: 'ssh: latency added by SSH over telnet (idle)',
      result: fmt(h.latency.added),
      target: 'p99 ≤ +1 ms',
      met: h.latency.ssh.n > 0 ? h.latency.added.p99 <= 1 : null,
    });
    out.push({
      ref: 6,
      figure: 'ssh: VM → SSH clients',
      result: `${n(h.throughput.deliveredMBps, 2)} MB/s to ${h.throughput.sessionsOpenAfter} sessions (VMs sent ${n(h.throughput.vmSentMBps, 2)} MB/s; server CPU ${n(h.throughput.serverCpuPct, 0)}% = ${h.throughput.mbPerServerCpuS ?? 'n/a'} MB per CPU-second)`,
      target: '',
      met: null,
    });
  }
  const tu = r.tunnel;
  if (tu) {
    const fmt = (d: { p50: number; p99: number; max: number; n: number }) => (d.n > 0 ? `p50 ${ms(d.p50)} / p99 ${ms(d.p99)} / max ${ms(d.max)} ms (${d.n})` : 'no samples');
    for (const l of tu.lines) {
      const name = l.line === 'uart' ? 'tunnel UART' : 'tunnel virtio-serial';
      out.push({
        ref: 7,
        figure: `${name}: raw line (no tunnel), to / from the guest`,
        result: `${n(l.raw.toGuestKiBps, 1)} / ${n(l.raw.fromGuestKiBps, 1)} KiB/s (${l.bytes / 1024} KiB each way)`,
        target: '',
        met: null,
      });
      for (const [dir, pct, kib, rawKib] of [
        ['to the guest', l.goodputPct.toGuest, l.tunnel.toGuestKiBps, l.raw.toGuestKiBps],
        ['from the guest', l.goodputPct.fromGuest, l.tunnel.fromGuestKiBps, l.raw.fromGuestKiBps],
      ] as const) {
        out.push({
          ref: 7,
          figure: `${name}: tunnel goodput ${dir}`,
          result: `${n(kib, 1)} KiB/s = ${n(pct, 1)} % of the raw line's ${n(rawKib, 1)} KiB/s`,
          target: '≥ 80 % of raw',
          met: pct >= 80,
        });
      }
      out.push({ ref: 7, figure: `${name}: keystroke round trip, idle`, result: fmt(l.rtt.idle), target: '', met: null });
      out.push({
        ref: 7,
        figure: `${name}: keystroke round trip during an upload`,
        result: `${fmt(l.rtt.duringUpload)}; upload ${n(l.bulkUnderKeystrokesKiBps.upload, 1)} KiB/s`,
        target: 'p50 < 50 ms',
        met: l.rtt.duringUpload.n > 0 ? l.rtt.duringUpload.p50 < 50 : null,
      });
      out.push({
        ref: 7,
        figure: `${name}: keystroke round trip during a download`,
        result: `${fmt(l.rtt.duringDownload)}; download ${n(l.bulkUnderKeystrokesKiBps.download, 1)} KiB/s`,
        target: 'p50 < 50 ms',
        met: l.rtt.duringDownload.n > 0 ? l.rtt.duringDownload.p50 < 50 : null,
      });
    }
    const m = tu.memory;
    out.push({
      ref: 7,
      figure: `tunnel: vspc memory per stream (${m.streams} idle streams)`,
      result: `RSS ${n(m.rssKiBPerStream, 1)} KiB (heap ${n(m.heapKiBPerStream, 1)} KiB; RSS ${n(m.rssBeforeMiB, 1)} → ${n(m.rssAfterMiB, 1)} MiB)`,
      target: '',
      met: null,
    });
  }
  for (const [phase, why] of Object.entries(r.notRun ?? {})) out.push({ ref: 0, figure: `${phase}: NOT RUN`, result: why, target: '', met: null });
  return out;
}

function workloads(r: BenchReport): Array<[number, string]> {
  const w: Array<[number, string]> = [];
  if (r.scale) w.push([1, r.scale.workload]);
  if (r.storm) w.push([2, r.storm.workload]);
  if (r.throughput) w.push([3, r.throughput.workload]);
  if (r.latency) w.push([4, r.latency.workload]);
  if (r.vmotion) w.push([5, r.vmotion.workload]);
  if (r.ssh) w.push([6, r.ssh.workload]);
  if (r.tunnel) w.push([7, r.tunnel.workload]);
  return w;
}

export function machineLine(r: BenchReport): string {
  const m = r.machine;
  return `${m.cpuModel}, ${m.cores} cores, ${m.memTotalGiB} GiB RAM, ${m.platform} ${m.kernel}, node ${m.node}, fd limit ${m.fdLimit ?? '?'}, ephemeral ports ${m.ephemeralPorts ?? '?'}, somaxconn ${m.somaxconn ?? '?'}`;
}

function verdict(met: boolean | null): string {
  return met === null ? '' : met ? 'met' : 'NOT met';
}

export function textTable(r: BenchReport): string {
  const rs = rows(r);
  const head = ['', 'figure', 'result', 'target', ''];
  const cells = rs.map((x) => [x.ref ? `[${x.ref}]` : '', x.figure, x.result, x.target, verdict(x.met)]);
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i].length)));
  const line = (c: string[]) => c.map((x, i) => x.padEnd(widths[i])).join('  ').trimEnd();
  const out = [
    `vspc-bench ${r.version}  ${r.startedAt}  (${r.durationS} s)`,
    `machine: ${machineLine(r)}`,
    `vspc: ${r.target.owned ? 'started by the benchmark' : 'external'} at ${r.target.proxy} (admin ${r.target.admin})`,
    '',
    line(head),
    line(widths.map((w) => '-'.repeat(w))),
    ...cells.map(line),
    '',
    ...workloads(r).map(([k, text]) => `[${k}] ${text}`),
  ];
  for (const [phase, msg] of Object.entries(r.failures)) out.push(`FAILED ${phase}: ${msg}`);
  for (const [phase, why] of Object.entries(r.notRun ?? {})) out.push(`NOT RUN ${phase}: ${why}`);
  return out.join('\n');
}

export function markdownTable(r: BenchReport): string {
  const esc = (s: string) => s.replace(/\|/g, '\\|');
  const out = ['| | figure | result | target | |', '|---|---|---|---|---|'];
  for (const x of rows(r)) out.push(`| ${x.ref ? `[${x.ref}]` : ''} | ${esc(x.figure)} | ${esc(x.result)} | ${esc(x.target)} | ${verdict(x.met)} |`);
  out.push('');
  for (const [k, text] of workloads(r)) out.push(`[${k}] ${esc(text)}`, '');
  for (const [phase, msg] of Object.entries(r.failures)) out.push(`FAILED ${phase}: ${esc(msg)}`, '');
  for (const [phase, why] of Object.entries(r.notRun ?? {})) out.push(`NOT RUN ${phase}: ${esc(why)}`, '');
  return out.join('\n');
}

/** Every row with a target, for the JSON. */
export function targets(r: BenchReport): Array<{ figure: string; result: string; target: string; met: boolean | null }> {
  return rows(r)
    .filter((x) => x.target)
    .map(({ figure, result, target, met }) => ({ figure, result, target, met }));
}
