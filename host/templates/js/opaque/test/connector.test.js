// The connector under node:test, against the in-process host (test/host.js).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TestHost } from './host.js';
import { read, run } from '../connector.js';

const host = () => new TestHost({ fixtures: 'fixtures' });

test('a row maps to a supplier and a malformed one is refused', () => {
  const supplier = read({ id: 'S-7', name: 'Northwind', active: false });
  assert.deepEqual([supplier.supplierNumber, supplier.isActive], ['S-7', false]);
  assert.throws(() => read({ id: 'S-8', active: 'sometimes' }));
});

test('a first run follows the feed and sets the bad row aside', () => {
  const h = host();
  assert.equal(h.run(run).fetched, 4);
  assert.deepEqual([...h.suppliers.values()].map((s) => s.supplierNumber).sort(), ['S-1001', 'S-1002', 'S-1003']);
  assert.equal(h.rejected.length, 1);
  assert.equal(h.cursor('suppliers'), 'tok-3');
});

test('a second run reads from the committed token', () => {
  const h = host();
  h.run(run);
  assert.equal(h.run(run).fetched, 0);
  assert.equal(h.cursor('suppliers'), 'tok-4');
  assert.match(h.requests.at(-1), /since=tok-3$/);
});

test('the same token twice is refused as the host refuses it', () => {
  const h = host();
  h.run(run);
  h.respond('file:///v1/suppliers/changes?since=tok-3', 200, '{"data": [], "next_token": "tok-3"}');
  assert.throws(() => h.run(run), /CURSOR_REGRESSION/);
  assert.equal(h.cursor('suppliers'), 'tok-3');
});
