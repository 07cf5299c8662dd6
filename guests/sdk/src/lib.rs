//! The guest SDK for Nuntiq connectors: the `nuntiq:connector@0.3.0` bindings
//! plus helpers in the platform's words ([`get_config`], [`delta_run`],
//! [`SupplierLoad`], `save_all`).
//!
//! A connector is a `cdylib` crate that implements [`Guest::run`] and builds
//! with `cargo build --release --target wasm32-wasip2` (or `cargo component
//! build --release`); `nuntiq-host new NAME` writes one that builds as it is.
//!
//! ```no_run
//! use nuntiq_connector::{Guest, log};
//!
//! struct Hello;
//!
//! impl Guest for Hello {
//!     fn run() -> Result<String, String> {
//!         log::info(&format!("Hello, customer {}", nuntiq_connector::context::customer_number()));
//!         Ok(r#"{"greeted": true}"#.into())
//!     }
//! }
//!
//! nuntiq_connector::export_connector!(Hello);
//! ```
//!
//! Use it from a crate of your own as a path or git dependency:
//!
//! ```toml
//! [dependencies]
//! nuntiq-connector = { path = "../nuntiq/guests/sdk" }
//! # or: nuntiq-connector = { git = "https://your-git-host/nuntiq.git", rev = "…" }
//! ```
//!
//! The crate carries its own copy of the contract (`wit/`), so it builds
//! wherever it is copied. With feature `testing`, on a native target, every
//! host interface is answered in-process by a `testing::TestHost`, so
//! `cargo test` exercises a connector's mapping and its delta runs.

#![deny(missing_docs)]

// Lets the generated code name this crate the same way from inside and outside.
extern crate self as nuntiq_connector;

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

/// The raw bindings generated from `wit/connector.wit` (`nuntiq:connector@0.3.0`,
/// world `connector-core`; a Rust guest's std imports the WASI it needs). Their
/// documentation is the contract's own.
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "connector-core",
        path: "wit",
        pub_export_macro: true,
        export_macro_name: "__export_bindings",
        default_bindings_module: "nuntiq_connector::bindings",
        runtime_path: "nuntiq_connector::__wit_bindgen::rt",
    });
}

#[doc(hidden)]
pub use bindings::__export_bindings;
pub use bindings::Guest;
#[cfg(not(all(feature = "testing", not(target_arch = "wasm32"))))]
use bindings::nuntiq::connector::logger;
pub use bindings::nuntiq::connector::types::SettingValue;
#[cfg(not(all(feature = "testing", not(target_arch = "wasm32"))))]
pub use bindings::nuntiq::connector::{context, delta_state, http as raw_http, supplier_load};

/// Exports `run` from your connector type, and writes your crate's name,
/// version, authors, repository and description (from Cargo.toml) into the
/// component's metadata sections, which `nuntiq-host inspect` shows and
/// every run records.
///
/// ```ignore
/// nuntiq_connector::export_connector!(MyConnector);
/// ```
#[macro_export]
macro_rules! export_connector {
    ($($connector:tt)*) => {
        $crate::__export_bindings!($($connector)*);
        const _: () = {
            const NAME: &str = env!("CARGO_PKG_NAME");
            #[cfg(target_arch = "wasm32")]
            #[unsafe(link_section = "component-name")]
            #[used]
            static SECTION: [u8; NAME.len() + 3] = $crate::__component_name::<{ NAME.len() + 3 }>(NAME);
        };
        $crate::__metadata_section!("version", env!("CARGO_PKG_VERSION").as_bytes(), env!("CARGO_PKG_VERSION").len());
        $crate::__metadata_section!("authors", env!("CARGO_PKG_AUTHORS").as_bytes(), env!("CARGO_PKG_AUTHORS").len());
        $crate::__metadata_section!("source", env!("CARGO_PKG_REPOSITORY").as_bytes(), env!("CARGO_PKG_REPOSITORY").len());
        $crate::__metadata_section!("description", env!("CARGO_PKG_DESCRIPTION").as_bytes(), env!("CARGO_PKG_DESCRIPTION").len());
    };
}

/// One custom section of the wasm module, holding `$len` bytes of `$bytes`.
#[doc(hidden)]
#[macro_export]
macro_rules! __metadata_section {
    ($name:literal, $bytes:expr, $len:expr) => {
        const _: () = {
            #[cfg(target_arch = "wasm32")]
            #[unsafe(link_section = $name)]
            #[used]
            static SECTION: [u8; $len] = $crate::__bytes::<{ $len }>($bytes);
        };
    };
}

/// A `component-name` section's body naming `name` (subsection 0; crate
/// names are at most 64 bytes, so each length is one LEB128 byte).
#[doc(hidden)]
pub const fn __component_name<const N: usize>(name: &str) -> [u8; N] {
    let bytes = name.as_bytes();
    let mut out = [0u8; N];
    out[1] = (bytes.len() + 1) as u8;
    out[2] = bytes.len() as u8;
    let mut i = 0;
    while i < bytes.len() {
        out[3 + i] = bytes[i];
        i += 1;
    }
    out
}

/// Copies `bytes` into an array of `N` (padding with zeros), at compile time.
#[doc(hidden)]
pub const fn __bytes<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let mut i = 0;
    while i < bytes.len() && i < N {
        out[i] = bytes[i];
        i += 1;
    }
    out
}
// Under `testing`, natively, the same interfaces answered in-process by a TestHost.
#[cfg(all(feature = "testing", not(target_arch = "wasm32")))]
use testing::imports::logger;
#[cfg(all(feature = "testing", not(target_arch = "wasm32")))]
pub use testing::imports::{context, delta_state, raw_http, supplier_load};

pub mod http;
pub mod log;
pub mod suppliers;
#[cfg(all(feature = "testing", not(target_arch = "wasm32")))]
pub mod testing;

pub use suppliers::{
    LoadOptions, Supplier, SupplierAddress, SupplierBankAccount, SupplierLoad, SupplierLocation, address, bank_account,
    location, set_options, supplier,
};

use delta_state::{CursorType, DeltaError, DeltaRun};

impl SettingValue {
    /// The value as text: strings as they are, numbers and booleans written out.
    pub fn to_text(&self) -> String {
        match self {
            SettingValue::Text(s) | SettingValue::Json(s) => s.clone(),
            SettingValue::Integer(i) => i.to_string(),
            SettingValue::Float(f) => f.to_string(),
            SettingValue::Boolean(b) => b.to_string(),
        }
    }

    /// An integer, or a string holding one (as `int(...)` would accept).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            SettingValue::Integer(i) => Some(*i),
            SettingValue::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Some(*f as i64),
            SettingValue::Text(s) => s.trim().parse().ok(),
            _ => None,
        }
    }
}

/// `config[key]` as text, if present and not empty.
///
/// ```no_run
/// let api_url = nuntiq_connector::get_config("api_url").ok_or("config.api_url is required")?;
/// # Ok::<(), &str>(())
/// ```
pub fn get_config(key: &str) -> Option<String> {
    context::get_config(key).map(|v| v.to_text()).filter(|s| !s.is_empty())
}

/// `job_params[key]` as text, if present and not empty.
pub fn get_param(key: &str) -> Option<String> {
    context::get_param(key).map(|v| v.to_text()).filter(|s| !s.is_empty())
}

impl DeltaError {
    /// What went wrong, for people (wit-bindgen's `Display` is the `Debug` form).
    pub fn message(&self) -> String {
        match self {
            DeltaError::InvalidCursor(m)
            | DeltaError::CursorRegression(m)
            | DeltaError::CursorTypeMismatch(m)
            | DeltaError::AlreadyRunning(m)
            | DeltaError::NotRunning(m)
            | DeltaError::InvalidArgument(m)
            | DeltaError::Store(m)
            | DeltaError::Denied(m)
            | DeltaError::Limit(m) => m.clone(),
        }
    }
}

/// The platform's `with delta_run(...) as r:` — begin, run `work`, then complete;
/// if `work` fails, the run is failed with its message and the cursor stays.
/// `work` must call `set_new_cursor` (and may set records processed and metadata).
///
/// ```no_run
/// use nuntiq_connector::delta_state::CursorType;
/// use nuntiq_connector::{SupplierLoad, delta_run, get_config, supplier};
///
/// let connector = get_config("connector_name").ok_or("config.connector_name is required")?;
/// let mut load = SupplierLoad::new();
/// delta_run(&connector, "suppliers", CursorType::NumericId, |run| {
///     let from: i64 = run.lower_bound_cursor().and_then(|c| c.parse().ok()).unwrap_or(0);
///     load.add(supplier(format!("S-{}", from + 1), "Next supplier"));
///     load.queue().map_err(|e| e.message())?; // written with the cursor
///     run.set_new_cursor(&(from + 1).to_string()).map_err(|e| e.message())
/// })?;
/// # Ok::<(), String>(())
/// ```
pub fn delta_run<T>(
    connector_name: &str,
    stream_name: &str,
    cursor_type: CursorType,
    work: impl FnOnce(&DeltaRun) -> Result<T, String>,
) -> Result<T, String> {
    let run = DeltaRun::begin(connector_name, stream_name, cursor_type).map_err(|e| {
        format!(
            "delta-state begin for {connector_name}/{stream_name} failed: {}",
            e.message()
        )
    })?;
    match work(&run).and_then(|value| {
        run.complete()
            .map_err(|e| format!("delta-state complete failed: {}", e.message()))?;
        Ok(value)
    }) {
        Ok(value) => Ok(value),
        Err(message) => {
            let _ = run.fail(&message);
            Err(message)
        }
    }
}
