/**
 * How `vspc-admin list` and `show` print serial tunnels (GET /api/v1/tunnels, the
 * `tunnel` field of show).
 */
import type { TunnelView } from '../admin/views.js';
import { formatTable } from './table.js';

/** `up`, `down`, `handshaking`, or why there is no link (`no console`). */
function linkState(t: TunnelView): string {
  if (!t.link) return 'no console';
  return t.link.state;
}

function rtt(t: TunnelView): string {
  return t.link?.rttMs == null ? '-' : `${Math.round(t.link.rttMs)} ms`;
}

function forwardText(f: TunnelView['forwards'][number]): string {
  const where = f.address ?? (f.listen === 'auto' ? 'auto (no console)' : `${f.listen}!`);
  return `${where}→${f.to}`;
}

/** The tunnel table under `list`. */
export function tunnelTable(tunnels: readonly TunnelView[]): string {
  let text = formatTable(
    ['TUNNEL', 'CONSOLE', 'LINK', 'RTT', 'RETRANS', 'STREAMS', 'FORWARDS'],
    tunnels.map((t) => [
      t.name,
      t.console ?? '-',
      linkState(t),
      rtt(t),
      t.link ? String(t.link.retransmits) : '-',
      t.link ? String(t.link.streams) : '-',
      t.forwards.map(forwardText).join(', ') || '-',
    ]),
  );
  for (const t of tunnels) {
    if (t.problem) text += `! tunnel ${t.name}: ${t.problem}\n`;
    for (const f of t.forwards) if (f.error) text += `! tunnel ${t.name}: ${f.listen}: ${f.error}\n`;
  }
  return text;
}

/** `show` rows of the tunnel a console carries. */
export function tunnelRows(t: TunnelView): Array<[string, string]> {
  const rows: Array<[string, string]> = [['tunnel', `${t.name} (${t.carrier}); this console carries no terminal`]];
  const l = t.link;
  if (l) {
    const since = new Date(l.since).toISOString().replace(/\.\d{3}Z$/, 'Z');
    rows.push(['link', `${l.state} since ${since}, rtt ${rtt(t)}, rto ${l.rtoMs} ms, agent ${l.agentBootId ?? '-'}`]);
    rows.push(['retransmits', `${l.retransmits} (${l.timeouts} timeouts, ${l.badFrames} damaged frames, ${l.discardedBytes} bytes discarded, ${l.echoes} echoes)`]);
    rows.push(['streams', `${l.streams} open, ${l.streamsOpened} opened, ${l.streamsRefused} refused, ${l.streamsReset} reset`]);
    rows.push(['tunnel bytes', `${l.bytesToGuest} to the guest, ${l.bytesFromGuest} from it (line: ${l.lineBytesOut} out, ${l.lineBytesIn} in)`]);
    rows.push(['agent', `${l.sessions} sessions, ${l.peerRestarts} restarts, ${l.linkDowns} times down`]);
  } else if (t.problem) {
    rows.push(['link', `none: ${t.problem}`]);
  }
  for (const f of t.forwards) {
    rows.push(['forward', `${f.listen}${f.address && f.address !== f.listen ? ` (${f.address})` : ''} → guest port ${f.to}, ${f.connections} open, ${f.accepted} accepted${f.error ? `  ! ${f.error}` : ''}`]);
  }
  return rows;
}
