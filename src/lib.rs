//! spindapr: a Spin-compatible runtime for `spin.toml` HTTP apps on wasmtime, with an
//! embedded Dapr-compatible sidecar. This crate is the command line: one module per
//! command, wiring the host (`spindapr-host`) and the sidecar (`spindapr-dapr`)
//! together; `src/main.rs` only parses arguments.

pub mod build;
mod in_process;
pub mod package;
pub mod sidecar;
pub mod up;
pub mod watch;
