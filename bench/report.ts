/** Turns a benchmark report into rows, a text table, a Markdown table and target verdicts. */
import type { BenchReport, VmotionRun } from './harness.js';

export interface Row {
  /** Footnote number of the workload: 1 scale, 2 storm, 3 throughput, 4 latency, 5 vMotion, 6 unix consoles, 7 glob, 8 SSH, 9 tunnel, 10 cluster. */
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
    if (s.stub) {
      out.push({
        ref: 1,
        figure: 'scale: the same against the option-232 stub',
        result: `${s.stub.registered} in ${n(s.stub.timeToRegisterS)} s (server CPU ${s.stub.serverCpuUsPerRegistration ?? 'n/a'} µs per VM); RSS ${n(s.stub.perVmPort.rssKiB, 1)} KiB per idle VM port (heap ${n(s.stub.perVmPort.heapUsedKiB, 1)} KiB)`,
        target: '',
        met: null,
      });
    }
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
      const vspc = c.target === 'vspc';
      out.push({
        ref: 3,
        figure: vspc ? `throughput: VM → clients, ${c.clientsPerVm} client${c.clientsPerVm > 1 ? 's' : ''}/VM` : `throughput: the same through the ${c.target === 'relay-c' ? 'C' : 'Node.js'} relay`,
        result: `${n(c.deliveredMBps, 1)} MB/s to ${c.clients} clients (VMs sent ${n(c.vmSentMBps, 1)} MB/s; ${vspc ? 'server' : 'relay'} CPU ${n(c.serverCpuPct, 0)}% = ${c.mbPerServerCpuS ?? 'n/a'} MB per CPU-second, load generators ${n(c.loadGenCpuPct, 0)}%; ${c.clientsDropped} dropped)`,
        target: vspc ? '≥ 200 MB/s' : '',
        met: vspc ? c.deliveredMBps >= 200 : null,
      });
      if (c.echo) {
        out.push({
          ref: 3,
          figure: `throughput: keystroke echo meanwhile, ${vspc ? `via vspc (${c.clientsPerVm} client${c.clientsPerVm > 1 ? 's' : ''}/VM)` : `through the ${c.target === 'relay-c' ? 'C' : 'Node.js'} relay`}`,
          result: `p50 ${ms(c.echo.p50)} / p99 ${ms(c.echo.p99)} / max ${ms(c.echo.max)} ms (${c.echo.n} round trips${c.echoErrors ? `, ${c.echoErrors} errors` : ''})`,
          target: '',
          met: null,
        });
      }
    }
    for (const note of t.notes) out.push({ ref: 3, figure: 'throughput: baselines', result: note, target: '', met: null });
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
    const all: Array<[VmotionRun | null | undefined, boolean]> = [
      [v.paced, false],
      [v.max, false],
      [v.stub?.paced, true],
      [v.stub?.max, true],
    ];
    for (const [run, isStub] of all) {
      if (!run) continue;
      if (isStub) {
        const label = run.targetPerS > 0 ? `paced at ${run.targetPerS}/s` : 'back to back (max)';
        out.push({
          ref: 5,
          figure: `vMotion ${label}, option-232 stub: rate`,
          result: `${n(run.ratePerS, 1)}/s (${run.completed} completed, ${run.failed} failed; stub CPU ${n(run.serverCpuPct, 0)}% = ${n(run.serverCpuMsPerVmotion, 3)} ms per vMotion; load generators ${(run.loadGenCpuPct ?? []).map((x) => `${n(x, 0)}%`).join(', ')}); lost ${run.lostBytes} bytes`,
          target: '',
          met: null,
        });
        continue;
      }
      const label = run.targetPerS > 0 ? `paced at ${run.targetPerS}/s` : 'back to back (max)';
      out.push({
        ref: 5,
        figure: `vMotion ${label}: rate`,
        result: `${n(run.ratePerS, 1)}/s (${run.completed} completed, ${run.failed} failed${run.targetPerS > 0 ? `, ${run.missed} starts missed` : ''}; server CPU ${n(run.serverCpuPct, 0)}% = ${n(run.serverCpuMsPerVmotion, 3)} ms per vMotion; load generators ${(run.loadGenCpuPct ?? []).map((x) => `${n(x, 0)}%`).join(', ')})`,
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
  const u = r.unix;
  if (u) {
    out.push({
      ref: 6,
      figure: 'unix consoles: declared, connected and listed',
      result: `${u.attached} of ${u.consoles} connected in ${n(u.attachS)} s after the reload; ${u.listed} listed in ${u.listMs} ms`,
      target: '',
      met: null,
    });
    out.push({
      ref: 6,
      figure: 'unix consoles: server memory per idle console',
      result: `RSS ${n(u.perConsole.rssKiB, 1)} KiB (heap ${n(u.perConsole.heapUsedKiB, 1)} KiB, external ${n(u.perConsole.externalKiB, 1)} KiB; ${n(u.perConsole.fds, 2)} fds)`,
      target: '≤ 20 KiB RSS',
      met: u.perConsole.rssKiB === null ? null : u.perConsole.rssKiB <= 20,
    });
    const d = u.restart.streamingMs;
    out.push({
      ref: 6,
      figure: 'unix consoles: all endpoints restart at once → streaming again',
      result: `${u.restart.back} of ${u.restart.endpoints} (${u.restart.within5s} within 5 s of their endpoint's return); p50 ${ms(d.p50)} / p99 ${ms(d.p99)} / max ${ms(d.max)} ms`,
      target: 'all within 5 s',
      met: u.restart.within5s === u.restart.endpoints,
    });
    const tu = u.throughput;
    out.push({
      ref: 6,
      figure: `unix consoles: VM → client throughput, unix vs ESXi sources (${tu.streams} each)`,
      result: `${n(tu.unix?.deliveredMBps, 1)} vs ${n(tu.esxi?.deliveredMBps, 1)} MB/s = ${tu.ratio === null ? 'n/a' : `${n(tu.ratio * 100, 1)}%`} (server CPU ${n(tu.unix?.serverCpuPct, 0)}% vs ${n(tu.esxi?.serverCpuPct, 0)}%)`,
      target: '≥ 90%',
      met: tu.ratio === null ? null : tu.ratio >= 0.9,
    });
  }
  const g = r.glob;
  if (g) {
    out.push({
      ref: 7,
      figure: `glob ${g.pattern}: time per match by name length`,
      result: g.sizes.map((x) => `${x.bytes} B ${n(x.usPerMatch, 2)} µs (${x.steps} steps)`).join('; '),
      target: '',
      met: null,
    });
    const worst = Math.max(...g.growth);
    out.push({
      ref: 7,
      figure: `glob ${g.pattern}: growth per doubling of the name`,
      result: `time ×${g.growth.join(', ×')}; steps ×${g.stepGrowth.join(', ×')}`,
      target: 'linear (≤ ×2.5)',
      met: g.growth.length === 0 ? null : worst <= 2.5 && Math.max(...g.stepGrowth) <= 2.1,
    });
  }
  const h = r.ssh;
  if (h) {
    const fmt = (d: { p50: number; p99: number; max: number }) => `p50 ${ms(d.p50)} / p99 ${ms(d.p99)} / max ${ms(d.max)} ms`;
    out.push({
      ref: 8,
      figure: `ssh: session setup, first ${h.alone.sessions} sessions (of ${h.sessions})`,
      result: `${n(h.alone.ratePerS, 1)}/s (per session ${fmt(h.alone.perSessionMs)}; server CPU ${n(h.alone.serverCpuMsPerSession, 2)} ms per session; ${h.alone.failed} failed)`,
      target: '≥ 50/s',
      met: h.alone.failed === 0 ? h.alone.ratePerS >= 50 : false,
    });
    if (h.duringFlood) {
      const f = h.duringFlood;
      out.push({
        ref: 8,
        figure: 'ssh: session setup during a flood of failed logins',
        result: `${n(f.ratePerS, 1)}/s (per session ${fmt(f.perSessionMs)}; server CPU ${n(f.serverCpuMsPerSession, 2)} ms per session; ${f.failed} failed) while ${f.floodAttempts} failed logins came in: ${f.floodRejected} examined, ${f.floodRefusedAtAccept} refused at accept`,
        target: '≥ 50/s',
        met: f.failed === 0 ? f.ratePerS >= 50 : false,
      });
    }
    out.push({
      ref: 8,
      figure: 'ssh: server memory per session',
      result: `RSS ${n(h.perSession.rssKiB, 1)} KiB (heap ${n(h.perSession.heapUsedKiB, 1)} KiB, ${n(h.perSession.fds, 2)} fds)`,
      target: '≤ 200 KiB RSS',
      met: h.perSession.rssKiB === null ? null : h.perSession.rssKiB <= 200,
    });
    out.push({ ref: 8, figure: 'ssh: keystroke echo via SSH; via telnet', result: `${fmt(h.latency.ssh)}; ${fmt(h.latency.telnet)}`, target: '', met: null });
    out.push({
      ref: 8,
      figure: 'ssh: latency added by SSH over telnet (idle)',
      result: fmt(h.latency.added),
      target: 'p99 ≤ +1 ms',
      met: h.latency.ssh.n > 0 ? h.latency.added.p99 <= 1 : null,
    });
    out.push({
      ref: 8,
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
      const range = (x: { min: number; max: number }, d = 1) => `${n(x.min, d)}–${n(x.max, d)}`;
      // A diagnostic row (no target): "median X KiB/s (range)" over several rounds, the one figure otherwise (as the rows above).
      const diagnostic = (figure: string, d: { fromGuest: { median: number; min: number; max: number }; pctOfRaw: number }, what: string): Row => ({
        ref: 9,
        figure: `${name}: ${figure}`,
        result:
          (l.repeats > 1 ? `median ${n(d.fromGuest.median, 1)} KiB/s (${range(d.fromGuest)})` : `${n(d.fromGuest.median, 1)} KiB/s`) +
          ` = ${n(d.pctOfRaw, 1)} % of the raw line${l.repeats > 1 ? "'s median" : ''} (${what}; not a target)`,
        target: '',
        met: null,
      });
      const rounds = l.repeats > 1 ? `, ${l.repeats} rounds` : '';
      out.push({
        ref: 9,
        figure: `${name}: raw line (no tunnel), to / from the guest`,
        result:
          l.repeats > 1
            ? `median ${n(l.raw.toGuestKiBps, 1)} / ${n(l.raw.fromGuestKiBps, 1)} KiB/s (ranges ${range(l.rounds.raw.toGuest)} / ${range(l.rounds.raw.fromGuest)}; ${l.bytes / 1024} KiB each way${rounds})`
            : `${n(l.raw.toGuestKiBps, 1)} / ${n(l.raw.fromGuestKiBps, 1)} KiB/s (${l.bytes / 1024} KiB each way)`,
        target: '',
        met: null,
      });
      for (const [dir, pct, kib, rawKib, tun, per] of [
        ['to the guest', l.goodputPct.toGuest, l.tunnel.toGuestKiBps, l.raw.toGuestKiBps, l.rounds.tunnel.toGuest, l.rounds.pct.toGuest],
        ['from the guest', l.goodputPct.fromGuest, l.tunnel.fromGuestKiBps, l.raw.fromGuestKiBps, l.rounds.tunnel.fromGuest, l.rounds.pct.fromGuest],
      ] as const) {
        out.push({
          ref: 9,
          figure: `${name}: tunnel goodput ${dir}`,
          result:
            l.repeats > 1
              ? `median ${n(kib, 1)} KiB/s (${range(tun)}) = ${n(pct, 1)} % of the raw line's median ${n(rawKib, 1)} KiB/s; per round ${per.samples.map((p) => n(p, 0)).join(' / ')} %`
              : `${n(kib, 1)} KiB/s = ${n(pct, 1)} % of the raw line's ${n(rawKib, 1)} KiB/s`,
          target: '≥ 80 % of raw',
          met: pct >= 80,
        });
      }
      if (l.rawViaGuestTcp) out.push(diagnostic('raw line from the guest via an in-guest TCP hop', l.rawViaGuestTcp, 'nc from the download source to the line without the tunnel'));
      if (l.guestTcpAlone) {
        out.push(diagnostic("the guest's loopback TCP alone", l.guestTcpAlone, 'the download source read by dd, 64 KiB at a time, into /dev/null, no line: what every tunnel byte from the guest crosses first'));
      }
      out.push({ ref: 9, figure: `${name}: keystroke round trip, idle`, result: fmt(l.rtt.idle), target: '', met: null });
      for (const [dir, what, rtt] of [['upload', 'an upload', l.rtt.duringUpload], ['download', 'a download', l.rtt.duringDownload]] as const) {
        out.push({
          ref: 9,
          figure: `${name}: keystroke round trip during ${what}`,
          result: `${fmt(rtt)}; ${dir} ${n(l.bulkUnderKeystrokesKiBps[dir], 1)} KiB/s${l.repeats > 1 ? ` (median of ${l.repeats})` : ''}`,
          target: 'p50 < 50 ms',
          met: rtt.n > 0 ? rtt.p50 < 50 : null,
        });
      }
    }
    const m = tu.memory;
    out.push({
      ref: 9,
      figure: `tunnel: vspc memory per stream (${m.streams} idle streams)`,
      result: `RSS ${n(m.rssKiBPerStream, 1)} KiB (heap ${n(m.heapKiBPerStream, 1)} KiB; RSS ${n(m.rssBeforeMiB, 1)} → ${n(m.rssAfterMiB, 1)} MiB)`,
      target: '',
      met: null,
    });
  }
  const c = r.cluster;
  if (c) {
    const total = c.nodes.reduce((n, x) => n + x.registered, 0);
    out.push({
      ref: 10,
      figure: `cluster: ESXi serial ports across ${c.nodes.length} nodes (PostgreSQL)`,
      result: `${total} of ${c.vms} registered, all in ${n(c.allRegisteredS)} s`,
      target: '30000',
      met: total >= 30_000,
    });
    for (const x of [...c.nodes, ...(c.sqlite ? [c.sqlite] : [])]) {
      out.push({
        ref: 10,
        figure: `cluster: ${x.node}: registration, RSS per port`,
        result: `${x.registered} in ${n(x.timeToRegisterS)} s (${x.registerRatePerS}/s${x.retried ? `, ${x.retried} handshakes retried` : ''}); ${n(x.rssKiBPerPort)} KiB per port (RSS ${n(x.rssMiB, 0)} MiB, ${x.fds ?? 'n/a'} fds of ${x.fdLimit ?? 'n/a'})`,
        target: '',
        met: null,
      });
    }
    if (c.vmotion) {
      for (const [label, f] of [['same-node', c.vmotion.same], ['cross-node', c.vmotion.cross]] as const) {
        out.push({
          ref: 10,
          figure: `cluster: ${label} vMotions: rate, switch-over p50/p99`,
          result:
            `${n(f.ratePerS, 1)}/s (${f.completed} completed, ${f.failed} failed, ${f.movers} at a time); COMPLETE → client p50 ${n(f.switchoverOutMs.p50, 2)} p99 ${n(f.switchoverOutMs.p99, 2)} ms, ` +
            `COMPLETE → VM p50 ${n(f.switchoverInMs.p50, 2)} p99 ${n(f.switchoverInMs.p99, 2)} ms (BEGIN → PEER-OK p50 ${n(f.handshakeMs.p50, 2)} p99 ${n(f.handshakeMs.p99, 2)} ms)`,
          target: '',
          met: null,
        });
        out.push({
          ref: 10,
          figure: `cluster: ${label} vMotions: bytes lost / duplicated (checked both ways)`,
          result: `${f.lostBytes} / ${f.duplicatedBytes} of ${f.bytesVmToClient + f.bytesClientToVm} (${f.vmsWithErrors} VMs with errors)`,
          target: '0',
          met: f.lostBytes === 0 && f.duplicatedBytes === 0 && f.vmsWithErrors === 0,
        });
      }
    }
    if (c.failover) {
      out.push({
        ref: 10,
        figure: `cluster: ${c.failover.killed} SIGKILLed → its ${c.failover.vmPorts} VMs registered again on the others`,
        result: `${n(c.failover.toAllBackS)} s${c.failover.reconnectFailures ? ` (${c.failover.reconnectFailures} VMs still out after a 60 s round of retries, and in again in a later one)` : ''}`,
        target: '',
        met: null,
      });
    }
  }
  for (const [phase, why] of Object.entries(r.notRun ?? {})) out.push({ ref: 0, figure: `${phase}: NOT RUN`, result: why, target: '', met: null });
  return out;
}

/** A figure as vspc / its baseline, both measured in the same run. */
export interface RatioRow {
  figure: string;
  vspc: string;
  baseline: string;
  /** vspc / baseline; null when either is missing. */
  ratio: number | null;
  target: string;
  met: boolean | null;
}

export function ratioRows(r: BenchReport): RatioRow[] {
  const out: RatioRow[] = [];
  const div = (a: number | null | undefined, b: number | null | undefined) => (a === null || a === undefined || b === null || b === undefined || b === 0 ? null : Math.round((a / b) * 100) / 100);
  const t = r.throughput;
  if (t) {
    const v = t.cases.find((c) => c.target === 'vspc' && c.clientsPerVm === 1) ?? t.cases.find((c) => c.target === 'vspc');
    const rc = t.cases.find((c) => c.target === 'relay-c');
    const rn = t.cases.find((c) => c.target === 'relay-node');
    const echo = (c: typeof v) => (c?.echo ? `${ms(c.echo.p50)} / ${ms(c.echo.p99)} ms` : 'n/a');
    if (v && (rc || rn)) {
      const k = v.vms;
      if (rc) {
        const q = div(v.echo?.p99, rc.echo?.p99);
        out.push({ figure: `keystroke echo p50 / p99 while ${k} VMs stream: vs C relay`, vspc: echo(v), baseline: echo(rc), ratio: q, target: 'p99 ≤ 2×', met: q === null ? null : q <= 2 });
      }
      if (rn) out.push({ figure: `keystroke echo p50 / p99 while ${k} VMs stream: vs Node.js relay`, vspc: echo(v), baseline: echo(rn), ratio: div(v.echo?.p99, rn.echo?.p99), target: '', met: null });
      if (rn) {
        const q = div(v.mbPerServerCpuS, rn.mbPerServerCpuS);
        out.push({ figure: 'streaming, MB per CPU-second: vs Node.js relay', vspc: `${v.mbPerServerCpuS ?? 'n/a'}`, baseline: `${rn.mbPerServerCpuS ?? 'n/a'}`, ratio: q, target: '≥ 1×', met: q === null ? null : q >= 0.98 });
      }
      if (rc) out.push({ figure: 'streaming, MB per CPU-second: vs C relay', vspc: `${v.mbPerServerCpuS ?? 'n/a'}`, baseline: `${rc.mbPerServerCpuS ?? 'n/a'}`, ratio: div(v.mbPerServerCpuS, rc.mbPerServerCpuS), target: '', met: null });
      if (rn) out.push({ figure: 'streaming, MB/s delivered: vs Node.js relay', vspc: `${v.deliveredMBps}`, baseline: `${rn.deliveredMBps}`, ratio: div(v.deliveredMBps, rn.deliveredMBps), target: '', met: null });
    }
  }
  const vm = r.vmotion;
  if (vm?.stub) {
    for (const [label, a, b] of [
      ['back to back', vm.max, vm.stub.max],
      ['paced', vm.paced, vm.stub.paced],
    ] as const) {
      if (!a || !b) continue;
      const q = div(a.serverCpuMsPerVmotion, b.serverCpuMsPerVmotion);
      out.push({
        figure: `server CPU per vMotion (${label}${a.targetPerS > 0 ? ` at ${a.targetPerS}/s` : ''}, ${r.scale?.vmPorts ?? r.options.vms} VMs registered): vs stub`,
        vspc: `${n(a.serverCpuMsPerVmotion, 3)} ms`,
        baseline: `${n(b.serverCpuMsPerVmotion, 3)} ms`,
        ratio: q,
        target: label === 'back to back' ? '≤ 1.3×' : '',
        met: label === 'back to back' && q !== null ? q <= 1.3 : null,
      });
      if (label === 'back to back') out.push({ figure: 'vMotions per second, back to back: vs stub', vspc: `${n(a.ratePerS, 0)}/s`, baseline: `${n(b.ratePerS, 0)}/s`, ratio: div(a.ratePerS, b.ratePerS), target: '', met: null });
    }
  }
  const s = r.scale;
  if (s?.stub) {
    const rss = s.perVmPort.rssKiB;
    out.push({
      figure: `RSS per idle VM serial port at ${s.vmPorts}: vs stub`,
      vspc: `${n(rss, 1)} KiB`,
      baseline: `${n(s.stub.perVmPort.rssKiB, 1)} KiB`,
      ratio: div(rss, s.stub.perVmPort.rssKiB),
      target: '≤ 10 KiB',
      met: rss === null ? null : rss <= 10,
    });
    out.push({ figure: 'heap per idle VM serial port: vs stub', vspc: `${n(s.perVmPort.heapUsedKiB, 1)} KiB`, baseline: `${n(s.stub.perVmPort.heapUsedKiB, 1)} KiB`, ratio: div(s.perVmPort.heapUsedKiB, s.stub.perVmPort.heapUsedKiB), target: '', met: null });
    out.push({ figure: 'server CPU per registration: vs stub', vspc: `${s.serverCpuUsPerRegistration ?? 'n/a'} µs`, baseline: `${s.stub.serverCpuUsPerRegistration ?? 'n/a'} µs`, ratio: div(s.serverCpuUsPerRegistration, s.stub.serverCpuUsPerRegistration), target: '', met: null });
  }
  const u = r.unix;
  if (u?.throughput.unix && u.throughput.esxi) {
    const q = u.throughput.ratio;
    out.push({ figure: 'VM → client MB/s, unix-socket source: vs ESXi source', vspc: `${n(u.throughput.unix.deliveredMBps, 1)}`, baseline: `${n(u.throughput.esxi.deliveredMBps, 1)}`, ratio: q, target: '≥ 0.9×', met: q === null ? null : q >= 0.9 });
  }
  return out;
}

function ratioLines(r: BenchReport): string[][] {
  return ratioRows(r).map((x) => [x.figure, x.vspc, x.baseline, x.ratio === null ? 'n/a' : `${x.ratio}×`, x.target, verdict(x.met)]);
}

function workloads(r: BenchReport): Array<[number, string]> {
  const w: Array<[number, string]> = [];
  if (r.scale) w.push([1, r.scale.workload]);
  if (r.storm) w.push([2, r.storm.workload]);
  if (r.throughput) w.push([3, r.throughput.workload]);
  if (r.latency) w.push([4, r.latency.workload]);
  if (r.vmotion) w.push([5, r.vmotion.workload]);
  if (r.unix) w.push([6, r.unix.workload]);
  if (r.glob) w.push([7, r.glob.workload]);
  if (r.ssh) w.push([8, r.ssh.workload]);
  if (r.tunnel) w.push([9, r.tunnel.workload]);
  if (r.cluster) w.push([10, `${r.cluster.workload}. Limits: ${r.cluster.limits}`]);
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
    ...ratioText(r),
    ...workloads(r).map(([k, text]) => `[${k}] ${text}`),
  ];
  for (const [phase, msg] of Object.entries(r.failures)) out.push(`FAILED ${phase}: ${msg}`);
  for (const [phase, why] of Object.entries(r.notRun ?? {})) out.push(`NOT RUN ${phase}: ${why}`);
  return out.join('\n');
}

function ratioText(r: BenchReport): string[] {
  const cells = ratioLines(r);
  if (cells.length === 0) return [];
  const head = ['vspc / baseline, same run', 'vspc', 'baseline', 'ratio', 'target', ''];
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i].length)));
  const line = (c: string[]) => c.map((x, i) => x.padEnd(widths[i])).join('  ').trimEnd();
  return [line(head), line(widths.map((w) => '-'.repeat(w))), ...cells.map(line), ''];
}

export function markdownTable(r: BenchReport): string {
  const esc = (s: string) => s.replace(/\|/g, '\\|');
  const out = ['| | figure | result | target | |', '|---|---|---|---|---|'];
  for (const x of rows(r)) out.push(`| ${x.ref ? `[${x.ref}]` : ''} | ${esc(x.figure)} | ${esc(x.result)} | ${esc(x.target)} | ${verdict(x.met)} |`);
  out.push('');
  const ratios = ratioLines(r);
  if (ratios.length > 0) {
    out.push('| vspc / baseline, same run | vspc | baseline | ratio | target | |', '|---|---|---|---|---|---|');
    for (const c of ratios) out.push(`| ${c.map(esc).join(' | ')} |`);
    out.push('');
  }
  for (const [k, text] of workloads(r)) out.push(`[${k}] ${esc(text)}`, '');
  for (const [phase, msg] of Object.entries(r.failures)) out.push(`FAILED ${phase}: ${esc(msg)}`, '');
  for (const [phase, why] of Object.entries(r.notRun ?? {})) out.push(`NOT RUN ${phase}: ${esc(why)}`, '');
  return out.join('\n');
}

/** Every row with a target (the ratio rows too), for the JSON. */
export function targets(r: BenchReport): Array<{ figure: string; result: string; target: string; met: boolean | null }> {
  return [
    ...rows(r)
      .filter((x) => x.target)
      .map(({ figure, result, target, met }) => ({ figure, result, target, met })),
    ...ratioRows(r)
      .filter((x) => x.target)
      .map((x) => ({ figure: x.figure, result: `${x.vspc} vs ${x.baseline} = ${x.ratio ?? 'n/a'}×`, target: x.target, met: x.met })),
  ];
}
