//! The relay: the events table is the outbox. The one node holding the `kafka-relay` lease reads
//! the log after its checkpoint in log order, publishes each event keyed by its stream with an
//! idempotent producer, and moves the checkpoint only once the broker acknowledged everything up
//! to it. A relay that dies between the acknowledgement and the checkpoint leaves its successor
//! to publish those events again: consumers skip them by position (see `chain.rs`).
//!
//! A message that fails (timed out in a long outage, or refused) may leave the idempotent
//! producer unable to go on: librdkafka takes a timed-out message's outcome as unknown, and the
//! broker then refuses the producer's next sequence numbers ("Unknown broker error" for every
//! message, or a fatal error). So a failed step drops the producer and the next attempt, after a
//! bounded backoff, builds a new one (a new producer id) and publishes from the checkpoint again.

use super::{count, wire, KafkaConfig, PUBLISHED, RELAY_FAILING, RELAY_LAG_MS, RELAY_RESTARTS};
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
}

impl Relay {
    /// A producer is made (and dropped, nothing queued) here so that settings librdkafka
    /// refuses stop the start.
    pub fn new(store: Store, config: KafkaConfig) -> Result<Self, KafkaError> {
        let relay = Self { store, config };
        drop(relay.producer()?);
        Ok(relay)
    }

    /// The producer is idempotent (`enable.idempotence`, so `acks=all` and retries never
    /// duplicate or reorder within a partition); the pass-through options may tune it.
    fn producer(&self) -> Result<FutureProducer, KafkaError> {
        // A message the broker has not acknowledged within 30 s fails its step, which starts
        // again from the checkpoint (librdkafka's default waits 5 minutes).
        let ours =
            [("enable.idempotence", "true"), ("acks", "all"), ("linger.ms", "2"), ("message.timeout.ms", "30000")];
        self.config.client(&ours).create()
    }

    /// Publishes one batch after the checkpoint; how many events that was.
    async fn step(&self, producer: &FutureProducer) -> Result<usize, RelayError> {
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
                match producer.send_result(record) {
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
    /// this node commits (`wake`). A failed step is retried from the checkpoint after a backoff
    /// (doubling from `relay_poll`, at least 500 ms, up to `relay_backoff_max`), with a new
    /// producer when the failure was the broker's or the producer's.
    pub async fn run(self: std::sync::Arc<Self>, mut wake: watch::Receiver<u64>, mut stop: watch::Receiver<bool>) {
        tracing::info!(topic = %self.config.topic, "Kafka relay started");
        let mut producer: Option<FutureProducer> = None;
        let mut failures = 0u32;
        while !*stop.borrow() {
            let current = match producer.take() {
                Some(current) => current,
                None => match self.producer() {
                    Ok(fresh) => fresh,
                    Err(e) => {
                        failures = self.failed(failures, &RelayError::Kafka(e));
                        self.back_off(failures, &mut stop).await;
                        continue;
                    }
                },
            };
            // A step waiting for an unreachable broker is abandoned when the role is lost or the
            // node stops: its checkpoint has not moved, so nothing is lost.
            let stepped = tokio::select! {
                stepped = self.step(&current) => Some(stepped),
                _ = stop.changed() => None,
            };
            let Some(stepped) = stepped else {
                producer = Some(current);
                break;
            };
            match stepped {
                Ok(n) => {
                    producer = Some(current);
                    if failures > 0 {
                        tracing::info!(failures, "Kafka relay publishes again");
                        failures = 0;
                        RELAY_FAILING.store(0, Ordering::Relaxed);
                    }
                    if n > 0 {
                        continue;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(self.config.relay_poll) => {}
                        _ = wake.changed() => {}
                        _ = stop.changed() => {}
                    }
                }
                Err(e) => {
                    failures = self.failed(failures, &e);
                    let fatal = current.client().fatal_error();
                    if matches!(e, RelayError::Store(_)) && fatal.is_none() {
                        // The broker was not at fault: the producer goes on.
                        producer = Some(current);
                    } else {
                        if let Some((code, reason)) = fatal {
                            tracing::debug!(?code, %reason, "the Kafka relay's producer has a fatal error");
                        }
                        count(&RELAY_RESTARTS, 1);
                        discard(current).await;
                    }
                    self.back_off(failures, &mut stop).await;
                }
            }
        }
        // Whatever was sent is delivered or given up before the role is handed over.
        if let Some(producer) = producer {
            let _ = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(5))).await;
        }
        RELAY_LAG_MS.store(0, Ordering::Relaxed);
        RELAY_FAILING.store(0, Ordering::Relaxed);
        tracing::info!("Kafka relay stopped");
    }

    /// Counts one more failed attempt; the first of a run is logged as a warning, the others
    /// only at debug level (an outage fails every attempt).
    fn failed(&self, failures: u32, error: &RelayError) -> u32 {
        if failures == 0 {
            tracing::warn!(%error, "Kafka relay cannot publish; retrying from the checkpoint with a new producer");
            RELAY_FAILING.store(1, Ordering::Relaxed);
        } else {
            tracing::debug!(%error, failures, "Kafka relay attempt failed");
        }
        failures.saturating_add(1)
    }

    async fn back_off(&self, failures: u32, stop: &mut watch::Receiver<bool>) {
        tokio::select! {
            _ = tokio::time::sleep(backoff(self.config.relay_poll, self.config.relay_backoff_max, failures)) => {}
            _ = stop.changed() => {}
        }
    }
}

/// The wait after the `failures`th failed attempt in a row: from `poll` (at least 500 ms),
/// doubling, never above `max`.
fn backoff(poll: Duration, max: Duration, failures: u32) -> Duration {
    let first = poll.max(Duration::from_millis(500));
    first.saturating_mul(1 << failures.saturating_sub(1).min(16)).min(max)
}

/// Dropping a producer purges its queue and waits up to 500 ms for the results: off the runtime.
async fn discard(producer: FutureProducer) {
    let _ = tokio::task::spawn_blocking(move || drop(producer)).await;
}

async fn acknowledged(delivery: DeliveryFuture) -> Result<(), RelayError> {
    match delivery.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(e.into()),
        Err(_) => Err(RelayError::Canceled),
    }
}

#[cfg(test)]
mod tests {
    use super::backoff;
    use std::time::Duration;

    #[test]
    fn the_backoff_doubles_from_the_poll_and_stops_at_its_bound() {
        let (ms, max) = (Duration::from_millis, Duration::from_secs(5));
        assert_eq!(backoff(ms(50), max, 1), ms(500), "at least 500 ms");
        assert_eq!(backoff(ms(800), max, 1), ms(800));
        assert_eq!(backoff(ms(800), max, 2), ms(1600));
        assert_eq!(backoff(ms(800), max, 4), max);
        assert_eq!(backoff(ms(800), max, u32::MAX), max, "no overflow");
    }
}
