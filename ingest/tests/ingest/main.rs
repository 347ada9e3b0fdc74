//! Ingest against librdkafka's mock cluster and a local Delta store: exactly-once across a
//! restart, and bad input kept as dead letters. (Tansu and S3 are covered by the end-to-end
//! tests of the `sakura` package.)

mod exactly_once;
