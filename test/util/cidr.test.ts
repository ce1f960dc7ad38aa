/**
 * util/cidr.ts: the allow-list's networks and the "source address" of the per-address
 * limits. IPv4, IPv6 (compressed, embedded IPv4), IPv4-mapped peers of dual-stack
 * sockets, host bits, bad input.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { addressGroup, anyContains, cidrContains, formatIp, normalizeIp, parseCidr, parseIp } from '../../src/util/cidr.js';

describe('parseIp / formatIp', () => {
  test('IPv4, IPv6 in every spelling, IPv4-mapped as IPv4; junk is null', () => {
    assert.deepEqual([...parseIp('192.0.2.7')!], [192, 0, 2, 7]);
    assert.equal(formatIp(parseIp('2001:DB8:0:0:0:0:0:1')!), '2001:db8::1');
    assert.equal(formatIp(parseIp('::')!), '::');
    assert.equal(formatIp(parseIp('::1')!), '::1');
    assert.equal(formatIp(parseIp('fe80::1:0:0:1')!), 'fe80::1:0:0:1');
    assert.equal(formatIp(parseIp('2001:db8::192.0.2.1')!), '2001:db8::c000:201');
    assert.equal(formatIp(parseIp('::ffff:10.1.2.3')!), '10.1.2.3');
    for (const bad of ['', '1.2.3', '1.2.3.4.5', '256.1.1.1', '01.2.3.4', '1:2:3', '1::2::3', 'fe80::1%eth0', 'example.com', ':::', '1:2:3:4:5:6:7:8:9', 'g::1']) {
      assert.equal(parseIp(bad), null, bad);
    }
  });
});

describe('parseCidr / cidrContains', () => {
  test('networks and single hosts; host bits cleared; the canonical text', () => {
    assert.equal(parseCidr('10.1.2.3/8').text, '10.0.0.0/8');
    assert.equal(parseCidr('192.0.2.7').text, '192.0.2.7/32');
    assert.equal(parseCidr(' 2001:db8::1/32 ').text, '2001:db8::/32');
    assert.equal(parseCidr('::ffff:10.0.0.0/104').text, '10.0.0.0/8');
    assert.equal(parseCidr('0.0.0.0/0').text, '0.0.0.0/0');
  });

  test('bad networks say what is wrong', () => {
    assert.throws(() => parseCidr('10.0.0.0/33'), /prefix length must be 0-32/);
    assert.throws(() => parseCidr('2001:db8::/129'), /0-128/);
    assert.throws(() => parseCidr('10.0.0.0/x'), /prefix length/);
    assert.throws(() => parseCidr('ten/8'), /not an IP address or network/);
    assert.throws(() => parseCidr('::ffff:10.0.0.0/8'), /at least 96/);
  });

  test('membership: IPv4 peers also as IPv4-mapped IPv6; families never mix; junk is outside', () => {
    const v4 = parseCidr('10.0.0.0/8');
    assert.equal(cidrContains(v4, '10.255.1.2'), true);
    assert.equal(cidrContains(v4, '::ffff:10.9.9.9'), true);
    assert.equal(cidrContains(v4, '11.0.0.1'), false);
    assert.equal(cidrContains(v4, '::a00:1'), false, 'an IPv6 address is never in an IPv4 network');
    const v6 = parseCidr('2001:db8:1::/48');
    assert.equal(cidrContains(v6, '2001:db8:1:ffff::1'), true);
    assert.equal(cidrContains(v6, '2001:db8:2::1'), false);
    assert.equal(cidrContains(parseCidr('192.0.2.128/25'), '192.0.2.127'), false);
    assert.equal(cidrContains(parseCidr('192.0.2.128/25'), '192.0.2.128'), true);
    assert.equal(cidrContains(parseCidr('0.0.0.0/0'), '203.0.113.9'), true);
    assert.equal(anyContains([v6, v4], '10.0.0.1'), true);
    assert.equal(anyContains([], '10.0.0.1'), false);
    assert.equal(cidrContains(v4, 'garbage'), false);
  });
});

describe('addressGroup / normalizeIp', () => {
  test('IPv4 alone (mapped or not); IPv6 by its /64, so one host cannot be many addresses', () => {
    assert.equal(addressGroup('192.0.2.7'), '192.0.2.7');
    assert.equal(addressGroup('::ffff:192.0.2.7'), '192.0.2.7');
    assert.equal(addressGroup('2001:db8:1:2:aaaa::1'), '2001:db8:1:2::/64');
    assert.equal(addressGroup('2001:db8:1:2:bbbb::9'), '2001:db8:1:2::/64');
    assert.notEqual(addressGroup('2001:db8:1:3::1'), addressGroup('2001:db8:1:2::1'));
    assert.equal(addressGroup('?'), '?');
    assert.equal(normalizeIp('::ffff:127.0.0.1'), '127.0.0.1');
    assert.equal(normalizeIp('2001:DB8::0:1'), '2001:db8::1');
  });
});
