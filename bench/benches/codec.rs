//! Codec throughput: encoding and decoding a batch of 500 typical signals.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vedetta_common::codec::{MAX_BATCH_FRAME, decode_frame, encode_frame};
use vedetta_common::protocol::{Batch, Message};
use vedetta_common::{IndicatorType, Severity, Signal, Timestamp};

fn batch() -> Message {
    let signals = (0..500)
        .map(|n| {
            Signal::new(
                "ssh_bruteforce",
                Severity::High,
                Timestamp(1_763_600_000_000_000_000 + n),
            )
            .with_indicator(IndicatorType::Ip, format!("203.0.113.{}", n % 250))
            .with_attribute("attempts", n)
            .with_attribute("distinct_users", n % 17)
        })
        .collect();
    Message::Batch(Batch { seq: 1, signals })
}

fn codec(c: &mut Criterion) {
    let message = batch();
    let frame = encode_frame(&message, MAX_BATCH_FRAME).expect("encode");
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements(500));
    group.bench_function("encode_batch_500", |b| {
        b.iter(|| encode_frame(std::hint::black_box(&message), MAX_BATCH_FRAME))
    });
    group.bench_function("decode_batch_500", |b| {
        b.iter(|| decode_frame(std::hint::black_box(&frame), MAX_BATCH_FRAME))
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
