//! spindapr: a Spin-compatible runtime for `spin.toml` HTTP apps on wasmtime, with an
//! embedded Dapr-compatible sidecar. The binary (`src/main.rs`) only parses the command
//! line; everything it runs lives in these modules.

pub mod build_cmd;
pub mod dapr;
pub mod engine;
pub mod manifest;
pub mod outbound;
pub mod package;
pub mod routes;
pub mod runtime_config;
pub mod server;
pub mod trigger_http;
pub mod up;
pub mod variables;
