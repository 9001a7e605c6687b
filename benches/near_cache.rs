//! The near cache's eviction, measured as its hit ratio: reads of 1 000 000
//! keys under a Zipf(1.0) pattern (a few keys read very often, most rarely)
//! through 200 000 entries (`redis.near_cache_entries`' default), every miss
//! filled. Compares quick_cache's S3-FIFO, as `cache/near/entries.rs` builds
//! it, with the policy it replaced: a map emptied whenever it was full.
//!
//! `cargo bench --bench near_cache` prints both ratios and the time per
//! lookup of each.

// Counts and ranks up to a few million: exact in an f64.
#![allow(clippy::cast_precision_loss)]

use std::{collections::HashMap, time::Instant};

use rand::{Rng, SeedableRng, rngs::StdRng};

const KEYS: usize = 1_000_000;
const ENTRIES: usize = 200_000;
const WARM_UP: usize = 2_000_000;
const MEASURED: usize = 5_000_000;

/// Key indexes drawn with probability proportional to 1 / rank.
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(keys: usize) -> Self {
        let mut total = 0.0;
        let cumulative = (1..=keys)
            .map(|rank| {
                total += 1.0 / rank as f64;
                total
            })
            .collect();
        Self { cumulative }
    }

    fn sample(&self, rng: &mut StdRng) -> usize {
        let total = *self.cumulative.last().unwrap();
        let u = rng.r#gen::<f64>() * total;
        self.cumulative.partition_point(|c| *c < u)
    }
}

trait Policy {
    fn get(&self, key: &str) -> bool;
    fn fill(&mut self, key: Box<str>);
}

/// The map that started again empty when full.
struct ClearWhenFull(HashMap<Box<str>, u64>);

impl Policy for ClearWhenFull {
    fn get(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }
    fn fill(&mut self, key: Box<str>) {
        if self.0.len() >= ENTRIES {
            self.0.clear();
        }
        self.0.insert(key, 0);
    }
}

struct QuickCache(quick_cache::sync::Cache<Box<str>, u64>);

impl Policy for QuickCache {
    fn get(&self, key: &str) -> bool {
        self.0.get(key).is_some()
    }
    fn fill(&mut self, key: Box<str>) {
        self.0.insert(key, 0);
    }
}

fn run(name: &str, policy: &mut dyn Policy, keys: &[Box<str>], draws: &[usize]) {
    for &k in &draws[..WARM_UP] {
        if !policy.get(&keys[k]) {
            policy.fill(keys[k].clone());
        }
    }
    let started = Instant::now();
    let mut hits = 0_usize;
    for &k in &draws[WARM_UP..] {
        if policy.get(&keys[k]) {
            hits += 1;
        } else {
            policy.fill(keys[k].clone());
        }
    }
    let took = started.elapsed();
    println!(
        "near cache, {name}: hit ratio {:.1}% over {MEASURED} Zipf(1.0) reads of {KEYS} keys with {ENTRIES} entries ({:.0} ns per read)",
        100.0 * hits as f64 / MEASURED as f64,
        took.as_nanos() as f64 / MEASURED as f64
    );
}

fn main() {
    let keys: Vec<Box<str>> = (0..KEYS)
        .map(|i| format!("wm:e:0123456789abcdef:s:{i:032x}").into())
        .collect();
    let zipf = Zipf::new(KEYS);
    let mut rng = StdRng::seed_from_u64(7);
    let draws: Vec<usize> = (0..WARM_UP + MEASURED)
        .map(|_| zipf.sample(&mut rng))
        .collect();
    run(
        "emptied when full (before)",
        &mut ClearWhenFull(HashMap::new()),
        &keys,
        &draws,
    );
    run(
        "quick_cache S3-FIFO (now)",
        &mut QuickCache(quick_cache::sync::Cache::new(ENTRIES)),
        &keys,
        &draws,
    );
}
