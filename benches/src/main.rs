//! Benchmark programs. Each capability issue adds one that runs our side and a named peer
//! (DuckDB, a Kafka consumer, ...) in the same run on the same data and prints medians and
//! ratios. None exists yet: the foundation issue sets no performance figure.

fn main() {
    println!(
        "sakura-benches: no benchmark programs yet (the ingest, serving and ML issues add them)"
    );
}
