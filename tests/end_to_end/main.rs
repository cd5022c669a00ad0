//! The `crier` binary end to end: each test starts real `crier` processes against a fresh
//! PostgreSQL database of its own, and drives them as clients, operators and attackers would.
//! One test binary with a module per area, so the support code and the dependencies are
//! compiled and linked once.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic here is a failed test

mod support;

mod api;
mod audit;
mod automation;
mod browser;
mod cli;
mod contract_fuzz;
mod email;
mod faults;
mod hostile;
mod languages;
mod privileges;
mod public;
mod scale;
mod status_page;
mod stream;
mod templates;
mod webhooks;
