// The same connector as connector.js, with the web's fetch() instead of the
// host's `http` interface: jco's default engine (StarlingMonkey) sends it
// through wasi:http, which the host holds to the same network policy, request
// budget and limits. No retries (use `http` for those), and the token is read
// from the secrets and set by the connector itself.
import { getConfig, getParam, getSecret } from 'nuntiq:connector/context@0.3.0';
import { log } from 'nuntiq:connector/logger@0.3.0';
import { DeltaRun } from 'nuntiq:connector/delta-state@0.3.0';
import { queue } from 'nuntiq:connector/supplier-load@0.3.0';

const setting = (v) => (v == null ? undefined : v.tag === 'json' ? JSON.parse(v.val) : v.tag === 'integer' ? Number(v.val) : v.val);
const iso = (ms) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
const errText = (e) => (e && e.payload && e.payload.tag ? `${e.payload.tag}: ${JSON.stringify(e.payload.val)}` : String(e && e.message ? e.message : e));

// Acme's address -> one MAIN location with it (none without one). Acme sends no
// bank accounts: bankAccounts is [] (a list is required, undefined is not one).
function locations(row) {
  const a = row.address;
  const text = (k) => (a && typeof a[k] === 'string' ? a[k] : undefined);
  if (!a || typeof a !== 'object' || !['street', 'city', 'country'].some((k) => text(k) !== undefined)) return [];
  return [{
    locationCode: 'MAIN', locationName: 'Headquarters', isActive: true,
    addresses: [{ street: text('street') ?? '', city: text('city') ?? '', countryCode: text('country') ?? 'XX' }],
    bankAccounts: [],
  }];
}

// StarlingMonkey settles the promise before returning to the host.
export async function run() {
  const name = setting(getConfig('connector_name'));
  const apiUrl = setting(getConfig('api_url'));
  const pageSize = setting(getConfig('page_size')) ?? 200;
  const lookbackDays = setting(getParam('lookback_days')) ?? 7;
  const token = getSecret('acme_token');
  if (!name || !apiUrl || !token) throw 'config.connector_name, config.api_url and secrets.acme_token are required';

  const r = DeltaRun.begin(name, 'suppliers', 'timestamp-utc');
  try {
    const now = Date.now();
    const lower = r.lowerBoundCursor();
    const since = lower ? Date.parse(lower) - 1000 : now - lookbackDays * 86400e3;
    let watermark = lower ? Date.parse(lower) : since;
    let fetched = 0;
    for (let page = 1; page; ) {
      const url = `${apiUrl.replace(/\/+$/, '')}/suppliers?updated_after=${encodeURIComponent(iso(since))}&page=${page}&per_page=${pageSize}`;
      const resp = await fetch(url, { headers: { accept: 'application/json', authorization: `Bearer ${token}` } });
      if (!resp.ok) throw `GET page ${page}: HTTP ${resp.status}`;
      const body = await resp.json();
      const rows = body.data || [];
      log('info', `Fetched page ${page} (${rows.length} rows) with fetch()`, 'fetch', undefined);
      const suppliers = rows.map((row) => {
        watermark = Math.max(watermark, Math.min(Date.parse(row.updated_at), now));
        return { supplierNumber: String(row.number), supplierName: row.name, isActive: row.active ?? true, locations: locations(row) };
      });
      if (suppliers.length) queue(suppliers);
      fetched += rows.length;
      page = body.next_page;
    }
    const cursor = iso(watermark);
    r.setNewCursor(cursor);
    r.setRecordsProcessed(fetched);
    const state = r.complete();
    return JSON.stringify({ connector_name: name, fetched, cursor_committed: state.committedCursorValue });
  } catch (e) {
    const msg = errText(e);
    try { r.fail(msg); } catch (_) { /* already closed */ }
    throw msg;
  }
}
