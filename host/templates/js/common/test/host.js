// An in-process double of the host's interfaces for `node --test`: every
// `nuntiq:connector/…` import of connector.js resolves here (hooks.mjs). A
// TestHost answers file:// requests from a fixtures directory as
// `nuntiq-host run-plugin --fixtures DIR` does (and any URL from respond()),
// keeps suppliers, rejected rows and cursors across runs, and refuses what the
// host refuses: a cursor that does not parse or moves back (timestamps and
// numeric ids >=, opaque tokens !=), complete before setNewCursor, another
// connector's stream, a run left open, setOptions changing fullLoad after the
// run's first queue. Suppliers are written as the host writes them: upserted
// on (supplierNumber, organizationCode), locations by locationCode, addresses
// and bank accounts replaced (insert-only: the new ones added); a full load's
// first write empties the store first. Retries are counted, not waited for.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

let current = null;
const host = () => {
  if (!current) throw new Error('a host interface was called outside TestHost.run(run)');
  return current;
};
// A WIT result's err, as jco throws it: an Error whose payload is the variant.
const fail = (tag, val) => Object.assign(new Error(`${tag}: ${typeof val === 'string' ? val : JSON.stringify(val)}`), { payload: { tag, val } });

// --- context and logger ---------------------------------------------------------------------------
const setting = (v) => {
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'string') return { tag: 'text', val: v };
  if (typeof v === 'boolean') return { tag: 'boolean', val: v };
  if (typeof v === 'number') return Number.isInteger(v) ? { tag: 'integer', val: v } : { tag: 'float', val: v };
  return { tag: 'json', val: JSON.stringify(v) };
};
export const customerNumber = () => host().customerNumber;
export const getConfig = (key) => setting(host().config[key]);
export const getParam = (key) => setting(host().params[key]);
export const getSecret = (key) => host().secrets[key];
export const hasSecret = (key) => key in host().secrets;
export function log(level, message, step) {
  host().logs.push({ level, message, step });
}

// --- http -----------------------------------------------------------------------------------------
export function getWithRetry(request, policy) {
  const h = host();
  const url = new URL(request.url);
  for (const [k, v] of request.query) url.searchParams.append(k, v);
  if (request.bearerSecret !== undefined && !(request.bearerSecret in h.secrets)) {
    throw fail('invalid-request', `bearer-secret ${request.bearerSecret} names no secret of settings.json's secrets`);
  }
  const attempts = policy ? policy.maxAttempts : 5;
  const retry = policy ? policy.retryStatuses : [429, 500, 502, 503, 504];
  let last;
  for (let attempt = 1; attempt <= attempts; attempt++) {
    h.requests.push(url.href);
    const [status, body] = h.answer(url);
    last = { status, headers: [['content-type', 'application/json']], body: new TextEncoder().encode(body), attempts: attempt, url: url.href };
    if (status >= 200 && status < 300) return last;
    if (!retry.includes(status) || attempts === 1) throw fail('status', last);
  }
  throw fail('retries-exhausted', { attempts, lastStatus: last.status, lastCause: `HTTP ${last.status} from ${url.hostname}` });
}

// --- supplier-load --------------------------------------------------------------------------------
const MAX_LOCATIONS = 1000;
const MAX_ADDRESSES = 100;
export function queue(suppliers) {
  const h = host();
  for (const s of suppliers) {
    if (!s.supplierNumber?.trim()) throw fail('invalid-record', 'a supplier has no supplierNumber');
    const name = `supplier ${JSON.stringify(s.supplierNumber)}`;
    if (!s.supplierName?.trim()) throw fail('invalid-record', `${name}: supplierName is required`);
    // jco refuses a missing list field: say so here rather than in the built component.
    if (!Array.isArray(s.locations)) throw fail('invalid-record', `${name}: locations must be an array (use [] for none)`);
    if (s.locations.length > MAX_LOCATIONS) throw fail('invalid-record', `${name}: ${s.locations.length} locations, at most ${MAX_LOCATIONS}`);
    for (const l of s.locations) {
      if (!l.locationCode?.trim()) throw fail('invalid-record', `${name}: a location has no locationCode`);
      for (const [field, label] of [['addresses', 'addresses'], ['bankAccounts', 'bank accounts']]) {
        const items = l[field];
        if (!Array.isArray(items)) throw fail('invalid-record', `${name}: location ${JSON.stringify(l.locationCode)}: ${field} must be an array (use [] for none)`);
        if (items.length > MAX_ADDRESSES) throw fail('invalid-record', `${name}: location ${JSON.stringify(l.locationCode)} has ${items.length} ${label}, at most ${MAX_ADDRESSES}`);
      }
    }
  }
  if (h.queue.length + suppliers.length > 10000) throw fail('queue-full', "more than the host's 10000 unsaved suppliers");
  h.queue.push(...suppliers);
  h.queued.push(...suppliers);
  return h.queue.length;
}
// The host's rule: fullLoad is chosen before the run's first queue call, and not changed after it.
export function setOptions(options) {
  const h = host();
  const started = h.loadStarted || h.queue.length > 0;
  if (started && Boolean(options.fullLoad) !== h.loadOptions.fullLoad) {
    throw fail('invalid-record', "set-options: full-load can only be chosen before the run's first queue call; call set-options first");
  }
  h.loadOptions = { fullLoad: Boolean(options.fullLoad), addressInsertOnly: Boolean(options.addressInsertOnly), bankInsertOnly: Boolean(options.bankInsertOnly) };
}
// Insert-only: the stored items, then the new ones none of them is the same as.
const merge = (kept, added, same) => [...kept, ...added.filter((n) => !kept.some((k) => same(k, n)))];
const sameAddress = (a, b) => JSON.stringify(a, Object.keys(a).sort()) === JSON.stringify(b, Object.keys(b).sort());
const flush = (h) => {
  const n = h.queue.length;
  const { fullLoad, addressInsertOnly, bankInsertOnly } = h.loadOptions;
  if (n && fullLoad && !h.loadStarted) h.suppliers.clear(); // a full load's first write deletes every stored supplier
  h.loadStarted ||= n > 0;
  for (const s of h.queue) {
    const key = `${s.supplierNumber}\u0000${s.organizationCode ?? ''}`;
    const locations = [...(h.suppliers.get(key)?.locations ?? [])];
    for (const l of s.locations) {
      const i = locations.findIndex((o) => o.locationCode === l.locationCode);
      if (i < 0) { locations.push(l); continue; }
      const o = locations[i];
      locations[i] = {
        ...l,
        addresses: addressInsertOnly ? merge(o.addresses, l.addresses, sameAddress) : l.addresses,
        bankAccounts: bankInsertOnly ? merge(o.bankAccounts, l.bankAccounts, (a, b) => a.bankAccountNumber === b.bankAccountNumber) : l.bankAccounts,
      };
    }
    h.suppliers.set(key, { ...s, isActive: s.isActive ?? true, locations });
  }
  h.queue = [];
  return n;
};
export const saveAll = () => flush(host());

// --- delta-state: the host's cursor rules ------------------------------------------------------------
function parseCursor(type, value) {
  if (typeof value !== 'string' || value.length > 4096) return undefined;
  if (type === 'numeric-id') {
    if (!/^-?(0|[1-9][0-9]*)$/.test(value) || value === '-0') return undefined;
    const n = BigInt(value);
    return n >= -(2n ** 63n) && n < 2n ** 63n ? n : undefined;
  }
  if (type === 'timestamp-utc') {
    if (!/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/i.test(value)) return undefined;
    const at = Date.parse(value);
    return Number.isNaN(at) || at > Date.now() + 3600e3 ? undefined : BigInt(at);
  }
  return value === '' ? undefined : value;
}
const advances = (type, old, next) => {
  if (old === undefined || parseCursor(type, old) === undefined) return true;
  return type === 'opaque-token' ? old !== next : parseCursor(type, next) >= parseCursor(type, old);
};

export class DeltaRun {
  static begin(connectorName, streamName, cursorType) {
    const h = host();
    if (connectorName !== h.config.connector_name) throw fail('denied', `connector ${connectorName} is not this job's connector ${h.config.connector_name}`);
    if (h.runs.some((r) => r.open && r.stream === streamName)) throw fail('already-running', `a run of stream ${streamName} is already open`);
    const stream = h.streams.get(streamName) ?? { type: cursorType, cursor: undefined, status: 'idle' };
    if (stream.type !== cursorType) throw fail('cursor-type-mismatch', `stream ${streamName} has cursor type ${stream.type}`);
    stream.status = 'running';
    h.streams.set(streamName, stream);
    h.calls.push(['begin', streamName, cursorType]);
    const run = new DeltaRun(h, streamName, cursorType, stream.cursor);
    h.runs.push(run);
    return run;
  }
  constructor(h, stream, type, lower) {
    Object.assign(this, { h, stream, type, lower, next: undefined, open: true });
  }
  check() {
    if (!this.open) throw fail('not-running', `the run of stream ${this.stream} already ended`);
  }
  lowerBoundCursor() { return this.lower; }
  setNewCursor(value) {
    this.h.calls.push(['setNewCursor', value]);
    if (parseCursor(this.type, value) === undefined) throw fail('invalid-cursor', `${JSON.stringify(value)} is not a valid ${this.type} cursor`);
    this.next = value;
  }
  setRecordsProcessed(count) { this.records = count; }
  setMetadata(json) {
    const parsed = JSON.parse(json);
    if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw fail('invalid-argument', 'metadata must be a JSON object');
  }
  reject(row, reason) {
    this.check();
    this.h.calls.push(['reject', row, reason]);
    this.h.rejected.push({ stream: this.stream, row, reason });
  }
  end(status, summary) {
    this.open = false;
    Object.assign(this.h.streams.get(this.stream), { status, errorSummary: summary });
  }
  complete() {
    this.check();
    if (this.next === undefined) throw fail('invalid-argument', 'set-new-cursor is required before complete; the run stays open');
    const stream = this.h.streams.get(this.stream);
    if (!advances(this.type, stream.cursor, this.next)) {
      throw fail('cursor-regression', `CURSOR_REGRESSION: cursor ${this.next} does not move past the committed ${stream.cursor}`);
    }
    flush(this.h);
    stream.cursor = this.next;
    this.end('succeeded');
    this.h.calls.push(['complete', this.next]);
    return { connectorName: this.h.config.connector_name, streamName: this.stream, cursorType: this.type, committedCursorValue: this.next, status: 'succeeded', recordsProcessed: this.records };
  }
  fail(summary) {
    this.check();
    this.h.calls.push(['fail', summary]);
    this.h.queue = [];
    this.end('failed', summary);
  }
}

// --- the host -------------------------------------------------------------------------------------
export class TestHost {
  constructor({ settings = 'settings.example.json', fixtures } = {}) {
    const parsed = JSON.parse(readFileSync(settings, 'utf8'));
    Object.assign(this, {
      customerNumber: parsed.customer_number ?? '10000001',
      config: { ...parsed.config }, params: { ...parsed.job_params }, secrets: { ...parsed.secrets },
      fixtures, responses: [], requests: [], logs: [], calls: [], rejected: [], queued: [],
      streams: new Map(), suppliers: new Map(), queue: [], runs: [],
    });
    this.resetLoad();
  }
  // Every run starts with the options off (the host's default).
  resetLoad() {
    this.loadOptions = { fullLoad: false, addressInsertOnly: false, bankInsertOnly: false };
    this.loadStarted = false;
  }
  // Answers GET url (its query params required, others allowed); several: in order, then the last again.
  respond(url, status, body) {
    this.responses.push({ url: new URL(url), status, body });
    return this;
  }
  cursor(stream) { return this.streams.get(stream)?.cursor; }
  // One job, as run-plugin runs it: the result object, or an Error named by the envelope's kind.
  run(run) {
    current = this;
    this.runs = [];
    this.resetLoad();
    let result;
    try {
      result = run();
    } catch (e) {
      throw new Error(`connector_error: ${e?.message ?? e}`);
    } finally {
      current = null;
      this.queue = [];
      this.leftOpen = this.runs.filter((r) => r.open);
      for (const r of this.leftOpen) r.end('failed', 'the connector returned with its delta run still open');
    }
    if (this.leftOpen.length) throw new Error('cursor_not_committed: the connector returned with a delta run still open');
    const value = JSON.parse(result);
    if (!value || typeof value !== 'object' || Array.isArray(value)) throw new Error(`invalid_result: ${result}`);
    return value;
  }
  answer(url) {
    const base = (u) => `${u.protocol}//${u.host}${u.pathname}`;
    const matches = this.responses
      .filter((r) => base(r.url) === base(url) && [...r.url.searchParams].every(([k, v]) => url.searchParams.getAll(k).includes(v)))
      .sort((a, b) => [...b.url.searchParams].length - [...a.url.searchParams].length);
    if (matches.length) {
      const same = this.responses.filter((r) => r.url.href === matches[0].url.href);
      const pick = same.find((r) => !r.served) ?? same[same.length - 1];
      pick.served = true;
      return [pick.status, pick.body];
    }
    if (url.protocol !== 'file:' || !this.fixtures) throw fail('connection', `GET ${url.href}: the test host has no answer; add one with respond()`);
    return this.fixture(url);
  }
  // The host's mapping: DIR/v1/suppliers@page=2.json (most specific), suppliers.json, suppliers.
  fixture(url) {
    const parts = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);
    if (!parts.length || parts.some((p) => p === '.' || p === '..' || p.includes('/'))) return [404, '{"error": "outside the fixtures"}'];
    const dir = join(this.fixtures, ...parts.slice(0, -1));
    const name = parts[parts.length - 1];
    const candidates = existsSync(dir) && statSync(dir).isDirectory()
      ? readdirSync(dir)
        .filter((f) => f.startsWith(`${name}@`) && f.endsWith('.json'))
        .map((f) => [f, [...new URLSearchParams(f.slice(name.length + 1, -5))]])
        .filter(([, wanted]) => wanted.every(([k, v]) => url.searchParams.getAll(k).includes(v)))
        .sort((a, b) => b[1].length - a[1].length || a[0].localeCompare(b[0]))
        .map(([f]) => f)
      : [];
    for (const file of [...candidates, `${name}.json`, name]) {
      const path = join(dir, file);
      if (existsSync(path) && statSync(path).isFile()) return [200, readFileSync(path, 'utf8')];
    }
    return [404, JSON.stringify({ error: `no fixture for ${url.pathname}` })];
  }
}
