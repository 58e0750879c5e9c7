//! The Spin-compatible host: runs a loaded `spin.toml` app on wasmtime the way Spin 3.6
//! does — the engine (pooling, epochs, componentizing core modules, compiled-code
//! cache), Spin's key-value stores and SQLite databases, Spin's route table, the
//! variables and their providers, the runtime config, the HTTP trigger (a fresh instance
//! per request, Spin's headers, service chaining) and outbound HTTP (allow-list, pooled
//! client, in-process services such as an embedded sidecar). It knows nothing of Dapr.

pub mod engine;
pub mod handles;
pub mod key_value;
pub mod outbound;
pub mod profile;
pub mod routes;
pub mod runtime_config;
pub mod sqlite;
pub mod trigger;
pub mod variables;

pub use trigger::{HttpRuntime, RuntimeOptions, serve};
