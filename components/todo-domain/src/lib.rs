//! The Todo system's domain, shared by the `todo-api` publisher and the `todo-events`
//! subscriber so both agree on one event schema. No I/O: everything here is tested
//! natively with `cargo test`.

pub mod feed;
pub mod list;
pub mod todo;

#[cfg(test)]
mod fuzz;
