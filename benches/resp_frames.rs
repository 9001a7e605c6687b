//! The near cache's RESP3 parser (`src/cache/resp.rs`) against the
//! maintained codec of the `redis-protocol` crate (the one fred uses), on the
//! frames the tracking connection reads most, each fed whole: a `GET` reply
//! of about 300 bytes, an `invalidate` push naming 1 key and one naming 50,
//! and `+PONG` (a fence). Whether to keep our parser was decided on these
//! figures; the decision and the figures are in `src/cache/resp.rs`.
//!
//! `cargo bench --bench resp_frames` runs both in the same process.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

// The parser as the service builds it: the file itself, not a copy.
#[allow(dead_code, unreachable_pub)]
#[path = "../src/cache/resp.rs"]
mod resp;

/// A key as the service writes it: `wm:<epoch>:movement:<uuid>`.
fn key(i: u32) -> String {
    format!("wm:000000000000002a:movement:{}", uuid(u128::from(i)))
}

fn bulk(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(format!("${}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// A cached movement: `version:payload`, the payload the API's JSON.
fn get_reply() -> Vec<u8> {
    let payload = format!(
        "17:{{\"movement_id\":\"{id}\",\"warehouse_id\":\"{w}\",\"status\":\"delivered\",\
         \"dispatched_at\":\"2024-05-01T10:00:00Z\",\"arrived_at\":\"2024-05-01T12:30:00Z\",\
         \"lines\":[{{\"product_id\":\"{p}\",\"dispatched\":12,\"arrived\":12,\"difference\":0}}]}}",
        id = uuid(1),
        w = uuid(2),
        p = uuid(3),
    );
    let mut out = Vec::new();
    bulk(&mut out, payload.as_bytes());
    out
}

fn uuid(n: u128) -> String {
    let hex = format!("{:032x}", 0xa1b2_c3d4_0000_u128 + n);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// `> invalidate [keys...]`, as Redis pushes it on a tracking connection.
fn invalidate(keys: u32) -> Vec<u8> {
    let mut out = b">2\r\n".to_vec();
    bulk(&mut out, b"invalidate");
    out.extend_from_slice(format!("*{keys}\r\n").as_bytes());
    for i in 0..keys {
        bulk(&mut out, key(i).as_bytes());
    }
    out
}

fn frames() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("get_300b", get_reply()),
        ("invalidate_1", invalidate(1)),
        ("invalidate_50", invalidate(50)),
        ("pong", b"+PONG\r\n".to_vec()),
    ]
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("resp3");
    for (name, wire) in frames() {
        // Both parsers read the frame the same way, and all of it.
        let (_, used) = resp::parse(&wire).unwrap().unwrap();
        assert_eq!(used, wire.len(), "{name}");
        let (_, used) = redis_protocol::resp3::decode::complete::decode(&wire)
            .unwrap()
            .unwrap();
        assert_eq!(used, wire.len(), "{name}");
        let shared = Bytes::from(wire.clone());

        group.throughput(Throughput::Bytes(wire.len() as u64));
        group.bench_with_input(BenchmarkId::new("ours", name), &wire, |b, wire| {
            b.iter(|| resp::parse(black_box(wire)).unwrap());
        });
        group.bench_with_input(
            BenchmarkId::new("redis_protocol_owned", name),
            &wire,
            |b, wire| {
                b.iter(|| {
                    redis_protocol::resp3::decode::complete::decode(black_box(wire)).unwrap()
                });
            },
        );
        group.bench_with_input(
            BenchmarkId::new("redis_protocol_bytes", name),
            &shared,
            |b, wire| {
                b.iter(|| {
                    redis_protocol::resp3::decode::complete::decode_bytes(black_box(wire)).unwrap()
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
