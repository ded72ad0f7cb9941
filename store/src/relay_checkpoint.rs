//! The Kafka relay's checkpoint: the last log position the broker acknowledged, per topic.
//! Postgres only (Kafka needs several nodes, and several nodes need Postgres).

use crate::{Position, SqlValue, Statement, Store, StoreError};

/// Moves the checkpoint only forward: a relay that lost its lease and still finishes a step
/// cannot move it back over what its successor acknowledged.
const MOVE: &str = "INSERT INTO kafka_relay (topic, tx, seq, moved_at)
     VALUES ($1, $2, $3, CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT))
     ON CONFLICT (topic) DO UPDATE SET tx = excluded.tx, seq = excluded.seq, moved_at = excluded.moved_at
     WHERE (kafka_relay.tx, kafka_relay.seq) < (excluded.tx, excluded.seq)";

impl Store {
    /// The relay's checkpoint for `topic`; the start of the log when it has none.
    pub async fn relay_checkpoint(&self, topic: &str) -> Result<Position, StoreError> {
        self.require_postgres()?;
        let rows = self
            .query_rows("SELECT CAST(tx AS TEXT), CAST(seq AS TEXT) FROM kafka_relay WHERE topic = $1", &[topic.into()])
            .await?;
        let Some(row) = rows.into_iter().next() else { return Ok(Position::START) };
        let mut cols = row.into_iter().map(|c| c.unwrap_or_default().parse::<i64>());
        match (cols.next(), cols.next()) {
            (Some(Ok(tx)), Some(Ok(seq))) => Ok(Position { tx, seq }),
            _ => Err(StoreError::Unavailable("the Kafka relay's checkpoint row is malformed".into())),
        }
    }

    /// Moves the relay's checkpoint for `topic` to `to` if that is further.
    pub async fn move_relay_checkpoint(&self, topic: &str, to: Position) -> Result<(), StoreError> {
        self.require_postgres()?;
        let statement = Statement::new(MOVE, [topic.into(), SqlValue::from(to.tx), SqlValue::from(to.seq)]);
        // One statement in its own implicit transaction: the relay's node never holds a
        // transaction open across a round trip here, where a freeze would hold back every
        // node's log reads (the cluster's oldest open transaction bounds them).
        self.execute_single(&statement).await.map(drop)
    }

    fn require_postgres(&self) -> Result<(), StoreError> {
        match self.backend() {
            "postgres" => Ok(()),
            other => Err(StoreError::Config(format!("the Kafka relay needs Postgres, not {other}"))),
        }
    }
}
