"""An in-process double of the host's interfaces, for pytest.

Importing it installs stand-ins for the modules componentize-py generates
(`wit_world`, `wit_world.imports.*`, `componentize_py_types`), so `app` imports
and runs under plain CPython. A `TestHost` answers `file://` requests from a
fixtures directory as `nuntiq-host run-plugin --fixtures DIR` does (and any
URL from `respond`), keeps suppliers, rejected rows and cursors in memory
across runs, and refuses what the host refuses: a cursor that does not parse
or moves back (timestamps and numeric ids `>=`, opaque tokens `!=`),
`complete` before `set_new_cursor`, another connector's stream, a run left
open, `set_options(full_load=...)` changed after the run's first `queue`.
Suppliers are written as the host writes them: upserted on (supplier_number,
organization_code), locations by location_code, addresses and bank accounts
replaced (insert-only: the new ones added); a full load's first write empties
the store first. Retries are counted, not waited for; the network is never used.
"""
import dataclasses
import enum
import json
import os
import sys
import types as _types
import urllib.parse
from datetime import datetime, timedelta, timezone


class Err(Exception):
    """componentize_py_types.Err: a WIT `result` error."""

    def __init__(self, value):
        super().__init__(value)
        self.value = value


def _module(name, **items):
    module = _types.ModuleType(name)
    module.__dict__.update(items)
    sys.modules[name] = module
    return module


def _variant(name, cases):
    """One dataclass per case, each carrying `.value`, as componentize-py writes them."""
    return {f"{name}_{case}": dataclasses.make_dataclass(f"{name}_{case}", [("value", object)]) for case in cases}


_current = None


def _host():
    if _current is None:
        raise RuntimeError("a host interface was called outside TestHost.run(app.WitWorld().run)")
    return _current


# --- types and context -------------------------------------------------------------------------
types = _module("wit_world.imports.types", **_variant("SettingValue", ["Text", "Integer", "Float", "Boolean", "Json"]))


def _setting(value):
    if value is None:
        return None
    if isinstance(value, bool):
        return types.SettingValue_Boolean(value)
    if isinstance(value, int):
        return types.SettingValue_Integer(value)
    if isinstance(value, float):
        return types.SettingValue_Float(value)
    if isinstance(value, str):
        return types.SettingValue_Text(value)
    return types.SettingValue_Json(json.dumps(value))


context = _module(
    "wit_world.imports.context",
    customer_number=lambda: _host().customer_number,
    get_config=lambda key: _setting(_host().config.get(key)),
    get_param=lambda key: _setting(_host().params.get(key)),
    get_secret=lambda key: _host().secrets.get(key),
    has_secret=lambda key: key in _host().secrets,
)


# --- logger --------------------------------------------------------------------------------------
class Level(enum.Enum):
    DEBUG = 0
    INFO = 1
    WARN = 2
    ERROR = 3


def _log(level, message, step, detail):
    _host().logs.append((level, message, step))
    print(f"[{level.name}] {message}" + (f" (step {step})" if step else ""))


logger = _module("wit_world.imports.logger", Level=Level, log=_log)


# --- http ----------------------------------------------------------------------------------------
@dataclasses.dataclass
class Request:
    url: str
    query: list
    headers: list
    timeout_ms: object
    bearer_secret: object


@dataclasses.dataclass
class RetryPolicy:
    max_attempts: int
    backoff_multiplier_ms: int
    backoff_min_ms: int
    backoff_max_ms: int
    timeout_ms: int
    retry_statuses: list


@dataclasses.dataclass
class Response:
    status: int
    headers: list
    body: bytes
    attempts: int
    url: str


@dataclasses.dataclass
class RetriesExhausted:
    attempts: int
    last_status: object
    last_cause: str


_http_errors = _variant(
    "HttpError", ["Denied", "InvalidRequest", "Timeout", "Connection", "Status", "RetriesExhausted", "BodyTooLarge"]
)


def _get_with_retry(request, policy):
    host = _host()
    url = request.url
    if request.query:
        url += ("&" if "?" in url else "?") + urllib.parse.urlencode(request.query)
    if request.bearer_secret is not None and request.bearer_secret not in host.secrets:
        raise Err(_http_errors["HttpError_InvalidRequest"](
            f"bearer-secret {request.bearer_secret!r} names no secret of settings.json's secrets"))
    attempts = policy.max_attempts if policy else 5
    retry = policy.retry_statuses if policy else [429, 500, 502, 503, 504]
    for attempt in range(1, attempts + 1):
        host.requests.append(url)
        status, body = host._answer(url)
        response = Response(status, [("content-type", "application/json")], body, attempt, url)
        if 200 <= status < 300:
            return response
        if status not in retry or attempts == 1:
            raise Err(_http_errors["HttpError_Status"](response))
    raise Err(_http_errors["HttpError_RetriesExhausted"](
        RetriesExhausted(attempts, status, f"HTTP {status} from {urllib.parse.urlsplit(url).hostname or ''}")))


http = _module("wit_world.imports.http", Request=Request, RetryPolicy=RetryPolicy, Response=Response,
               RetriesExhausted=RetriesExhausted, get_with_retry=_get_with_retry, **_http_errors)


# --- supplier-load -------------------------------------------------------------------------------
def _record(name, fields):
    return dataclasses.make_dataclass(name, [(f, object) for f in fields.split()])


_custom = "custom_field1 custom_field2 custom_field3"
SupplierAddress = _record("SupplierAddress", f"street city state postal_code country_code {_custom}")
SupplierBankAccount = _record(
    "SupplierBankAccount",
    f"bank_name bank_branch bank_account_number bank_routing_number swift_code account_currency is_primary {_custom}")
SupplierLocation = _record(
    "SupplierLocation",
    "location_code location_name organization_code default_currency_code default_payment_term_code "
    f"default_payment_method taxpayer_id duns_number is_active {_custom} custom_field4 custom_field5 addresses "
    "bank_accounts")
Supplier = _record(
    "Supplier",
    "supplier_number supplier_name alternative_supplier_name supplier_type organization_code is_active "
    f"{_custom} custom_field4 custom_field5 locations")
LoadOptions = _record("LoadOptions", "full_load address_insert_only bank_insert_only")
_load_errors = _variant("LoadError", ["InvalidRecord", "QueueFull", "Store"])
_MAX_LOCATIONS, _MAX_ADDRESSES = 1000, 100


def _invalid(message):
    return Err(_load_errors["LoadError_InvalidRecord"](message))


def _queue(suppliers):
    host = _host()
    for s in suppliers:
        if not (s.supplier_number or "").strip():
            raise _invalid("a supplier has no supplier_number")
        name = f"supplier {s.supplier_number!r}"
        if not (s.supplier_name or "").strip():
            raise _invalid(f"{name}: supplier_name is required")
        if not isinstance(s.locations, list):
            raise _invalid(f"{name}: locations must be a list (use [] for none)")
        if len(s.locations) > _MAX_LOCATIONS:
            raise _invalid(f"{name}: {len(s.locations)} locations, at most {_MAX_LOCATIONS}")
        for location in s.locations:
            if not (location.location_code or "").strip():
                raise _invalid(f"{name}: a location has no location_code")
            # componentize-py refuses None for a WIT list: say so here rather than in the built component.
            for field, label in (("addresses", "addresses"), ("bank_accounts", "bank accounts")):
                items = getattr(location, field)
                if not isinstance(items, list):
                    raise _invalid(f"{name}: location {location.location_code!r}: {field} must be a list (use [] for none)")
                if len(items) > _MAX_ADDRESSES:
                    raise _invalid(f"{name}: location {location.location_code!r} has {len(items)} {label}, "
                                   f"at most {_MAX_ADDRESSES}")
    if len(host.queue) + len(suppliers) > 10_000:
        raise Err(_load_errors["LoadError_QueueFull"]("more than the host's 10000 unsaved suppliers; call save_all more often"))
    host.queue.extend(suppliers)
    host.queued.extend(suppliers)
    return len(host.queue)


def _set_options(options):
    """The host's rule: full_load is chosen before the run's first queue call, and not changed after it."""
    host = _host()
    started = host.load_started or bool(host.queue)
    if started and bool(options.full_load) != host.load_options.full_load:
        raise _invalid("set-options: full-load can only be chosen before the run's first queue call; "
                       "call set-options first")
    host.load_options = LoadOptions(bool(options.full_load), bool(options.address_insert_only),
                                    bool(options.bank_insert_only))


def _merge(kept, new, same):
    """Insert-only: the stored items, then the new ones none of them is the same as."""
    return list(kept) + [n for n in new if not any(same(k, n) for k in kept)]


def _flush(host):
    written, options = len(host.queue), host.load_options
    if written and options.full_load and not host.load_started:
        host.suppliers.clear()  # a full load's first write deletes every stored supplier
    host.load_started |= written > 0
    for s in host.queue:
        key = (s.supplier_number, s.organization_code or "")
        old = host.suppliers.get(key)
        locations = [dataclasses.replace(l) for l in old.locations] if old else []
        for location in s.locations:
            stored = next((i for i, o in enumerate(locations) if o.location_code == location.location_code), None)
            if stored is None:
                locations.append(location)
                continue
            o, location = locations[stored], dataclasses.replace(location)
            if options.address_insert_only:
                location.addresses = _merge(o.addresses, location.addresses, lambda a, b: a == b)
            if options.bank_insert_only:
                location.bank_accounts = _merge(o.bank_accounts, location.bank_accounts,
                                                lambda a, b: a.bank_account_number == b.bank_account_number)
            locations[stored] = location
        host.suppliers[key] = dataclasses.replace(s, locations=locations,
                                                  is_active=True if s.is_active is None else s.is_active)
    host.queue = []
    return written


supplier_load = _module("wit_world.imports.supplier_load", Supplier=Supplier, SupplierLocation=SupplierLocation,
                        SupplierAddress=SupplierAddress, SupplierBankAccount=SupplierBankAccount,
                        LoadOptions=LoadOptions, set_options=_set_options, queue=_queue,
                        save_all=lambda: _flush(_host()), **_load_errors)


# --- delta-state ---------------------------------------------------------------------------------
class CursorType(enum.Enum):
    TIMESTAMP_UTC = 0
    NUMERIC_ID = 1
    OPAQUE_TOKEN = 2


class RunStatus(enum.Enum):
    IDLE = 0
    RUNNING = 1
    SUCCEEDED = 2
    FAILED = 3


StreamState = _record(
    "StreamState",
    "connector_name stream_name cursor_type committed_cursor_value committed_at_utc status started_at_utc "
    "completed_at_utc records_processed error_summary metadata updated_at_utc updated_by")
_delta_errors = _variant("DeltaError", ["InvalidCursor", "CursorRegression", "CursorTypeMismatch", "AlreadyRunning",
                                        "NotRunning", "InvalidArgument", "Store", "Denied", "Limit"])


def _delta_error(case, message):
    return Err(_delta_errors[f"DeltaError_{case}"](message))


def _parse_cursor(cursor_type, value):
    """The host's cursor rules: what a value of each type may look like (None: it is not one)."""
    if len(value) > 4096:
        return None
    if cursor_type == CursorType.NUMERIC_ID:
        try:
            number = int(value)
        except ValueError:
            return None
        return number if str(number) == value and -2**63 <= number < 2**63 else None
    if cursor_type == CursorType.TIMESTAMP_UTC:
        try:
            at = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return at if at.tzinfo and at <= datetime.now(timezone.utc) + timedelta(hours=1) else None
    return value or None


def _advances(cursor_type, old, new):
    """Timestamps and numeric ids move forward (>=), opaque tokens change (!=)."""
    if old is None or _parse_cursor(cursor_type, old) is None:
        return True
    if cursor_type == CursorType.OPAQUE_TOKEN:
        return old != new
    return _parse_cursor(cursor_type, new) >= _parse_cursor(cursor_type, old)


class DeltaRun:
    """One run of a stream: begin -> work -> complete (or fail)."""

    def __init__(self, host, stream, cursor_type):
        self._host, self._stream, self._type = host, stream, cursor_type
        self._lower = host.streams.get(stream, {}).get("cursor")
        self._new, self._records, self._open = None, None, True
        host.calls.append(("begin", stream, cursor_type))

    @classmethod
    def begin(cls, connector_name, stream_name, cursor_type):
        host = _host()
        own = host.config.get("connector_name")
        if connector_name != own:
            raise _delta_error("Denied", f"connector {connector_name!r} is not this job's connector {own!r}")
        if any(r._open and r._stream == stream_name for r in host.runs):
            raise _delta_error("AlreadyRunning", f"a run of stream {stream_name} is already open in this job")
        stream = host.streams.setdefault(stream_name, {"type": cursor_type, "cursor": None, "status": RunStatus.IDLE})
        if stream["type"] != cursor_type:
            raise _delta_error("CursorTypeMismatch", f"stream {stream_name} has cursor type {stream['type'].name}")
        stream["status"] = RunStatus.RUNNING
        run = cls(host, stream_name, cursor_type)
        host.runs.append(run)
        return run

    def __enter__(self):
        return self

    def __exit__(self, *_):
        return False

    def _check_open(self):
        if not self._open:
            raise _delta_error("NotRunning", f"the run of stream {self._stream} already ended")

    def lower_bound_cursor(self):
        return self._lower

    def set_new_cursor(self, value):
        self._host.calls.append(("set_new_cursor", value))
        if _parse_cursor(self._type, value) is None:
            raise _delta_error("InvalidCursor", f"{value!r} is not a valid {self._type.name.lower()} cursor")
        self._new = value

    def set_records_processed(self, count):
        self._records = count

    def set_metadata(self, metadata):
        if not isinstance(json.loads(metadata), dict):
            raise _delta_error("InvalidArgument", "metadata must be a JSON object")

    def reject(self, row, reason):
        self._check_open()
        self._host.calls.append(("reject", row, reason))
        self._host.rejected.append((self._stream, row, reason))

    def _end(self, status, summary=None):
        self._open = False
        stream = self._host.streams[self._stream]
        stream["status"], stream["error_summary"] = status, summary

    def complete(self):
        self._check_open()
        if self._new is None:
            raise _delta_error("InvalidArgument", "set-new-cursor is required before complete; the run stays open")
        old = self._host.streams[self._stream]["cursor"]
        if not _advances(self._type, old, self._new):
            raise _delta_error("CursorRegression",
                               f"CURSOR_REGRESSION: cursor {self._new!r} does not move past the committed {old!r}")
        _flush(self._host)
        self._host.streams[self._stream]["cursor"] = self._new
        self._end(RunStatus.SUCCEEDED)
        self._host.calls.append(("complete", self._new))
        return StreamState(self._host.config.get("connector_name"), self._stream, self._type, self._new, None,
                           RunStatus.SUCCEEDED, None, None, self._records, None, None, None, None)

    def fail(self, error_summary):
        self._check_open()
        self._host.calls.append(("fail", error_summary))
        self._host.queue = []
        self._end(RunStatus.FAILED, error_summary)


delta_state = _module("wit_world.imports.delta_state", CursorType=CursorType, RunStatus=RunStatus,
                      StreamState=StreamState, DeltaRun=DeltaRun, **_delta_errors)


class WitWorld:
    """The generated protocol class the connector's `WitWorld` subclasses."""


_module("wit_world", WitWorld=WitWorld)
_module("wit_world.imports", types=types, context=context, logger=logger, http=http,
        supplier_load=supplier_load, delta_state=delta_state)
_module("componentize_py_types", Err=Err)


# --- the host ------------------------------------------------------------------------------------
class TestHost:
    """The host of a connector under test; its stores last across runs."""

    __test__ = False  # not a pytest test class

    def __init__(self, settings="settings.example.json", fixtures=None):
        with open(settings) as f:
            parsed = json.load(f)
        self.customer_number = parsed.get("customer_number", "10000001")
        self.config = dict(parsed.get("config") or {})
        self.params = dict(parsed.get("job_params") or {})
        self.secrets = dict(parsed.get("secrets") or {})
        self.fixtures = fixtures
        self.responses = {}
        self.requests, self.logs, self.calls, self.rejected, self.queued = [], [], [], [], []
        self.streams, self.suppliers, self.queue, self.runs = {}, {}, [], []
        self._reset_load()

    def _reset_load(self):
        """Every run starts with the options off (the host's default)."""
        self.load_options, self.load_started = LoadOptions(False, False, False), False

    def respond(self, url, status, body):
        """Answers GET `url` (its query params required, others allowed); several: in order, then the last again."""
        self.responses.setdefault(url, []).append((status, body.encode() if isinstance(body, str) else body))
        return self

    def cursor(self, stream):
        return self.streams.get(stream, {}).get("cursor")

    def run(self, run):
        """One job, as run-plugin runs it: returns the result object, or raises AssertionError with
        the envelope's error kind (`connector_error`, `cursor_not_committed`, `invalid_result`)."""
        global _current
        _current, self.runs = self, []
        self._reset_load()
        try:
            result = run()
        except Err as e:
            raise AssertionError(f"connector_error: {e.value}") from None
        finally:
            _current = None
            self.queue = []
            left_open = [r for r in self.runs if r._open]
            for r in left_open:
                r._end(RunStatus.FAILED, "the connector returned with its delta run still open")
        if left_open:
            raise AssertionError("cursor_not_committed: the connector returned with a delta run still open")
        value = json.loads(result)
        if not isinstance(value, dict):
            raise AssertionError(f"invalid_result: {result!r} is not a JSON object")
        return value

    def _answer(self, url):
        split = urllib.parse.urlsplit(url)
        base = urllib.parse.urlunsplit((split.scheme, split.netloc, split.path, "", ""))
        params = urllib.parse.parse_qsl(split.query)
        best = None
        for stub, answers in self.responses.items():
            s = urllib.parse.urlsplit(stub)
            wanted = urllib.parse.parse_qsl(s.query)
            if urllib.parse.urlunsplit((s.scheme, s.netloc, s.path, "", "")) == base and all(w in params for w in wanted):
                if best is None or len(wanted) > best[0]:
                    best = (len(wanted), answers)
        if best:
            answers = best[1]
            return answers.pop(0) if len(answers) > 1 else answers[0]
        if split.scheme != "file" or not self.fixtures:
            raise Err(_http_errors["HttpError_Connection"](f"GET {url}: the test host has no answer; add one with respond()"))
        return self._fixture(split.path, params)

    def _fixture(self, path, params):
        """The host's mapping: DIR/v1/suppliers@page=2.json (most specific), suppliers.json, suppliers."""
        parts = [urllib.parse.unquote(p) for p in path.split("/") if p]
        if not parts or any(p in (".", "..") or "/" in p for p in parts):
            return 404, b'{"error": "the path must name a file inside the fixtures directory"}'
        folder = os.path.join(self.fixtures, *parts[:-1])
        name = parts[-1]
        candidates = []
        for file in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            if file.startswith(name + "@") and file.endswith(".json"):
                wanted = urllib.parse.parse_qsl(file[len(name) + 1:-5])
                if all(w in params for w in wanted):
                    candidates.append((-len(wanted), file))
        for file in [f for _, f in sorted(candidates)] + [name + ".json", name]:
            full = os.path.join(folder, file)
            if os.path.isfile(full):
                with open(full, "rb") as f:
                    return 200, f.read()
        return 404, json.dumps({"error": f"no fixture for {path}"}).encode()
