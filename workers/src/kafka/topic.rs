//! Creates the relay's topic when the broker does not have it, so that a fresh broker (or one
//! that does not create topics on first use) needs no manual step. Every node may do it at the
//! same moment: the loser's `TopicAlreadyExists` means the topic is there, which is all it wanted.

use super::KafkaConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// Creates `config.topic` with `config.partitions` partitions and `config.replication` replicas
/// (-1: the broker's `default.replication.factor`); Ok when it exists afterwards, whoever made it.
pub async fn ensure(config: &KafkaConfig) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = config.client(&[]).create()?;
    let options = AdminOptions::new().operation_timeout(Some(config.probe));
    let topic = NewTopic::new(&config.topic, config.partitions, TopicReplication::Fixed(config.replication));
    let results = admin.create_topics(&[topic], &options).await?;
    match results.as_slice() {
        [Ok(_)] => {
            tracing::info!(topic = %config.topic, partitions = config.partitions, "created the Kafka topic");
            Ok(())
        }
        [Err((_, RDKafkaErrorCode::TopicAlreadyExists))] => Ok(()),
        [Err((_, code))] => Err(KafkaError::AdminOp(*code)),
        _ => Err(KafkaError::AdminOpCreation("the broker answered for no topic".to_string())),
    }
}
