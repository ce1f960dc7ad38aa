/** Process and machine facts from /proc (Linux), for the benchmark's resource figures. */
import { readFileSync, readdirSync } from 'node:fs';
import os from 'node:os';

/** Linux's USER_HZ; 100 on every mainstream kernel (utime/stime are in these ticks). */
const CLOCK_TICKS = 100;

export interface ProcSample {
  /** performance.now() of the orchestrator when sampled. */
  at: number;
  rssBytes: number;
  /** user + system CPU time consumed so far, ms. */
  cpuMs: number;
  fds: number;
}

export function readRssBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

export function readCpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name (field 2) may hold spaces; the fields after ')' are fixed.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state); utime is field 14, stime field 15.
  const utime = Number(rest[11]);
  const stime = Number(rest[12]);
  return ((utime + stime) * 1000) / CLOCK_TICKS;
}

export function countFds(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return -1;
  }
}

export function fdLimit(pid: number): number | null {
  try {
    const m = /^Max open files\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/limits`, 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

export function sampleProc(pid: number): ProcSample {
  return { at: performance.now(), rssBytes: readRssBytes(pid), cpuMs: readCpuMs(pid), fds: countFds(pid) };
}

/** CPU use between two samples, as a percentage of one core. */
export function cpuPercent(a: ProcSample, b: ProcSample): number {
  const wall = b.at - a.at;
  return wall > 0 ? (100 * (b.cpuMs - a.cpuMs)) / wall : 0;
}

export function procAvailable(pid: number): boolean {
  try {
    readFileSync(`/proc/${pid}/stat`, 'utf8');
    return true;
  } catch {
    return false;
  }
}

export interface MachineInfo {
  cpuModel: string;
  cores: number;
  memTotalGiB: number;
  kernel: string;
  platform: string;
  node: string;
  fdLimit: number | null;
  ephemeralPorts: string | null;
  somaxconn: number | null;
}

function readTrim(path: string): string | null {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return null;
  }
}

export function machineInfo(): MachineInfo {
  const cpus = os.cpus();
  const somax = readTrim('/proc/sys/net/core/somaxconn');
  return {
    cpuModel: cpus[0]?.model ?? 'unknown',
    cores: cpus.length,
    memTotalGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    kernel: os.release(),
    platform: `${os.platform()} ${os.arch()}`,
    node: process.version,
    fdLimit: fdLimit(process.pid),
    ephemeralPorts: readTrim('/proc/sys/net/ipv4/ip_local_port_range')?.replace(/\s+/, '-') ?? null,
    somaxconn: somax ? Number(somax) : null,
  };
}
