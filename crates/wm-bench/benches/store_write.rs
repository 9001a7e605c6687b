//! Cost of one batch transaction (decode, plan, `store::write`) of 1 000 generated records
//! (new movements, 2% duplicates, 0.1% malformed) against the local
//! PostgreSQL, on a fresh database. Each iteration applies a new batch on a
//! partition of its own, so every batch does the full work: locks, reads,
//! COPY, upserts, rejects and the offset insert.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use warehouse_monitor::{
    app::startup,
    config::Settings,
    ingest::{apply::apply_once, decode::decode_all},
    kafka::Record,
    store::{self, write::PartitionBatch},
};
use wm_devtools::produce;

const BATCH: usize = 1000;

fn batch(seed: u64) -> Vec<Record> {
    produce::generate(&produce::Plan {
        movements: BATCH / 4 + 50,
        seed,
        duplicate_ratio: 0.02,
        invalid_ratio: 0.001,
    })
    .into_iter()
    .take(BATCH)
    .enumerate()
    .map(|(i, m)| {
        Record::new(
            i64::try_from(i).unwrap(),
            Some(time::OffsetDateTime::now_utc()),
            Some(m.value),
        )
    })
    .collect()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
    let mut settings = Settings::load(&dir, None).expect("config/default.toml loads");
    let base = settings.postgres.url.expose().to_owned();
    let server = base.rsplit_once('/').map_or(base.as_str(), |(s, _)| s);
    settings.postgres.url = format!("{server}/wm_bench_apply_{}", std::process::id()).into();
    settings.postgres.pool_size = 1;
    let url = settings.postgres.url.expose().to_owned();
    let pool = rt.block_on(async {
        store::drop_database(&url).await.expect("drop");
        startup::migrate(&settings)
            .await
            .expect("PostgreSQL reachable (make stack)");
        store::pool(&settings.postgres).expect("a pool")
    });

    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(15));
    let mut next = 0u64;
    group.bench_function("apply_1000", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let pool = pool.clone();
            let first = next;
            next += iters;
            async move {
                let mut client = pool.get().await.expect("connection");
                let mut total = Duration::ZERO;
                for i in 0..iters {
                    let partition = i32::try_from(first + i).expect("partition fits");
                    let records = batch(first + i);
                    let batch = PartitionBatch {
                        topic: "bench",
                        partition,
                        expected_offset: None,
                        records: &records,
                    };
                    let started = Instant::now();
                    apply_once(&mut client, &batch, decode_all(&records))
                        .await
                        .expect("apply");
                    total += started.elapsed();
                }
                total
            }
        })
    });
    group.finish();
    pool.close();
    rt.block_on(async { store::drop_database(&url).await.expect("drop") });
}

criterion_group! {
    name = benches;
    // The figures are what the benchmark prints; criterion's own charts
    // need a system font that a fresh machine may lack (it panicked here).
    config = Criterion::default().without_plots();
    targets = bench
}
criterion_main!(benches);
