//! The collector's ingest rules, played by a raw client holding a real agent certificate:
//! exactly-once by signal id, ids of other agents refused, invalid signals refused without
//! harming the store, oversized batches refused on their own stream.

use vedetta_collector::store::{SignalFilter, Store};
use vedetta_common::protocol::{Batch, ErrorCode, Message};
use vedetta_common::{AttributeValue, Severity, Signal, Timestamp};
use vedetta_e2e::raw::{connect_as, exchange, runtime};
use vedetta_e2e::{Agent, Collector, collector_and_agent, test_signals};

const KIND: &str = "e2e_test";

fn ack_of(answer: Option<Message>) -> vedetta_common::protocol::Ack {
    match answer {
        Some(Message::Ack(ack)) => ack,
        other => panic!("expected an ack, got {other:?}"),
    }
}

#[test]
fn resent_batches_are_acknowledged_as_duplicates_and_foreign_ids_are_refused() {
    let mut collector = Collector::init();
    collector.add_org("acme");
    collector.add_org("rival");
    collector.start();
    let first = Agent::enrolled(&collector, "acme", "");
    let second = Agent::enrolled(&collector, "rival", "");
    let signals = test_signals(50, KIND);
    runtime().block_on(async {
        let connection = connect_as(&collector, &first).await;
        let batch = Message::Batch(Batch {
            seq: 1,
            signals: signals.clone(),
        });
        let ack = ack_of(exchange(&connection, &batch).await);
        assert_eq!(
            (ack.seq, ack.accepted, ack.duplicates, ack.rejected),
            (1, 50, 0, 0)
        );
        let again = ack_of(exchange(&connection, &batch).await);
        assert_eq!(
            (again.accepted, again.duplicates, again.rejected),
            (0, 50, 0)
        );

        // Another org's agent reusing those ids cannot shadow or claim them.
        let intruder = connect_as(&collector, &second).await;
        let stolen = Message::Batch(Batch {
            seq: 1,
            signals: signals[..10].to_vec(),
        });
        let ack = ack_of(exchange(&intruder, &stolen).await);
        assert_eq!((ack.accepted, ack.duplicates, ack.rejected), (0, 0, 10));
    });
    let stored = collector.signals_of_kind(KIND);
    assert_eq!(stored.len(), 50);
    assert!(stored.iter().all(|s| s.org == "acme"));
    collector.stop();
}

#[test]
fn invalid_signals_are_refused_and_every_query_keeps_working() {
    let (mut collector, agent) = collector_and_agent("");
    let mut not_a_number = Signal::new(KIND, Severity::High, Timestamp::now());
    not_a_number
        .attributes
        .insert("rate".into(), AttributeValue::Float(f64::NAN));
    let mut backwards = Signal::new(KIND, Severity::High, Timestamp(10));
    backwards.first_seen = Timestamp(20);
    let good = test_signals(3, KIND);
    runtime().block_on(async {
        let connection = connect_as(&collector, &agent).await;
        let batch = Message::Batch(Batch {
            seq: 1,
            signals: [good.clone(), vec![not_a_number, backwards]].concat(),
        });
        let ack = ack_of(exchange(&connection, &batch).await);
        assert_eq!((ack.accepted, ack.rejected), (3, 2));
    });
    let stored = collector
        .store()
        .signals(&SignalFilter {
            limit: 100,
            ..SignalFilter::default()
        })
        .expect("every stored row reads back");
    assert_eq!(
        stored
            .items
            .iter()
            .filter(|s| s.signal.kind == KIND)
            .count(),
        3
    );
    collector.stop();
}

#[test]
fn a_batch_over_the_collector_limit_is_refused_on_its_stream_and_agents_adapt() {
    let mut collector = Collector::init();
    collector.add_org("acme");
    // This collector accepts at most 10 signals per batch.
    let config_path = collector.data_dir.join("collector.toml");
    let config = std::fs::read_to_string(&config_path).expect("config");
    std::fs::write(
        &config_path,
        config.replace("max_batch_signals = 5000", "max_batch_signals = 10"),
    )
    .expect("write config");
    collector.start();
    let hostile = Agent::enrolled(&collector, "acme", "");
    runtime().block_on(async {
        let connection = connect_as(&collector, &hostile).await;
        let big = Message::Batch(Batch {
            seq: 1,
            signals: test_signals(11, "too_big"),
        });
        match exchange(&connection, &big).await {
            Some(Message::Error(refusal)) => {
                assert_eq!(refusal.code, ErrorCode::BatchRefused);
                assert!(
                    refusal.message.contains("limit of 10"),
                    "{}",
                    refusal.message
                );
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        // The connection is still good for a batch that fits.
        let small = Message::Batch(Batch {
            seq: 2,
            signals: test_signals(10, "fits"),
        });
        assert_eq!(ack_of(exchange(&connection, &small).await).accepted, 10);
    });
    // A real agent configured for 500 per batch learns the limit at hello.
    let mut agent = Agent::enrolled(&collector, "acme", "");
    agent.start();
    let signals = test_signals(95, KIND);
    agent.emit(&signals).expect("emit");
    vedetta_e2e::wait_until("all signals stored", || {
        collector.signals_of_kind(KIND).len() == 95
    });
    assert!(agent.stop());
    collector.stop();
}
