//! The conformance suite every [`crate::Store`] backend must pass (written by the store work in
//! progress; see `conformance_tests!`).
