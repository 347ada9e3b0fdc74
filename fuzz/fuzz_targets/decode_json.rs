//! Fuzzes the JSON decoder: `cargo fuzz run -s none decode_json` (see scripts/fuzz.sh).
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use sakura_decode::Format;

/// A valid JSON event of `schema` (yesterday, so inside the accepted time range).
fn good(schema: &str) -> Vec<u8> {
    let ts = "\"2025-11-28T12:00:00Z\"";
    match schema {
        "telemetry" => format!(
            r#"{{"ts":{ts},"host":"h","service":"s","metric":"m","value":1.5,"labels":{{"a":"b"}}}}"#
        ),
        "logs" => format!(r#"{{"ts":{ts},"level":"INFO","service":"s","message":"m"}}"#),
        _ => format!(r#"{{"ts":{ts},"event_type":"e","payload":{{"k":[1,2]}}}}"#),
    }
    .into_bytes()
}

fuzz_target!(|data: &[u8]| common::check(Format::Json, data, good));
