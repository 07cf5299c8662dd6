// Minimal Nuntiq connector in JavaScript (jco componentize / componentize-js, StarlingMonkey).
// WIT interfaces are ES-module imports named "<package>/<interface>@<version>"; functions are camelCase.
import { getConfig, getParam, hasSecret } from 'nuntiq:connector/context@0.3.0';
import { log } from 'nuntiq:connector/logger@0.3.0';
import { getWithRetry } from 'nuntiq:connector/http@0.3.0';
import { DeltaRun } from 'nuntiq:connector/delta-state@0.3.0';
import { queue } from 'nuntiq:connector/supplier-load@0.3.0';

const STREAM = 'suppliers';

// variant setting-value -> { tag: 'text'|'integer'|'float'|'boolean'|'json', val }; option none -> undefined.
// s64 arrives as a BigInt (StarlingMonkey) or a Number (QuickJS).
function setting(v) {
  if (v == null) return undefined;
  if (v.tag === 'json') return JSON.parse(v.val);
  if (v.tag === 'integer') return Number(v.val);
  return v.val;
}

// A WIT result's err thrown by an import: an Error whose `payload` is the err value (a variant here).
function errText(e) {
  const p = e && e.payload !== undefined ? e.payload : e;
  if (p && p.tag === 'status') return `status: HTTP ${p.val.status}`;
  if (p && p.tag) return `${p.tag}: ${typeof p.val === 'object' ? JSON.stringify(p.val) : p.val}`;
  return String(e && e.message ? e.message : e);
}

// list<u8> -> Uint8Array (StarlingMonkey) or Uint8Array/Array (QuickJS, which has no TextDecoder).
function utf8(bytes) {
  if (typeof TextDecoder !== 'undefined') return new TextDecoder().decode(bytes);
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, Array.from(bytes.slice(i, i + 0x8000)));
  return decodeURIComponent(escape(s)); // Latin-1 -> UTF-8 decode (Annex B escape, present in QuickJS)
}

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

const info = (message, step, detail) => log('info', message, step, detail === undefined ? undefined : JSON.stringify(detail));
const iso = (ms) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');

// export run: func() -> result<string, string>: return the ok string, throw for err.
export function run() {
  const name = setting(getConfig('connector_name'));
  const apiUrl = setting(getConfig('api_url'));
  const pageSize = setting(getConfig('page_size')) ?? 200;
  const lookbackDays = setting(getParam('lookback_days')) ?? 7;
  if (!name || !apiUrl || !hasSecret('acme_token')) {
    throw 'config.connector_name, config.api_url and secrets.acme_token are required';
  }

  let r;
  try {
    r = DeltaRun.begin(name, STREAM, 'timestamp-utc'); // static func -> static method; enum -> string
  } catch (e) {
    throw `delta begin: ${errText(e)}`;
  }
  try {
    const now = Date.now();
    const lower = r.lowerBoundCursor(); // option<string> -> string | undefined
    // Re-read the cursor's own second: updated_after is strictly after, stamps have 1 s precision.
    const since = lower ? Date.parse(lower) - 1000 : now - lookbackDays * 86400e3;
    let watermark = lower ? Date.parse(lower) : since;
    let fetched = 0;
    for (let page = 1; page; ) {
      const resp = getWithRetry({
        url: apiUrl.replace(/\/+$/, '') + '/suppliers',
        query: [['updated_after', iso(since)], ['page', String(page)], ['per_page', String(pageSize)]],
        headers: [['accept', 'application/json']],
        timeoutMs: undefined,
        bearerSecret: 'acme_token',
      }, undefined);
      const body = JSON.parse(utf8(resp.body));
      const rows = body.data || [];
      info(`Fetched page ${page} (${rows.length} rows)`, 'fetch', { page, count: rows.length });
      const suppliers = rows.map((row) => {
        // Updated_at carries offsets (+02:00): compare as instants; never past the run's start.
        watermark = Math.max(watermark, Math.min(Date.parse(row.updated_at), now));
        // Records are camelCase objects; absent option fields may be left out (undefined = none).
        return { supplierNumber: String(row.number), supplierName: row.name, isActive: row.active ?? true, locations: locations(row) };
      });
      if (suppliers.length) queue(suppliers);
      fetched += rows.length;
      page = body.next_page;
    }
    const cursor = iso(watermark);
    r.setNewCursor(cursor);
    r.setRecordsProcessed(fetched); // u64: a Number works on both backends (StarlingMonkey also takes a BigInt; QuickJS panics on one)
    const state = r.complete(); // writes the queue and the cursor in one transaction
    info(`Done: ${fetched} suppliers, cursor ${cursor}`, 'done', { count: fetched });
    return JSON.stringify({ connector_name: name, fetched, cursor_committed: state.committedCursorValue });
  } catch (e) {
    const msg = errText(e);
    try { r.fail(msg); } catch (_) { /* already closed */ }
    throw msg;
  }
}
