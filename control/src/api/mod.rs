//! The Kubernetes resource API: the served types, request handling on the store, discovery,
//! and the pure per-kind logic (defaulting, validation, patching, selectors, tables).
//!
//! Pure modules (`field`, `resources`, `defaulting`, `validation`, `patch`, `selectors`, `table`)
//! never touch HTTP or the store; the handlers are the only adapter between the two.

pub mod allocator;
pub mod bootstrap;
pub mod collector;
pub mod defaulting;
pub mod discovery;
pub mod errors;
pub mod field;
pub mod handlers;
pub mod object;
pub mod openapi_v2;
pub mod patch;
pub mod pod_log;
pub mod registry;
pub mod resources;
pub mod selectors;
pub mod table;
pub mod typed;
pub mod validation;
pub mod watch;
