//! What every decoder must do with any input: never panic, and account for every message —
//! each one is a row or a dead letter, and the well-formed neighbours of a bad message are kept;
//! and wherever the schema-specialised JSON decoder takes a batch, its batch is arrow-json's.

use sakura_decode::{DecodeLimits, EventDecoder, Format, RawMessage};

fn message(offset: i64, value: Option<Vec<u8>>) -> RawMessage {
    RawMessage {
        topic: "fuzz".into(),
        partition: 0,
        offset,
        key: None,
        value: value.map(Into::into),
    }
}

/// Decodes `[good, input, good]` with the schema chosen by the first byte and checks the
/// invariants.
pub fn check(format: Format, data: &[u8], good: impl Fn(&str) -> Vec<u8>) {
    let Some((&pick, input)) = data.split_first() else {
        return;
    };
    let schema = ["telemetry", "logs", "events"][usize::from(pick) % 3];
    let decoder = EventDecoder::new(
        sakura_schemas::event_schema(schema).expect("built-in schema"),
        DecodeLimits::default(),
        format,
    )
    .expect("decoder")
    .with_strict(pick & 0x80 != 0);
    let messages = [
        message(0, Some(good(schema))),
        message(1, Some(input.to_vec())),
        message(2, Some(good(schema))),
    ];
    for batch in [&messages[..], &messages[1..2]] {
        let agrees = decoder
            .fast_path_agrees(batch)
            .expect("decoding never fails as a whole");
        assert_ne!(agrees, Some(false), "the fast path differs from arrow-json");
    }
    let out = decoder
        .decode(&messages)
        .expect("decoding never fails as a whole");
    let rows = out.batch.as_ref().map_or(0, |b| b.num_rows());
    assert_eq!(
        rows + out.dead_letters.len(),
        messages.len(),
        "every message is a row or a dead letter"
    );
    assert!(rows >= 2, "the good neighbours are kept");
    for d in &out.dead_letters {
        assert_eq!(d.offset, 1, "only the fuzzed message can be a dead letter");
        assert!(!d.message.is_empty());
        assert_eq!(
            d.value.as_deref(),
            Some(input),
            "a dead letter keeps the original bytes"
        );
    }
}
