// The connector under node:test, against the in-process host (test/host.js).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TestHost } from './host.js';
import { read, run } from '../connector.js';

const host = () => new TestHost({ fixtures: 'fixtures' });

test('a row maps to a supplier and a nameless one is refused', () => {
  const supplier = read({ id: 7, name: 'Northwind', active: false });
  assert.deepEqual([supplier.supplierNumber, supplier.isActive], ['S-7', false]);
  assert.throws(() => read({ id: 8, name: ' ' }));
});

test('a first run loads every row and sets the bad one aside', () => {
  const h = host();
  assert.equal(h.run(run).fetched, 4);
  assert.deepEqual([...h.suppliers.values()].map((s) => s.supplierNumber).sort(), ['S-1001', 'S-1002', 'S-1004']);
  assert.equal(h.rejected.length, 1);
  assert.equal(h.cursor('suppliers'), '1004');
});

test('a second run asks only for ids after the cursor', () => {
  const h = host();
  h.run(run);
  h.respond('file:///v1/suppliers?after_id=1004', 200, '{"data": [{"id": 1005, "name": "Litware"}]}');
  assert.equal(h.run(run).fetched, 1);
  assert.equal(h.cursor('suppliers'), '1005');
  assert.match(h.requests.at(-1), /after_id=1004/);
});
