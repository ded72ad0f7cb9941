//! The relay: the events table is the outbox. The one node holding the `kafka-relay` lease reads
//! the log after its checkpoint in log order, publishes each event keyed by its stream with an
//! idempotent producer, and moves the checkpoint only once the broker acknowledged everything up
//! to it. A relay that dies between the acknowledgement and the checkpoint leaves its successor
//! to publish those events again: consumers skip them by position (see `chain.rs`).

use super::{count, wire, KafkaConfig, PUBLISHED, RELAY_LAG_MS};
use licensd_store::{EventStore, Store, StoreError};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("cannot read the log or move the checkpoint: {0}")]
    Store(#[from] StoreError),
    #[error("the broker did not acknowledge an event: {0}")]
    Kafka(#[from] KafkaError),
    #[error("the producer dropped a message before it was acknowledged")]
    Canceled,
}

pub struct Relay {
    store: Store,
    config: KafkaConfig,
    producer: FutureProducer,
}

impl Relay {
    /// The producer is idempotent (`enable.idempotence`, so `acks=all` and retries never
    /// duplicate or reorder within a partition); the pass-through options may tune it.
    pub fn new(store: Store, config: KafkaConfig) -> Result<Self, KafkaError> {
        // A message the broker has not acknowledged within 30 s fails its step, which starts
        // again from the checkpoint (librdkafka's default waits 5 minutes).
        let ours =
            [("enable.idempotence", "true"), ("acks", "all"), ("linger.ms", "2"), ("message.timeout.ms", "30000")];
        let producer = config.client(&ours).create()?;
        Ok(Self { store, config, producer })
    }

    /// Publishes one batch after the checkpoint; how many events that was.
    async fn step(&self) -> Result<usize, RelayError> {
        let topic = &self.config.topic;
        let checkpoint = self.store.relay_checkpoint(topic).await?;
        let events = self.store.read_all(checkpoint, self.config.relay_batch).await?;
        let Some(last) = events.last() else { return Ok(0) };
        let mut prev = checkpoint;
        let mut pending: VecDeque<DeliveryFuture> = VecDeque::with_capacity(events.len());
        for event in &events {
            let payload = wire::encode(event, prev);
            prev = event.position;
            loop {
                let record = FutureRecord::to(topic).key(event.stream_id.as_bytes()).payload(&payload);
                match self.producer.send_result(record) {
                    Ok(delivery) => {
                        pending.push_back(delivery);
                        break;
                    }
                    // The producer's queue is full: wait for the oldest message, then retry.
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => match pending.pop_front() {
                        Some(oldest) => acknowledged(oldest).await?,
                        None => tokio::time::sleep(Duration::from_millis(10)).await,
                    },
                    Err((e, _)) => return Err(e.into()),
                }
            }
        }
        for delivery in pending {
            acknowledged(delivery).await?;
        }
        self.store.move_relay_checkpoint(topic, last.position).await?;
        let lag = chrono::Utc::now().signed_duration_since(last.recorded_at).num_milliseconds().max(0);
        RELAY_LAG_MS.store(lag as u64, Ordering::Relaxed);
        count(&PUBLISHED, events.len() as u64);
        Ok(events.len())
    }

    /// Publishes until `stop`: again at once after progress, else after `relay_poll` or when
    /// this node commits (`wake`). A failed step is retried from the checkpoint.
    pub async fn run(self: std::sync::Arc<Self>, mut wake: watch::Receiver<u64>, mut stop: watch::Receiver<bool>) {
        tracing::info!(topic = %self.config.topic, "Kafka relay started");
        while !*stop.borrow() {
            // A step waiting for an unreachable broker is abandoned when the role is lost or the
            // node stops: its checkpoint has not moved, so nothing is lost.
            let stepped = tokio::select! {
                stepped = self.step() => stepped,
                _ = stop.changed() => break,
            };
            let wait = match stepped {
                Ok(n) if n > 0 => continue,
                Ok(_) => self.config.relay_poll,
                Err(e) => {
                    tracing::warn!(error = %e, "Kafka relay step failed; retrying from the checkpoint");
                    self.config.relay_poll.max(Duration::from_millis(500))
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = wake.changed() => {}
                _ = stop.changed() => {}
            }
        }
        // Whatever was sent is delivered or given up before the role is handed over.
        let relay = self.clone();
        let _ = tokio::task::spawn_blocking(move || relay.producer.flush(Duration::from_secs(5))).await;
        RELAY_LAG_MS.store(0, Ordering::Relaxed);
        tracing::info!("Kafka relay stopped");
    }
}

async fn acknowledged(delivery: DeliveryFuture) -> Result<(), RelayError> {
    match delivery.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(e.into()),
        Err(_) => Err(RelayError::Canceled),
    }
}
