// The connector under node:test, against the in-process host (test/host.js).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TestHost } from './host.js';
import { read, run } from '../connector.js';

const host = () => new TestHost({ fixtures: 'fixtures' });

test('a row maps to a supplier and a bad date is refused', () => {
  const [at, supplier] = read({ id: 'S-1', name: 'Northwind', active: false, updated_at: '2024-05-01T11:00:00+02:00' });
  assert.equal(new Date(at).toISOString(), '2024-05-01T09:00:00.000Z');
  assert.deepEqual([supplier.supplierNumber, supplier.isActive], ['S-1', false]);
  assert.throws(() => read({ id: 'S-2', name: 'x', updated_at: 'yesterday' }), /not a timestamp/);
});

test('a first run loads every page and sets the bad row aside', () => {
  const h = host();
  h.params.since_override = '2024-01-01T00:00:00Z';
  assert.equal(h.run(run).fetched, 4);
  assert.deepEqual([...h.suppliers.values()].map((s) => s.supplierNumber).sort(), ['S-1001', 'S-1002', 'S-1003']);
  assert.equal(h.rejected.length, 1);
  assert.equal(h.cursor('suppliers'), '2024-05-02T10:15:00Z');
});

test('a second run starts a second before the committed cursor', () => {
  const h = host();
  h.params.since_override = '2024-01-01T00:00:00Z';
  h.run(run);
  delete h.params.since_override;
  h.respond('file:///v1/suppliers?updated_after=2024-05-02T10:14:59Z&page=1', 200,
    '{"data": [{"id": "S-1002", "name": "Contoso", "updated_at": "2024-05-03T08:00:00Z"}], "next_page": null}');
  assert.equal(h.run(run).fetched, 1);
  assert.equal(h.cursor('suppliers'), '2024-05-03T08:00:00Z');
  assert.deepEqual(h.calls.filter((c) => c[0] === 'complete').map((c) => c[1]), ['2024-05-02T10:15:00Z', '2024-05-03T08:00:00Z']);
});
