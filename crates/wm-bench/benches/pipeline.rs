//! CPU cost of the consumer's pure stages: decoding one record, and judging a
//! batch of 1 000 (dedup, conflicts, stock deltas). PostgreSQL and the broker
//! are measured by the `apply` bench and end to end by `make bench-ingest`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use warehouse_monitor::{
    domain::{
        event,
        plan::{self, StoredState},
    },
    ingest::decode::decode_all,
    kafka::Record,
};
use wm_devtools::produce;

fn records(n: usize) -> Vec<Record> {
    let messages = produce::generate(&produce::Plan {
        movements: n / 4 + 1,
        seed: 3,
        duplicate_ratio: 0.02,
        invalid_ratio: 0.001,
    });
    messages
        .into_iter()
        .take(n)
        .enumerate()
        .map(|(i, m)| {
            Record::new(
                i64::try_from(i).unwrap(),
                Some(time::OffsetDateTime::UNIX_EPOCH),
                Some(m.value),
            )
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let batch = records(1000);
    let one = batch[0].value.clone();

    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(1));
    group.bench_function("one_event", |b| {
        b.iter(|| event::decode(black_box(one.as_deref())))
    });
    group.finish();

    let mut group = c.benchmark_group("batch");
    group.throughput(Throughput::Elements(batch.len() as u64));
    group.bench_function("decode_and_plan_1000", |b| {
        b.iter(|| {
            let decoded = decode_all(black_box(&batch));
            plan::plan(decoded, &StoredState::default())
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    // The figures are what the benchmark prints; criterion's own charts
    // need a system font that a fresh machine may lack (it panicked here).
    config = Criterion::default().without_plots();
    targets = bench
}
criterion_main!(benches);
