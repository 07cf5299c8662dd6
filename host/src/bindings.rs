//! Host-side bindings, one module per contract version (Zed's pattern): the
//! capabilities implement the current one (`v0_3`); `caps::v0_2` and
//! `caps::v0_1` forward the frozen contracts to them, so connectors built
//! against any of them run.
//!
//! Every import is async (HTTP and the store await I/O) and trappable: an
//! `Err` from a host function is a trap — a broken invariant or an exceeded
//! limit — while errors a connector can handle travel as WIT variants.

/// `nuntiq:connector@0.3.0`, world `connector-core` (WASI is linked apart).
pub mod v0_3 {
    wasmtime::component::bindgen!({
        world: "connector-core",
        path: "../wit",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "nuntiq:connector/delta-state.delta-run": crate::caps::delta::DeltaRunHandle,
            "nuntiq:connector/http.pending-response": crate::caps::http::PendingGet,
        },
    });

    pub use nuntiq::connector::{context, delta_state, http, logger, supplier_load, types};
}

/// `nuntiq:connector@0.2.1` (which links 0.2.0 connectors too), frozen in
/// `wit/v0.2.1/`.
pub mod v0_2 {
    wasmtime::component::bindgen!({
        world: "connector-core",
        path: "../wit/v0.2.1",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "nuntiq:connector/delta-state.delta-run": crate::caps::delta::DeltaRunHandle,
            "nuntiq:connector/http.pending-response": crate::caps::http::PendingGet,
        },
    });

    pub use nuntiq::connector::{context, delta_state, http, logger, supplier_load, types};
}

/// `nuntiq:connector@0.1.0`, frozen in `wit/v0.1.0/`.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        world: "connector",
        path: "../wit/v0.1.0",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "nuntiq:connector/delta-state.delta-run": crate::caps::delta::DeltaRunHandle,
        },
    });

    pub use nuntiq::connector::{context, delta_state, http, logger, supplier_load, types};
}

/// The current contract.
pub use v0_3::{context, delta_state, http, logger, supplier_load, types};
