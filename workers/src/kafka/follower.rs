//! The follower: every node feeds its in-memory model (and so its live sessions' pushes) from the
//! relay's topic, in log order by the chain (`chain.rs`), reading from the Postgres log instead
//! whenever the chain does not continue within the gap bound or the broker is unreachable.
//!
//! The model's own tail keeps running beside it (this node's commits wake it at once; it polls
//! every `LICENSD_LOG_POLL_MS`): both apply through the model's apply lock, so an event is
//! applied once whichever source brings it first.

use super::chain::{Chain, Link, Offer};
use super::{count, set_source, wire, KafkaConfig, LogSource, APPLIED, GAP_READS, REJECTED};
use licensd_domain::AnyEvent;
use licensd_projections::{Chained, HotModel, HotRunner};
use licensd_store::{EventStore, RecordedEvent, Store};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::Message;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

pub struct Follower {
    config: KafkaConfig,
    hot: Arc<HotModel>,
    /// Reads the gaps (and everything while Kafka is unreachable) from the log.
    log: HotRunner,
    /// Where the relay's checkpoint is: a relay that stopped publishing while the broker still
    /// answers shows there as an old unpublished event.
    store: Store,
}

/// The follower's own state between messages.
struct Following {
    chain: Chain<RecordedEvent>,
    /// A message was dropped (the buffer was full): read the log at the next tick.
    read_now: bool,
    last_log_read: Instant,
}

impl Follower {
    pub fn new(config: KafkaConfig, hot: Arc<HotModel>, log: HotRunner, store: Store) -> Self {
        Self { config, hot, log, store }
    }

    fn consumer(&self) -> Result<StreamConsumer, KafkaError> {
        // A group of its own per node (every node needs every partition); a new group starts at
        // the end of the topic, as the log has everything before it.
        let ours = [
            ("group.id", self.config.group.as_str()),
            ("enable.auto.commit", "true"),
            ("auto.offset.reset", "latest"),
            ("enable.partition.eof", "false"),
            // A broker that holds an empty fetch for its whole wait (tansu does) delays every
            // event by up to this; librdkafka's default is 500 ms.
            ("fetch.wait.max.ms", "50"),
        ];
        let consumer: StreamConsumer = self.config.client(&ours).create()?;
        consumer.subscribe(&[self.config.topic.as_str()])?;
        Ok(consumer)
    }

    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        set_source(LogSource::PostgresFallback);
        let consumer = match self.consumer() {
            Ok(consumer) => Arc::new(consumer),
            Err(e) => {
                // Only a setting librdkafka refuses gets here (it connects lazily): the log
                // still feeds the model.
                tracing::error!(error = %e, "cannot create the Kafka consumer; following the Postgres log");
                let mut state = self.state();
                while !*stop.borrow() {
                    self.read_log(&mut state).await;
                    tokio::select! {
                        _ = tokio::time::sleep(self.config.fallback_poll) => {}
                        _ = stop.changed() => {}
                    }
                }
                return;
            }
        };
        let mut state = self.state();
        let mut probe = tokio::time::interval(self.config.probe);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A probe waits up to its interval for a broker that may not answer: it runs beside this
        // loop, so that the log reads (the fallback, the gaps) go on at their own pace meanwhile.
        let mut asking: Option<tokio::task::JoinHandle<Probe>> = None;
        let tick = (self.config.gap / 2).min(self.config.fallback_poll).max(Duration::from_millis(5));
        let mut ticks = tokio::time::interval(tick);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !*stop.borrow() {
            tokio::select! {
                _ = stop.changed() => {}
                received = consumer.recv() => match received {
                    Ok(message) => {
                        if let Some(payload) = message.payload() {
                            self.take(&mut state, payload);
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "Kafka consumer error"),
                },
                _ = probe.tick(), if asking.is_none() => asking = Some(self.ask(&consumer)),
                asked = async { asking.as_mut().expect("guarded by is_some").await }, if asking.is_some() => {
                    asking = None;
                    let was = super::source();
                    let now = match asked.unwrap_or(Probe::NotYet) {
                        Probe::Following if self.relay_stalled().await => LogSource::PostgresFallback,
                        Probe::Following => LogSource::Kafka,
                        Probe::TopicMissing => {
                            // Created here rather than by the relay alone: the relay may be down
                            // or on a node that has not started yet; every node racing is fine.
                            if let Err(e) = super::topic::ensure(&self.config).await {
                                tracing::warn!(error = %e, topic = %self.config.topic, "cannot create the Kafka topic");
                            }
                            LogSource::PostgresFallback
                        }
                        Probe::NotYet => LogSource::PostgresFallback,
                    };
                    set_source(now);
                    if was != now {
                        // Whatever was committed while switching is read from the log at once.
                        state.read_now = true;
                    }
                }
                _ = ticks.tick() => {
                    let gap = state.chain.waiting_since().is_some_and(|at| at.elapsed() >= self.config.gap);
                    let fallback = super::source() == LogSource::PostgresFallback
                        // Half a tick early rather than a tick late: a read ends just after a
                        // tick, so the next tick finds a little less than the poll elapsed.
                        && state.last_log_read.elapsed() + tick / 2 >= self.config.fallback_poll;
                    if gap {
                        count(&GAP_READS, 1);
                    }
                    if gap || fallback || state.read_now {
                        self.read_log(&mut state).await;
                    }
                }
            }
        }
        close(consumer).await;
    }

    fn state(&self) -> Following {
        Following { chain: Chain::new(self.config.buffer), read_now: false, last_log_read: Instant::now() }
    }

    /// One message from the topic.
    fn take(&self, state: &mut Following, payload: &[u8]) {
        let link = match wire::decode(payload) {
            Ok(link) => link,
            Err(e) => {
                count(&REJECTED, 1);
                tracing::warn!(error = %e, "ignoring a message on the Kafka topic");
                return;
            }
        };
        match state.chain.offer(self.hot.position(), link, Instant::now()) {
            Offer::Next(link) => self.apply_chain(state, link),
            Offer::Dropped => state.read_now = true,
            Offer::Stale | Offer::Held => {}
        }
    }

    /// Applies `link` and then every held message that follows it.
    fn apply_chain(&self, state: &mut Following, link: Link<RecordedEvent>) {
        let mut next = Some(link);
        while let Some(link) = next.take() {
            let event = &link.event;
            let decoded = match AnyEvent::decode(
                &event.stream_id,
                &event.event_type,
                event.schema_version,
                &event.payload,
            ) {
                Ok(decoded) => decoded,
                Err(e) => {
                    // The log read meets the same event and reports it as the model's failure.
                    count(&REJECTED, 1);
                    tracing::warn!(position = %event.position, error = %e, "cannot decode a relayed event; reading the log");
                    state.read_now = true;
                    return;
                }
            };
            match self.hot.apply_after(link.prev, event, decoded.as_ref()) {
                Chained::Applied => count(&APPLIED, 1),
                Chained::AlreadyApplied => {}
                // The log tail moved the model meanwhile: place the message against the new position.
                Chained::NotNext => {
                    if let Offer::Next(link) = state.chain.offer(self.hot.position(), link, Instant::now()) {
                        next = Some(link);
                        continue;
                    }
                }
            }
            next = state.chain.next(self.hot.position());
        }
    }

    /// Reads the log to its end, then applies what the buffer holds after it.
    async fn read_log(&self, state: &mut Following) {
        state.read_now = false;
        state.last_log_read = Instant::now();
        if let Err(e) = self.log.catch_up().await {
            tracing::warn!(error = %e, "cannot read the log; retrying");
            return;
        }
        if let Some(link) = state.chain.next(self.hot.position()) {
            self.apply_chain(state, link);
        }
    }

    /// Asks, on a blocking thread, whether the broker answers with the topic's partitions within
    /// the probe interval and this consumer has been assigned some, or answers that the topic
    /// does not exist.
    fn ask(&self, consumer: &Arc<StreamConsumer>) -> tokio::task::JoinHandle<Probe> {
        let (consumer, topic, timeout) = (consumer.clone(), self.config.topic.clone(), self.config.probe);
        tokio::task::spawn_blocking(move || {
            let Ok(metadata) = consumer.fetch_metadata(Some(&topic), timeout) else { return Probe::NotYet };
            let listed = metadata.topics().iter().find(|t| t.name() == topic);
            match listed {
                Some(t) if t.error().is_none() && !t.partitions().is_empty() => {}
                Some(t) if matches!(t.error(), Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)) => {
                    return Probe::TopicMissing
                }
                None => return Probe::TopicMissing,
                Some(_) => return Probe::NotYet,
            }
            match consumer.assignment() {
                Ok(assigned) if assigned.count() > 0 => Probe::Following,
                _ => Probe::NotYet,
            }
        })
    }
}

impl Follower {
    /// Whether the oldest event the relay has not published was committed longer than
    /// `relay_stall` ago: the relay is dead (its lease not yet expired), stuck or cut off from
    /// the broker while this node is not, and Kafka would bring nothing. A log that cannot be
    /// read counts as not stalled (the log reads would fail just the same).
    async fn relay_stalled(&self) -> bool {
        let Ok(checkpoint) = self.store.relay_checkpoint(&self.config.topic).await else { return false };
        let Ok(oldest) = self.store.read_all(checkpoint, 1).await else { return false };
        let Some(oldest) = oldest.first() else { return false };
        let age = chrono::Utc::now().signed_duration_since(oldest.recorded_at).to_std().unwrap_or_default();
        let stalled = age >= self.config.relay_stall;
        if stalled && super::source() == LogSource::Kafka {
            tracing::warn!(
                unpublished_for_ms = age.as_millis() as u64,
                "the Kafka relay has not published an event committed {age:?} ago; following the Postgres log until it does"
            );
        }
        stalled
    }
}

/// What the broker said about the topic.
enum Probe {
    /// It answers with the topic's partitions, and this consumer has some assigned.
    Following,
    /// It answers that there is no such topic.
    TopicMissing,
    /// It does not answer in time, or this consumer has no partitions yet.
    NotYet,
}

/// Leaves the group and closes the consumer off the runtime, waiting a bounded time: closing a
/// group consumer can hang when the broker does not answer (the process is stopping anyway).
async fn close(consumer: Arc<StreamConsumer>) {
    consumer.unsubscribe();
    let closing = tokio::task::spawn_blocking(move || drop(consumer));
    if tokio::time::timeout(Duration::from_secs(3), closing).await.is_err() {
        tracing::warn!("the Kafka consumer did not close in time; leaving it");
    }
}
