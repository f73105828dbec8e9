//! Test fixtures for skiff-control's own tests: the shared harness's [`skiff_tests::control`]
//! (a server process on a free loopback port, kubectl with its admin kubeconfig, a blocking HTTPS
//! client that also reads watch streams), re-exported so the tests keep `common::...` paths.
//!
//! Owns nothing itself: fixtures other packages' tests need belong in the harness.

#![allow(unused_imports)]

pub use skiff_tests::control::*;
