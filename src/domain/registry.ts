import { EventEmitter } from 'node:events';
import type { SerialPortRecord, SerialPortStore } from '../storage/serial-port-store.js';
import { VmSerialPort, type SerialPortObserver } from './vm-serial-port.js';

export interface RegistryEvents {
  /** A VM serial port is known (at load or first registration): its client listener should exist. */
  added: [port: VmSerialPort];
  /** Forgotten or expired: its listener goes, its clients are closed. */
  removed: [port: VmSerialPort];
  /** Moved to another client port (`set-port`). */
  moved: [port: VmSerialPort, oldPort: number];
  /** The VM reported a new name (per-VM settings may match by name). */
  renamed: [port: VmSerialPort, oldName: string | null];
}

function key(uuid: string, label: string): string {
  return `${uuid}/${label}`;
}

/**
 * Every VM serial port the concentrator knows, backed by the SQLite store. Knows
 * nothing about transports: sources and clients attach to the hubs it hands out,
 * and listeners follow its events.
 */
export class Registry extends EventEmitter<RegistryEvents> {
  private readonly byKey = new Map<string, VmSerialPort>();
  private readonly byPort = new Map<number, VmSerialPort>();

  constructor(
    private readonly store: SerialPortStore,
    private readonly hubOptions: { maxHeldInput?: number; scrollbackBytes?: number; observer?: SerialPortObserver } = {},
  ) {
    super();
  }

  /** Create hubs for every stored record (at start-up), emitting `added` for each. */
  load(): void {
    for (const r of this.store.list()) this.adopt(r);
  }

  /**
   * A VM serial port identified itself: find or create its record (sticky port) and
   * hub. The name is updated when given.
   */
  register(uuid: string, label: string, name: string | null, now = Date.now()): { port: VmSerialPort; created: boolean } {
    const existing = this.byKey.get(key(uuid, label));
    const { record, created } = this.store.register(uuid, label, name, now);
    if (existing) {
      const old = existing.identity.name;
      if (record.name !== null) existing.identity.name = record.name;
      if (existing.identity.name !== old) this.emit('renamed', existing, old);
      return { port: existing, created: false };
    }
    return { port: this.adopt(record), created };
  }

  rename(port: VmSerialPort, name: string): void {
    if (port.identity.name === name) return;
    this.store.rename(port.identity.id, name);
    const old = port.identity.name;
    port.identity.name = name;
    this.emit('renamed', port, old);
  }

  /** Record that the VM was seen now (connect, disconnect). */
  touch(port: VmSerialPort, now = Date.now()): void {
    this.store.touch(port.identity.id, now);
  }

  get(uuid: string, label: string): VmSerialPort | undefined {
    return this.byKey.get(key(uuid, label));
  }

  getByPort(tcpPort: number): VmSerialPort | undefined {
    return this.byPort.get(tcpPort);
  }

  all(): VmSerialPort[] {
    return [...this.byKey.values()].sort((a, b) => a.identity.port - b.identity.port);
  }

  get size(): number {
    return this.byKey.size;
  }

  /** Drop a VM serial port: its row, its port, its listener and its clients. */
  forget(port: VmSerialPort, reason = 'forgotten by the administrator'): void {
    this.store.forget(port.identity.id);
    this.drop(port, reason);
  }

  setPort(port: VmSerialPort, tcpPort: number): void {
    const old = port.identity.port;
    if (old === tcpPort) return;
    this.store.setPort(port.identity.id, tcpPort);
    this.byPort.delete(old);
    port.identity.port = tcpPort;
    this.byPort.set(tcpPort, port);
    this.emit('moved', port, old);
  }

  /**
   * Forget VM serial ports not seen for `maxAgeMs` that are neither connected nor in
   * use, so that long-gone VMs do not hold ports forever.
   */
  expire(maxAgeMs: number, now = Date.now()): VmSerialPort[] {
    const gone = this.store.expire(
      maxAgeMs,
      (r) => {
        const p = this.byKey.get(key(r.uuid, r.label));
        return !!p && (p.source !== null || p.clients.size > 0);
      },
      now,
    );
    const dropped: VmSerialPort[] = [];
    for (const r of gone) {
      const p = this.byKey.get(key(r.uuid, r.label));
      if (p) {
        this.drop(p, 'expired');
        dropped.push(p);
      }
    }
    return dropped;
  }

  lastSeen(port: VmSerialPort): number | undefined {
    return this.store.getById(port.identity.id)?.lastSeen;
  }

  private adopt(r: SerialPortRecord): VmSerialPort {
    const o = this.hubOptions;
    const port = new VmSerialPort(
      { id: r.id, uuid: r.uuid, label: r.label, name: r.name, port: r.port },
      o.maxHeldInput,
      o.scrollbackBytes,
      o.observer ?? null,
    );
    this.byKey.set(key(r.uuid, r.label), port);
    this.byPort.set(r.port, port);
    this.emit('added', port);
    return port;
  }

  private drop(port: VmSerialPort, reason: string): void {
    this.byKey.delete(key(port.identity.uuid, port.identity.label));
    this.byPort.delete(port.identity.port);
    port.closeClients(`VM serial port ${reason}`);
    port.source?.close(`VM serial port ${reason}`);
    this.emit('removed', port);
  }
}
