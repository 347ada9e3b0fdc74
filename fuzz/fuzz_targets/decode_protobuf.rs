//! Fuzzes the Protobuf decoder: `cargo fuzz run -s none decode_protobuf` (see scripts/fuzz.sh).
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use sakura_decode::Format;

/// A valid Protobuf event of `schema`, hand-encoded: field 1 is the `Timestamp` (seconds =
/// 1764331200, 2025-11-28T12:00:00Z), then the required strings (and `value` for telemetry).
fn good(schema: &str) -> Vec<u8> {
    let mut out = vec![0x0a, 0x06, 0x08];
    out.extend(varint(1_764_331_200));
    let mut string = |field: u8, s: &str| {
        out.push(field << 3 | 2);
        out.push(s.len() as u8);
        out.extend(s.as_bytes());
    };
    match schema {
        "telemetry" => {
            string(2, "h");
            string(3, "s");
            string(5, "m");
            out.push(6 << 3 | 1);
            out.extend(1.5f64.to_le_bytes());
        }
        "logs" => {
            string(2, "INFO");
            string(3, "s");
            string(5, "m");
        }
        _ => string(2, "e"),
    }
    out
}

fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

fuzz_target!(|data: &[u8]| common::check(Format::Protobuf, data, good));
