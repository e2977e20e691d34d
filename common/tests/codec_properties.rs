//! Property tests of the codec: round trips of arbitrary messages, and hostile bytes that
//! must never panic nor make the decoder allocate beyond its limit.
//!
//! This file installs a counting global allocator (the only unsafe code in the test suite),
//! and keeps to a single `#[test]` so that no other test thread disturbs the count.
#![allow(unsafe_code)]

use proptest::prelude::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use vedetta_common::codec::{self, DecodeError, MAX_BATCH_FRAME};
use vedetta_common::protocol::{Ack, Advisories, Advisory, Batch, Heartbeat, Hello, Message};
use vedetta_common::{
    AttributeValue, Indicator, IndicatorType, Severity, Signal, SignalId, Timestamp,
};

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the counters are
// plain atomics and never influence the allocation itself.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        // SAFETY: same layout contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `work` and returns how many bytes above the starting point were live at the peak.
fn peak_growth<T>(work: impl FnOnce() -> T) -> (T, usize) {
    let start = LIVE.load(Ordering::Relaxed);
    PEAK.store(start, Ordering::Relaxed);
    let result = work();
    (result, PEAK.load(Ordering::Relaxed).saturating_sub(start))
}

fn text() -> impl Strategy<Value = String> {
    "[a-z0-9 ._:/-]{0,40}"
}

fn signal() -> impl Strategy<Value = Signal> {
    let indicator = (prop::sample::select(IndicatorType::ALL.to_vec()), text())
        .prop_map(|(kind, value)| Indicator { kind, value });
    let attribute = prop_oneof![
        any::<i64>().prop_map(AttributeValue::Int),
        any::<bool>().prop_map(AttributeValue::Bool),
        (-1e12f64..1e12).prop_map(AttributeValue::Float),
        prop::sample::select(vec![
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -0.0,
            f64::MIN_POSITIVE
        ])
        .prop_map(AttributeValue::Float),
        text().prop_map(AttributeValue::Text),
    ];
    (
        any::<u128>(),
        "[a-z][a-z0-9_]{0,30}",
        prop::sample::select(Severity::ALL.to_vec()),
        any::<i64>(),
        any::<u32>(),
        1u64..u64::MAX,
        prop::collection::vec(indicator, 0..5),
        prop::collection::btree_map("[a-z_]{1,12}", attribute, 0..5),
        prop::option::of(text()),
        prop::option::of(text()),
    )
        .prop_map(
            |(id, kind, severity, first, span, count, indicators, attributes, mitre, host)| {
                Signal {
                    id: SignalId(uuid::Uuid::from_u128(id)),
                    kind,
                    severity,
                    first_seen: Timestamp(first),
                    last_seen: Timestamp(first.saturating_add(i64::from(span))),
                    count,
                    indicators,
                    attributes: attributes.into_iter().collect::<BTreeMap<_, _>>(),
                    mitre,
                    host,
                }
            },
        )
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (any::<u64>(), prop::collection::vec(signal(), 0..8))
            .prop_map(|(seq, signals)| Message::Batch(Batch { seq, signals })),
        (any::<u64>(), any::<u32>(), any::<u32>(), any::<u32>()).prop_map(
            |(seq, accepted, duplicates, rejected)| Message::Ack(Ack {
                seq,
                accepted,
                duplicates,
                rejected
            })
        ),
        (text(), any::<u64>()).prop_map(|(agent_version, last_advisory_seq)| Message::Hello(
            Hello {
                agent_version,
                last_advisory_seq
            }
        )),
        (
            any::<u64>(),
            any::<u64>(),
            prop::collection::vec((text(), any::<u64>()), 0..4)
        )
            .prop_map(|(uptime_s, spool_depth, source_errors)| Message::Heartbeat(
                Heartbeat {
                    agent_version: "0.1.0".into(),
                    uptime_s,
                    spool_depth,
                    drops_total: spool_depth / 2,
                    source_errors,
                    sent_at: Timestamp(1),
                    inventory: (uptime_s % 2 == 0).then(|| {
                        vedetta_common::protocol::HostInventory {
                            os: "Debian GNU/Linux 12".into(),
                            kernel: "6.1.0".into(),
                            arch: "x86_64".into(),
                            cpus: 2,
                            memory_mib: spool_depth % 65_536,
                        }
                    }),
                }
            )),
        prop::collection::vec(
            (
                any::<u64>(),
                text(),
                prop::sample::select(Severity::ALL.to_vec()),
                any::<bool>()
            ),
            0..6
        )
        .prop_map(|items| Message::Advisories(Advisories {
            advisories: items
                .into_iter()
                .map(|(seq, description, severity, withdrawn)| Advisory {
                    seq,
                    id: format!("ADV-{seq}"),
                    indicator: Indicator::new(IndicatorType::Ip, "203.0.113.7"),
                    severity,
                    description,
                    published_at: Timestamp(1),
                    expires_at: Timestamp(2),
                    withdrawn,
                })
                .collect(),
        })),
    ]
}

/// A decode of an input of `len` bytes may use the input-proportional memory a legitimate
/// message of that size needs, plus serde's capped preallocation — never what a length
/// field merely announces.
fn allowed_growth(len: usize) -> usize {
    2 * 1024 * 1024 + 256 * len
}

#[test]
fn codec_properties() {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 512,
        ..ProptestConfig::default()
    });

    // Round trip through the wire format and through JSON (signals only).
    runner
        .run(&message(), |message| {
            let frame = codec::encode_frame(&message, MAX_BATCH_FRAME).expect("encode");
            let (back, used) = codec::decode_frame(&frame, MAX_BATCH_FRAME).expect("decode");
            prop_assert_eq!(used, frame.len());
            // NaN is not equal to itself: compare the encodings instead.
            let again = codec::encode_frame(&back, MAX_BATCH_FRAME).expect("re-encode");
            prop_assert_eq!(&again, &frame);
            if let Message::Batch(batch) = &message {
                for signal in &batch.signals {
                    let finite = signal.attributes.values().all(|value| match value {
                        AttributeValue::Float(number) => number.is_finite(),
                        _ => true,
                    });
                    // Validation refuses exactly what JSON could not carry back.
                    prop_assert_eq!(signal.validate().is_ok(), finite);
                    if !finite {
                        continue;
                    }
                    let json = serde_json::to_string(signal).expect("json");
                    let parsed: Signal = serde_json::from_str(&json).expect("parse json");
                    prop_assert_eq!(&parsed, signal);
                }
            }
            Ok(())
        })
        .expect("round trips");

    // Arbitrary bytes, with and without a plausible header: never a panic, bounded memory.
    runner
        .run(&prop::collection::vec(any::<u8>(), 0..4096), |bytes| {
            let (_, grown) = peak_growth(|| codec::decode_frame(&bytes, MAX_BATCH_FRAME));
            prop_assert!(
                grown <= allowed_growth(bytes.len()),
                "grew {grown} on {} bytes",
                bytes.len()
            );
            let mut framed = ((bytes.len() + 2) as u32).to_be_bytes().to_vec();
            framed.extend_from_slice(&1u16.to_be_bytes());
            framed.extend_from_slice(&bytes);
            let (_, grown) = peak_growth(|| codec::decode_frame(&framed, MAX_BATCH_FRAME));
            prop_assert!(
                grown <= allowed_growth(framed.len()),
                "grew {grown} on {} bytes",
                framed.len()
            );
            Ok(())
        })
        .expect("arbitrary bytes");

    // Valid frames, mutated: truncated, bytes flipped, lengths rewritten.
    runner
        .run(
            &(
                message(),
                any::<prop::sample::Index>(),
                any::<u8>(),
                any::<u32>(),
            ),
            |(message, at, byte, length)| {
                let frame = codec::encode_frame(&message, MAX_BATCH_FRAME).expect("encode");
                let cut = at.index(frame.len());
                prop_assert!(
                    codec::decode_frame(&frame[..cut], MAX_BATCH_FRAME)
                        .expect_err("a strict prefix")
                        .is_incomplete()
                );
                let mut flipped = frame.clone();
                flipped[cut] ^= byte | 1;
                let (_, grown) = peak_growth(|| codec::decode_frame(&flipped, MAX_BATCH_FRAME));
                prop_assert!(grown <= allowed_growth(frame.len()));
                let mut relabelled = frame.clone();
                relabelled[..4].copy_from_slice(&length.to_be_bytes());
                let (result, grown) =
                    peak_growth(|| codec::decode_frame(&relabelled, MAX_BATCH_FRAME));
                prop_assert!(grown <= allowed_growth(frame.len()));
                if length as usize > MAX_BATCH_FRAME {
                    let is_too_large = matches!(result, Err(DecodeError::TooLarge { .. }));
                    prop_assert!(is_too_large);
                }
                Ok(())
            },
        )
        .expect("mutated frames");

    // The stream reader, on arbitrary bytes: never a panic, memory bounded by the input.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runner
        .run(&prop::collection::vec(any::<u8>(), 0..4096), |bytes| {
            let (_, grown) = peak_growth(|| {
                runtime.block_on(async {
                    let mut reader = &bytes[..];
                    while let Ok(Some(_)) = codec::read_frame(&mut reader, MAX_BATCH_FRAME).await {}
                })
            });
            prop_assert!(
                grown <= allowed_growth(bytes.len()),
                "grew {grown} on {} bytes",
                bytes.len()
            );
            Ok(())
        })
        .expect("stream reader");

    // A header announcing the largest frame, then a few bytes: memory follows the bytes.
    let mut stalled = (MAX_BATCH_FRAME as u32).to_be_bytes().to_vec();
    stalled.extend_from_slice(&[1, 0, 3]);
    let (result, grown) = peak_growth(|| {
        runtime.block_on(async { codec::read_frame(&mut &stalled[..], MAX_BATCH_FRAME).await })
    });
    assert!(
        matches!(result, Err(codec::ReadError::Truncated)),
        "{result:?}"
    );
    assert!(grown <= 256 * 1024, "a stalled frame held {grown} bytes");

    // More signals than a batch may carry, each tiny: refused while decoding.
    let too_many = Message::Batch(Batch {
        seq: 1,
        signals: vec![
            Signal::new("a", Severity::Info, Timestamp(0));
            vedetta_common::protocol::MAX_BATCH_SIGNALS + 1
        ],
    });
    let frame = codec::encode_frame(&too_many, MAX_BATCH_FRAME).expect("encode");
    let (result, grown) = peak_growth(|| codec::decode_frame(&frame, MAX_BATCH_FRAME));
    assert!(
        matches!(&result, Err(DecodeError::Malformed(m)) if m.contains("more than")),
        "{result:?}"
    );
    assert!(grown <= allowed_growth(frame.len()), "grew {grown}");

    // A batch whose vector announces u64::MAX signals, inside a small frame.
    let mut payload = 1u16.to_be_bytes().to_vec();
    payload.push(3); // Message::Batch
    payload.push(7); // seq
    payload.push(0xfd); // varint: a u64 follows
    payload.extend_from_slice(&u64::MAX.to_le_bytes());
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&payload);
    let (result, grown) = peak_growth(|| codec::decode_frame(&frame, MAX_BATCH_FRAME));
    assert!(
        matches!(result, Err(DecodeError::Malformed(_))),
        "{result:?}"
    );
    assert!(grown <= allowed_growth(frame.len()), "grew {grown}");
}
