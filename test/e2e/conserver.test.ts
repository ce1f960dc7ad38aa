/**
 * Issue 12, the conserver recipe (docs/conserver.md) against a real conserver: the
 * page's vspc.yaml, conserver.cf and conserver.passwd blocks, run as written (paths
 * and ports swapped for the test's), with a simulated ESXi VM behind vspc.
 *
 * - With the recipe's settings (no greeting, no notices, no replay) conserver's log of
 *   the console has the VM's `login:` prompt exactly once however often conserver
 *   reconnects: vspc dropping it (`vspc-admin kick`), the VM going away and coming
 *   back, conserver restarting. Nothing of vspc's own (`[vspc: ...]`) is in it, and
 *   every byte value the VM sends arrives unchanged through conserver's telnet.
 * - The same console with replay on (a second console in the same conserver) logs the
 *   prompt again at every reconnect: the duplicates issue 12 describes, so the setting
 *   is what makes the difference.
 * - A person through `console`: sees the VM's output, types (a CR reaches the VM as a
 *   CR), and sends a serial break with conserver's `^Ecl1` (telnet BREAK, passed on).
 *
 * Fails with a clear message when conserver is not installed (test/support/guest/ensure-deps.sh
 * installs it as root).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { binaryPayload, esxiUuid, ROOT, startServer, tempDir, waitUntil, type TestServer } from '../support/server.js';
import { canBind, reservePort } from '../support/ports.js';
import { vspcAdmin } from '../support/cli.js';
import { Conserver, ConsoleClient, conserverIsolation, findProgram, occurrences, readLog, recipeBlock } from '../support/conserver.js';
import { buildProgram } from '../../src/config/options.js';
import { loadConfiguration } from '../../src/config/load.js';
import type { ConsoleHub } from '../../src/domain/console-hub.js';
import type { SimulatedVm } from '../support/sim/index.js';

const BRK = 243;
/** The port the recipe's blocks use for the console; the test puts its own in their place. */
const RECIPE_PORT = '10001';
const RECIPE_LOG_DIR = '/var/log/conserver/';

/** What a Linux guest prints on its serial console when it is ready for a login. */
const banner = (name: string): string => `\r\nDebian GNU/Linux 12 ${name} ttyS0\r\n\r\n${name} login: `;

/** `vspc-admin kick VM`: vspc drops the console's clients (conserver among them). */
async function kick(ts: TestServer, vm: string): Promise<void> {
  const r = await vspcAdmin(ts.adminAddress, ['kick', vm]);
  assert.equal(r.code, 0, `vspc-admin kick ${vm}: ${r.stderr}`);
}

describe('conserver on top of vspc (docs/conserver.md)', { timeout: 120_000 }, () => {
  test("the recipe's settings: each VM byte logged once across reconnects; replay on: logged again at each", async (t) => {
    const bin = findProgram('conserver');
    assert.ok(bin, 'conserver is not installed (apt-get install conserver-server conserver-client; test/support/guest/ensure-deps.sh does it as root)');
    const dir = tempDir('vspc-conserver-');
    // Children first (the newest first), then their directory; vspc after (startServer's hook).
    const stops: Array<() => Promise<void>> = [];
    t.after(async () => {
      for (const stop of stops.reverse()) await stop().catch(() => {});
      dir.remove();
    });
    const isolation = conserverIsolation(bin, join(dir.dir, 'run'));
    assert.ok(!('skip' in isolation), 'skip' in isolation ? isolation.skip : '');

    const doc = readFileSync(join(ROOT, 'docs/conserver.md'), 'utf8');
    const cleanPort = await reservePort();
    const replayPort = await reservePort();
    const masterPort = await reservePort();

    // vspc: the recipe's vspc.yaml, read the way `vspc --config` reads it, plus a second
    // console that differs only in keeping the scrollback replay.
    const yamlPath = join(dir.dir, 'vspc.yaml');
    writeFileSync(yamlPath, recipeBlock(doc, 'vspc.yaml').split(RECIPE_PORT).join(String(cleanPort)));
    const program = buildProgram();
    program.parse(['--config', yamlPath], { from: 'user' });
    const { vms } = loadConfiguration(program).config;
    const web01 = vms.find((v) => v.match === 'web01');
    assert.deepEqual(
      { port: web01?.tcpPort, greeting: web01?.greeting, notices: web01?.notices, replay: web01?.replay },
      { port: cleanPort, greeting: false, notices: false, replay: false },
      "the recipe's vms: entry",
    );
    vms.push({ match: 'replay01', tcpPort: replayPort, greeting: false, notices: false, replay: true });
    const { ts, cleanup } = await startServer(t, { config: { vms } });

    const ids = { web01: esxiUuid().text, replay01: esxiUuid().text };
    const vmsUp: Record<'web01' | 'replay01', { vm: SimulatedVm; hub: ConsoleHub }> = {
      web01: await ts.connectVm({ uuid: ids.web01, name: 'web01' }, cleanup),
      replay01: await ts.connectVm({ uuid: ids.replay01, name: 'replay01' }, cleanup),
    };
    const hubOf = (name: 'web01' | 'replay01') => vmsUp[name].hub;
    // Each on its fixed port, and vspc listening there, before conserver dials it (a
    // refused connection would make conserver wait a minute before the next try).
    for (const [name, port] of [['web01', cleanPort], ['replay01', replayPort]] as const) {
      await waitUntil(async () => hubOf(name).identity.tcpPort === port && !(await canBind(port)), 5000, `${name} listening on its fixed port ${port}`);
    }

    // conserver: the recipe's conserver.cf (logs in the test's directory) with a second
    // console, replay01, declared the same way; the recipe's conserver.passwd.
    const logDir = join(dir.dir, 'log');
    const cfText =
      recipeBlock(doc, 'conserver.cf').split(RECIPE_LOG_DIR).join(`${logDir}/`).split(`port ${RECIPE_PORT};`).join(`port ${cleanPort};`) +
      `console replay01 {\n    include vspc;\n    port ${replayPort};\n}\n`;
    const cf = join(dir.dir, 'conserver.cf');
    const passwd = join(dir.dir, 'conserver.passwd');
    writeFileSync(cf, cfText);
    writeFileSync(passwd, recipeBlock(doc, 'conserver.passwd'));
    mkdirSync(logDir, { recursive: true });
    const logOf = (name: 'web01' | 'replay01') => readLog(join(logDir, `${name}.log`));

    const startConserver = async () => {
      const d = await Conserver.start({ bin, cf, passwd, port: masterPort, wrap: isolation.wrap });
      stops.push(() => d.stop());
      return d;
    };

    /** conserver is connected to both consoles for the n-th time (its log says "Console up" n times, vspc has a client). */
    const connected = async (n: number, what: string) => {
      for (const name of ['web01', 'replay01'] as const) {
        await waitUntil(() => occurrences(logOf(name), '[-- Console up --') === n && hubOf(name).clients.size === 1, 15_000, `${name}: conserver connected (${what})`);
      }
    };
    /** Both VMs print `text`, and it is in both logs: whatever vspc sent conserver before it (a replay) is in them too. */
    const printed = async (text: string) => {
      for (const name of ['web01', 'replay01'] as const) vmsUp[name].vm.send(text);
      for (const name of ['web01', 'replay01'] as const) await waitUntil(() => logOf(name).includes(text), 5000, `${JSON.stringify(text)} in ${name}'s conserver log`);
    };
    const prompts = () => ({ web01: occurrences(logOf('web01'), 'login: '), replay01: occurrences(logOf('replay01'), 'login: ') });

    let conserver = await startConserver();
    await connected(1, 'first start');
    for (const name of ['web01', 'replay01'] as const) vmsUp[name].vm.send(banner(name));
    await printed('\r\n[ marker 1 ]\r\n');
    assert.deepEqual(prompts(), { web01: 1, replay01: 1 }, 'the prompt once each after the first connection');

    // 1. vspc drops conserver (vspc-admin kick): conserver reconnects at once.
    await kick(ts, 'web01');
    await kick(ts, 'replay01');
    await connected(2, 'after the kick');
    await printed('\r\n[ marker 2 ]\r\n');
    assert.deepEqual(prompts(), { web01: 1, replay01: 2 }, 'after a reconnect: replay on logs the prompt again, the recipe does not');

    // 2. The VMs go away and come back (vSPC reconnect): no notices in either log.
    for (const name of ['web01', 'replay01'] as const) {
      vmsUp[name].vm.destroy();
      await waitUntil(() => hubOf(name).source === null, 5000, `${name} gone`);
      vmsUp[name] = await ts.connectVm({ uuid: ids[name], name }, cleanup);
    }
    await printed('\r\n[ marker 3 ]\r\n');

    // 3. conserver restarts: a new daemon, the same log files.
    await conserver.stop();
    await waitUntil(() => hubOf('web01').clients.size === 0 && hubOf('replay01').clients.size === 0, 5000, 'conserver gone from vspc');
    conserver = await startConserver();
    await connected(3, 'after the restart');
    await printed('\r\n[ marker 4 ]\r\n');
    assert.deepEqual(prompts(), { web01: 1, replay01: 3 }, 'after a restart: the recipe still has the prompt once');

    for (const name of ['web01', 'replay01'] as const) {
      assert.ok(!logOf(name).includes('[vspc:'), `${name}: nothing of vspc's own in conserver's log`);
    }

    // Every byte value, through telnet both ways of NVT encoding (IAC doubled, CR NUL): unchanged in the log.
    const payload = binaryPayload(4096, 7);
    const before = logOf('web01').length;
    vmsUp.web01.vm.send(payload);
    vmsUp.web01.vm.send('\r\n[ end of payload ]\r\n');
    await waitUntil(() => logOf('web01').includes('[ end of payload ]'), 5000, 'the payload in the log');
    const logged = Buffer.from(logOf('web01').slice(before), 'latin1');
    assert.ok(logged.subarray(0, payload.length).equals(payload), 'the VM bytes, unchanged, in conserver\'s log');

    // A person through conserver's own client.
    const consoleBin = findProgram('console');
    if (!consoleBin) return t.diagnostic('console (conserver-client) not installed: the client part is left out');
    const person = new ConsoleClient(consoleBin, ['-n', '-M', '127.0.0.1', '-p', String(masterPort), '-l', 'tester', 'web01']);
    stops.push(() => person.stop());
    await person.waitFor("[Enter `^Ec?' for help]");
    // conserver passes console output to a client only once the client has confirmed
    // it is on the console (`fcon` in conserver's group.c), which comes a moment after
    // that line: the first hello is usually lost. So the VM says hello until the person
    // sees it (bounded).
    const from = person.output.length;
    const deadline = Date.now() + 10_000;
    for (let i = 1; !person.output.includes('hello through conserver', from); i++) {
      assert.ok(Date.now() < deadline, `console: no hello after 10 s; it printed ${JSON.stringify(person.output.slice(-500))}`);
      vmsUp.web01.vm.send(`hello through conserver ${i}\r\n`);
      await person.waitFor(`hello through conserver ${i}`, 200, from).catch(() => {});
    }
    person.write('root\r');
    await vmsUp.web01.vm.waitForInput('root\r', 5000);
    person.write('\x05cl1'); // ^Ec l1: break sequence 1, `\z`
    await waitUntil(() => vmsUp.web01.vm.commands.includes(BRK), 5000, 'the serial break at the VM');
    person.write('\x05c.'); // ^Ec . : disconnect
    const exit = await person.exitedPromise;
    assert.equal(exit.code, 0, `console exit: ${JSON.stringify(exit)}; output ${JSON.stringify(person.output.slice(-500))}`);
    assert.ok(logOf('web01').includes('tester@') && logOf('web01').includes('break #1 sent'), "conserver's log has the attach and the break (timestamp ...ab)");
    await conserver.stop();
  });
});
