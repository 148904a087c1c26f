//! Spool's end-to-end tests: one binary, one module per area.
//!
//! Every plugin used here is built from `plugins/` by the test setup (see `support`); the
//! malformed ones are written inline as WAT.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod api;
mod browser;
mod cache;
mod cancel;
mod channels;
mod cli;
mod config_values;
mod conformance;
mod email_api;
mod flow_control;
mod flows;
mod hostile;
mod http;
mod http_server;
mod input;
mod json;
mod logs;
mod metrics;
mod nats;
mod outcomes;
mod polyglot;
mod refusals;
mod schedules;
mod sqlite;
mod support;
mod trace;
mod worker;
mod workers;
