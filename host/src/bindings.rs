//! Host-side bindings for `wit/connector.wit` (world `connector`).
//!
//! Every import is async (HTTP and the store await I/O) and trappable: an
//! `Err` from a host function is a trap — a broken invariant or an exceeded
//! limit — while errors a connector can handle travel as WIT variants.

wasmtime::component::bindgen!({
    world: "connector",
    path: "../wit",
    imports: { default: async | trappable },
    exports: { default: async },
    with: {
        "nuntiq:connector/delta-state.delta-run": crate::caps::delta::DeltaRunHandle,
    },
});

pub use nuntiq::connector::{context, delta_state, http, logger, supplier_load, types};
