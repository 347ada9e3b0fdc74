//! Ingest against librdkafka's mock cluster and a local Delta store: exactly-once across a
//! restart, and bad input kept as dead letters. (Tansu and S3 are covered by the end-to-end
//! tests of the `sakura` package.)

// Test helpers fail the test by panicking; that is their job.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod bad_input;
mod exactly_once;
mod support;
