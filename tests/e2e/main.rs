//! End-to-end tests: the real `sakura` binary against real services (Tansu, moto's S3 server)
//! and unmodified external clients (ADBC, pyarrow, DuckDB, deltalake). One test binary; the
//! modules below are its parts.

// Test helpers fail the test by panicking; that is their job.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod curl;
mod kafka;
mod procs;
mod proxy;
mod python;
mod sakura;
mod services;

mod broker_restarts;
mod cli_config;
mod crash_sigkill;
mod demo_clients;
mod flight_auth;
mod flight_rbac;
mod flight_tls;
mod formats_and_evolution;
mod jobs_compaction;
mod jobs_race;
mod jobs_rollup;
mod ml_detect;
mod ml_nab;
mod object_store_outages;
mod rebalance;
mod security;
mod serve_load;
mod serve_s3_exactly_once;
