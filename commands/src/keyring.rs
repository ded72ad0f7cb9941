//! The master keyring: which keys open what, and the re-sealing a rotation does.
//!
//! The operator supplies one key (the newest). Each rotation adds a row to `master_keyring`:
//! row `N` is sealed under key `N` and holds every older key (0 .. N-1). Starting with key `N`
//! opens row `N` and so the whole ring; an older key opens no row newer than itself, so once the
//! mutable tables are re-sealed it opens none of them either. Values inside immutable events
//! keep naming the key they were sealed under until the rotation records them sealed anew (see
//! [`crate::reseal`]); then [`forget_older_keys`] rewrites row `N` without the older keys, and
//! the ring opens nothing they sealed. The row keeps key 0's bytes as the root of derived digests
//! (they sit in stream ids; see [`crate::MasterKey`]) and the token root, neither of which opens
//! a sealed value.

use crate::crypto::RingKey;
use crate::{CommandError, MasterKey};
use licensd_domain::Sealed;
use licensd_store::{SqlValue, Statement, Store};
use serde::{Deserialize, Serialize};

fn row_purpose(id: u32) -> String {
    format!("master-keyring:{id}")
}

#[derive(Serialize, Deserialize)]
struct RingRow {
    /// Every key older than the row's own that still opens values: `(id, hex)`.
    keys: Vec<(u32, String)>,
    /// Key 0's bytes (hex), the root of derived digests; rows written before keys could be
    /// forgotten have it among `keys` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    root: Option<String>,
    /// The token root (hex); absent: the derivation root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tokens: Option<String>,
}

fn raw_key(row_id: u32, what: &str, hex_key: &str) -> Result<[u8; 32], CommandError> {
    hex::decode(hex_key)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| CommandError::Crypto(format!("keyring row {row_id}: {what} is not 32 bytes")))
}

/// Row `id` holding `older`, sealed under `sealing` (which is key `id`).
fn row_text(sealing: &MasterKey, id: u32, older: &[RingKey]) -> Result<String, CommandError> {
    let row = RingRow {
        keys: older.iter().map(|k| (k.id, hex::encode(k.raw))).collect(),
        root: Some(hex::encode(sealing.root_raw())),
        tokens: Some(hex::encode(sealing.tokens_raw())),
    };
    let text = serde_json::to_string(&row).map_err(|e| CommandError::Crypto(e.to_string()))?;
    Ok(sealing.single(id).seal(text.as_bytes(), &row_purpose(id)).0)
}

/// Whether the keyring table exists yet (it does not before migrations on an older database).
async fn table_exists(store: &Store) -> Result<bool, CommandError> {
    let probe = match store.backend() {
        "postgres" => "SELECT CAST(to_regclass('master_keyring') AS TEXT)",
        _ => "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'master_keyring'",
    };
    Ok(store.query_text(probe, &[]).await?.into_iter().flatten().next().is_some())
}

/// The newest keyring row: its key id and sealed text.
async fn newest_row(store: &Store) -> Result<Option<(u32, String)>, CommandError> {
    if !table_exists(store).await? {
        return Ok(None);
    }
    let rows = store
        .query_rows("SELECT CAST(key_id AS TEXT), sealed FROM master_keyring ORDER BY key_id DESC LIMIT 1", &[])
        .await?;
    let Some([Some(id), Some(sealed)]) = rows.first().map(Vec::as_slice) else {
        return Ok(None);
    };
    let id = id.parse().map_err(|_| CommandError::Crypto(format!("keyring row id {id:?}")))?;
    Ok(Some((id, sealed.clone())))
}

/// The id of the newest key this database was rotated to (0: never rotated).
pub async fn newest_key_id(store: &Store) -> Result<u32, CommandError> {
    Ok(newest_row(store).await?.map_or(0, |(id, _)| id))
}

/// The ring the given key opens: the key alone on a database never rotated, else the key as
/// the newest key with every older one. `None` when it does not open the newest keyring row
/// (an older key, or a key of another deployment).
pub async fn open_ring(store: &Store, given: &MasterKey) -> Result<Option<MasterKey>, CommandError> {
    let Some((id, sealed)) = newest_row(store).await? else {
        return Ok(Some(given.single(0)));
    };
    let Ok(text) = given.single(id).open_string(&Sealed(sealed), &row_purpose(id)) else {
        return Ok(None);
    };
    let row: RingRow =
        serde_json::from_str(&text).map_err(|e| CommandError::Crypto(format!("keyring row {id}: {e}")))?;
    let mut older = Vec::with_capacity(row.keys.len());
    for (key_id, hex_key) in row.keys {
        older.push(RingKey::new(key_id, raw_key(id, &format!("key {key_id}"), &hex_key)?));
    }
    let root = row.root.map(|r| raw_key(id, "the derivation root", &r)).transpose()?;
    let tokens = row.tokens.map(|t| raw_key(id, "the token root", &t)).transpose()?;
    MasterKey::ring(given.current_raw(), id, older, root, tokens).map(Some)
}

/// Makes `new` the sealing key after every key of `ring`: writes keyring row `ring.key_id() + 1`
/// (sealed under `new`, holding all of `ring`) and returns the grown ring. With `sign_out`,
/// token keys derive from `new` from then on.
pub async fn add_key(
    store: &Store,
    ring: &MasterKey,
    new: &MasterKey,
    sign_out: bool,
) -> Result<MasterKey, CommandError> {
    let id = ring.key_id() + 1;
    let older: Vec<RingKey> = ring.keys().cloned().collect();
    let tokens = if sign_out { new.current_raw() } else { ring.tokens_raw() };
    let grown = MasterKey::ring(new.current_raw(), id, older.clone(), Some(ring.root_raw()), Some(tokens))?;
    let now = chrono::Utc::now().timestamp_millis();
    let insert = Statement::new(
        "INSERT INTO master_keyring (key_id, sealed, created_at) VALUES ($1, $2, $3)",
        [i64::from(id).into(), row_text(&grown, id, &older)?.into(), now.into()],
    );
    store.execute(&[insert]).await?;
    Ok(grown)
}

/// Rewrites the newest keyring row without the older keys, once nothing the server reads is
/// sealed under them: the ring then opens only what the sealing key sealed. Repeating it
/// changes nothing.
pub async fn forget_older_keys(store: &Store, ring: &MasterKey) -> Result<MasterKey, CommandError> {
    let id = ring.key_id();
    if id == 0 {
        return Ok(ring.clone()); // never rotated: no keyring row, no older key
    }
    let update = Statement::new(
        "UPDATE master_keyring SET sealed = $1 WHERE key_id = $2",
        [row_text(ring, id, &[])?.into(), i64::from(id).into()],
    );
    store.execute(&[update]).await?;
    Ok(ring.without_older_keys())
}

/// A table column holding sealed values in rows a rotation may rewrite.
pub struct SealedColumn {
    pub name: &'static str,
    /// At most `$2` rows whose value does not start with `$1` (the newest key's prefix), as
    /// (key 1, key 2, sealed value), in a stable order.
    pub select: &'static str,
    /// Sets the value to `$1` where the keys are `$2`, `$3` and the value is still `$4` (a row
    /// changed meanwhile is left for the next pass).
    pub update: &'static str,
    /// The purpose the value was sealed for, from the row's two keys.
    pub purpose: fn(&str, &str) -> String,
}

/// The PII vault.
pub const PII_VALUES: SealedColumn = SealedColumn {
    name: "pii",
    select: "SELECT subject, field, value FROM pii WHERE value NOT LIKE $1 ORDER BY subject, field LIMIT $2",
    update: "UPDATE pii SET value = $1 WHERE subject = $2 AND field = $3 AND value = $4",
    purpose: crate::pii::purpose,
};

/// Re-seals every value of `column` under the ring's sealing key, `batch` rows per
/// transaction, calling `progress` with the running count after each. Rows already under that
/// key are skipped, so an interrupted run is finished by running it again.
pub async fn reseal(
    store: &Store,
    ring: &MasterKey,
    column: &SealedColumn,
    batch: usize,
    mut progress: impl FnMut(u64),
) -> Result<u64, CommandError> {
    let like = format!("{}%", ring.sealing_prefix());
    let limit = i64::try_from(batch.max(1)).unwrap_or(i64::MAX);
    let mut done = 0u64;
    loop {
        let rows = store.query_rows(column.select, &[like.clone().into(), limit.into()]).await?;
        let mut updates = Vec::with_capacity(rows.len());
        for row in &rows {
            let [Some(a), Some(b), Some(value)] = row.as_slice() else { continue };
            if MasterKey::sealed_key_id(value).is_none() {
                continue; // not sealed at all (answers kept before sealing existed)
            }
            let purpose = (column.purpose)(a, b);
            let plain = ring.open(&Sealed(value.clone()), &purpose).map_err(|_| {
                CommandError::Crypto(format!("{}: a value of {a:?} opens under no key of the ring", column.name))
            })?;
            let sealed = ring.seal(&plain, &purpose);
            updates.push(Statement::new(
                column.update,
                [SqlValue::from(sealed.0), a.clone().into(), b.clone().into(), value.clone().into()],
            ));
        }
        if updates.is_empty() {
            return Ok(done);
        }
        done += store.execute(&updates).await?;
        progress(done);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PiiVault;
    use licensd_store::testing::on_both_backends;

    fn key(byte: &str) -> MasterKey {
        MasterKey::parse(&byte.repeat(32)).unwrap()
    }

    async fn each_key_opens_rings_up_to_itself_and_reseal_moves_every_row(store: Store) {
        let (k0, k1, k2) = (key("11"), key("22"), key("33"));
        let vault = |key: &MasterKey| PiiVault::new(store.clone(), key.clone());
        vault(&k0).put("s1", "email", "a@example.com").await.unwrap();
        vault(&k0).put("s2", "email", "b@example.com").await.unwrap();
        let ring0 = open_ring(&store, &k0).await.unwrap().expect("a database never rotated");
        assert_eq!((ring0.key_id(), newest_key_id(&store).await.unwrap()), (0, 0));

        add_key(&store, &ring0, &k1, false).await.unwrap();
        assert!(open_ring(&store, &k0).await.unwrap().is_none(), "the old key no longer opens the ring");
        let ring1 = open_ring(&store, &k1).await.unwrap().expect("the new key opens it");
        assert_eq!(ring1.key_id(), 1);
        assert_eq!(vault(&ring1).get("s1", "email").await.unwrap().as_deref(), Some("a@example.com"), "half-rotated");

        let mut progress = Vec::new();
        assert_eq!(reseal(&store, &ring1, &PII_VALUES, 1, |n| progress.push(n)).await.unwrap(), 2);
        assert_eq!(progress, [1, 2], "one row per transaction");
        assert_eq!(reseal(&store, &ring1, &PII_VALUES, 1, |_| {}).await.unwrap(), 0, "a rerun finds nothing left");
        assert_eq!(vault(&ring1).get("s2", "email").await.unwrap().as_deref(), Some("b@example.com"));
        assert!(vault(&k0).get("s1", "email").await.is_err(), "the old key alone opens no re-sealed row");

        add_key(&store, &ring1, &k2, false).await.unwrap();
        assert!(open_ring(&store, &k1).await.unwrap().is_none());
        let ring2 = open_ring(&store, &k2).await.unwrap().expect("the newest key");
        assert_eq!(ring2.key_id(), 2);
        assert_eq!(ring2.open(&k0.seal(b"x", "p"), "p").unwrap(), b"x", "key 0 stays in the ring");
        assert_eq!(ring2.open(&ring1.seal(b"y", "p"), "p").unwrap(), b"y", "key 1 too");
        assert_eq!(ring2.derive("label"), k0.derive("label"), "derived keys come from key 0");
        assert_eq!(ring2.derive_token("label"), k0.derive_token("label"), "token keys too");

        // Forgotten older keys: the newest key alone opens its ring, which opens only its own values.
        let under_k2 = ring2.seal(b"z", "p");
        forget_older_keys(&store, &ring2).await.unwrap();
        let forgetful = open_ring(&store, &k2).await.unwrap().expect("the newest key still opens the ring");
        assert!(forgetful.open(&k0.seal(b"x", "p"), "p").is_err(), "key 0 is gone from the ring");
        assert_eq!(forgetful.open(&under_k2, "p").unwrap(), b"z");
        assert_eq!(forgetful.derive("label"), k0.derive("label"), "digests keep key 0's root");

        // Signing everyone out: token keys move to the new key, digests stay.
        let k3 = key("44");
        let ring3 = add_key(&store, &forgetful, &k3, true).await.unwrap();
        let reopened = open_ring(&store, &k3).await.unwrap().expect("key 3 opens its row");
        assert_eq!(reopened.derive_token("label"), ring3.derive_token("label"));
        assert_ne!(reopened.derive_token("label"), k0.derive_token("label"), "tokens moved to key 3");
        assert_eq!(reopened.derive("label"), k0.derive("label"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keyring_on_both_backends() {
        on_both_backends(each_key_opens_rings_up_to_itself_and_reseal_moves_every_row).await;
    }
}
