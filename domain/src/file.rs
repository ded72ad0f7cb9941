//! Protected files of an app (Blazeauth's file delivery): one stream per app and file name
//! (`file-<appId>-<digest of the name>`), so two uploads of one name are ordered by the log and
//! each gets the next version number.
//!
//! The bytes are never in the log: a version names its blob by `storage_key` (see the blob
//! store), with the size and SHA-256 the upload computed while streaming. A deleted file keeps
//! its stream: a later upload of the name starts a new file whose version numbers continue, so
//! a resume against a version of the old file can never splice another file's bytes.

use crate::{Aggregate, AppId, DomainError, StreamCategory};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Characters of a file name: the management panel's 4–16 (websocket.md §7, decision 8).
pub const MIN_FILE_NAME_CHARS: usize = 4;
pub const MAX_FILE_NAME_CHARS: usize = 16;

/// Checks a file name: 4–16 characters of `[A-Za-z0-9 ._-]` (decision 8 allows `.`, so
/// `client.dll` works), no space at either end and no two spaces in a row (the panel's rule of
/// trimmed names with single spaces). Names are case-sensitive, as the packets carry them.
pub fn check_file_name(name: &str) -> Result<(), DomainError> {
    let invalid = |why: &str| Err(DomainError::InvalidFileName(why.to_string()));
    let chars = name.chars().count();
    if !(MIN_FILE_NAME_CHARS..=MAX_FILE_NAME_CHARS).contains(&chars) {
        return invalid("a file name must be 4 to 16 characters");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b' ' | b'.' | b'_' | b'-')) {
        return invalid("a file name may hold only letters, digits, spaces, '.', '_' and '-'");
    }
    if name.starts_with(' ') || name.ends_with(' ') || name.contains("  ") {
        return invalid("a file name cannot start or end with a space or hold two spaces in a row");
    }
    Ok(())
}

/// The stream of one app's file name. The name is digested so the stream id has a fixed shape
/// whatever the name holds (spaces, dots).
pub fn file_stream(app_id: AppId, name: &str) -> String {
    let digest = Sha256::digest(name.as_bytes());
    StreamCategory::File.stream_id(format!("{app_id}-{}", hex::encode(&digest[..16])))
}

/// Who may fetch a file over a live session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum FilePolicy {
    /// Any authorized session (by license or by credentials): the default.
    #[default]
    AnyAuthorized,
    /// Authorized sessions whose identity holds at least one of these levels.
    Levels { levels: Vec<String> },
    /// Any initialized session, authorized or not.
    Public,
}

impl FilePolicy {
    /// Whether an identity holding `levels` may fetch the file (`authorized`: the session is
    /// authorized now). The single place the rule is written, for every delivery path.
    pub fn allows(&self, authorized: bool, levels: &[String]) -> bool {
        match self {
            Self::Public => true,
            Self::AnyAuthorized => authorized,
            Self::Levels { levels: wanted } => authorized && wanted.iter().any(|w| levels.contains(w)),
        }
    }

    fn checked(self) -> Result<Self, DomainError> {
        match self {
            Self::Levels { levels } => {
                let levels = crate::license::check_levels(levels)?;
                if levels.is_empty() {
                    return Err(DomainError::InvalidLevels("a levels policy needs at least one level".into()));
                }
                Ok(Self::Levels { levels })
            }
            other => Ok(other),
        }
    }
}

/// One uploaded version of a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileVersion {
    /// 1 for the first upload of the stream, then one more per upload (never reused).
    pub version: u32,
    pub size: u64,
    /// SHA-256 of the whole content, lowercase hex.
    pub sha256: String,
    /// Where the blob store keeps the bytes.
    pub storage_key: String,
    pub uploaded_at: DateTime<Utc>,
}

crate::typed_decode::event_enum! {
    category = StreamCategory::File;
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "type")]
    pub enum FileEvent {
        FileVersionUploaded {
            app_id: AppId,
            name: String,
            version: u32,
            size: u64,
            sha256: String,
            storage_key: String,
            uploaded_at: DateTime<Utc>,
        },
        FilePolicySet {
            app_id: AppId,
            name: String,
            policy: FilePolicy,
            at: DateTime<Utc>,
        },
        FileDeleted {
            app_id: AppId,
            name: String,
            at: DateTime<Utc>,
        },
    }
}

impl FileEvent {
    /// The app and name every file event carries.
    pub fn file(&self) -> (AppId, &str) {
        match self {
            Self::FileVersionUploaded { app_id, name, .. }
            | Self::FilePolicySet { app_id, name, .. }
            | Self::FileDeleted { app_id, name, .. } => (*app_id, name),
        }
    }
}

/// A live file as the rules (and the in-memory model) see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct File {
    pub app_id: AppId,
    pub name: String,
    pub policy: FilePolicy,
    /// The version a new transfer delivers: the newest.
    pub current: FileVersion,
    /// The versions before it since the file was (re)created, oldest first.
    pub older: Vec<FileVersion>,
}

impl File {
    /// Every version, oldest first.
    pub fn versions(&self) -> impl Iterator<Item = &FileVersion> {
        self.older.iter().chain(std::iter::once(&self.current))
    }

    pub fn version(&self, version: u32) -> Option<&FileVersion> {
        self.versions().find(|v| v.version == version)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub enum FileState {
    #[default]
    Missing,
    Live(File),
    /// Deleted; `last_version` is the highest version the stream ever had.
    Deleted {
        last_version: u32,
    },
}

impl FileState {
    fn last_version(&self) -> u32 {
        match self {
            Self::Missing => 0,
            Self::Live(file) => file.current.version,
            Self::Deleted { last_version } => *last_version,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum FileCommand {
    /// Records a version whose bytes the blob store already holds.
    Upload {
        app_id: AppId,
        name: String,
        size: u64,
        sha256: String,
        storage_key: String,
    },
    SetPolicy(FilePolicy),
    Delete,
}

impl Aggregate for FileState {
    type Event = FileEvent;
    type Command = FileCommand;

    fn evolve(self, event: &FileEvent) -> Self {
        match event {
            FileEvent::FileVersionUploaded { app_id, name, version, size, sha256, storage_key, uploaded_at } => {
                let uploaded = FileVersion {
                    version: *version,
                    size: *size,
                    sha256: sha256.clone(),
                    storage_key: storage_key.clone(),
                    uploaded_at: *uploaded_at,
                };
                match self {
                    Self::Live(mut file) => {
                        let previous = std::mem::replace(&mut file.current, uploaded);
                        file.older.push(previous);
                        Self::Live(file)
                    }
                    Self::Missing | Self::Deleted { .. } => Self::Live(File {
                        app_id: *app_id,
                        name: name.clone(),
                        policy: FilePolicy::default(),
                        current: uploaded,
                        older: Vec::new(),
                    }),
                }
            }
            FileEvent::FilePolicySet { policy, .. } => match self {
                Self::Live(mut file) => {
                    file.policy = policy.clone();
                    Self::Live(file)
                }
                other => other,
            },
            FileEvent::FileDeleted { .. } => Self::Deleted { last_version: self.last_version() },
        }
    }

    fn decide(&self, command: FileCommand, now: DateTime<Utc>) -> Result<Vec<FileEvent>, DomainError> {
        match command {
            FileCommand::Upload { app_id, name, size, sha256, storage_key } => {
                check_file_name(&name)?;
                if let Self::Live(file) = self {
                    if file.app_id != app_id || file.name != name {
                        return Err(DomainError::InvalidFileName("the name does not belong to this stream".into()));
                    }
                }
                let version = self.last_version() + 1;
                Ok(vec![FileEvent::FileVersionUploaded {
                    app_id,
                    name,
                    version,
                    size,
                    sha256,
                    storage_key,
                    uploaded_at: now,
                }])
            }
            FileCommand::SetPolicy(policy) => {
                let Self::Live(file) = self else { return Err(DomainError::NotFound("file")) };
                let policy = policy.checked()?;
                if policy == file.policy {
                    return Ok(vec![]);
                }
                Ok(vec![FileEvent::FilePolicySet { app_id: file.app_id, name: file.name.clone(), policy, at: now }])
            }
            FileCommand::Delete => {
                let Self::Live(file) = self else { return Err(DomainError::NotFound("file")) };
                Ok(vec![FileEvent::FileDeleted { app_id: file.app_id, name: file.name.clone(), at: now }])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload(app_id: AppId, name: &str, sha: &str) -> FileCommand {
        FileCommand::Upload {
            app_id,
            name: name.into(),
            size: 3,
            sha256: sha.into(),
            storage_key: format!("{app_id}/{sha}"),
        }
    }

    fn run(state: FileState, command: FileCommand) -> Result<FileState, DomainError> {
        let events = state.decide(command, Utc::now())?;
        Ok(events.iter().fold(state, |s, e| s.evolve(e)))
    }

    #[test]
    fn names_follow_decision_8() {
        for good in ["client.dll", "abcd", "my file-1_x.bin", "0123456789abcdef"] {
            assert_eq!(check_file_name(good), Ok(()), "{good}");
        }
        for bad in ["abc", "0123456789abcdefg", " abcd", "abcd ", "ab  cd", "a/b/c", "../etc", "名前名前", "ab\0cd", ""]
        {
            assert!(matches!(check_file_name(bad), Err(DomainError::InvalidFileName(_))), "{bad:?}");
        }
    }

    #[test]
    fn versions_count_up_and_survive_deletion_without_reuse() {
        let app_id = AppId::new();
        let state = run(FileState::Missing, upload(app_id, "client.dll", "aa")).unwrap();
        let state = run(state, upload(app_id, "client.dll", "bb")).unwrap();
        let FileState::Live(file) = &state else { panic!("not live") };
        assert_eq!(file.versions().map(|v| v.version).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(file.current.sha256, "bb");
        let state = run(state, FileCommand::Delete).unwrap();
        assert_eq!(state, FileState::Deleted { last_version: 2 });
        assert_eq!(run(state.clone(), FileCommand::Delete), Err(DomainError::NotFound("file")));
        let state = run(state, upload(app_id, "client.dll", "cc")).unwrap();
        let FileState::Live(file) = &state else { panic!("not live") };
        assert_eq!(file.versions().count(), 1);
        assert_eq!(file.current.version, 3);
        assert_eq!(file.policy, FilePolicy::AnyAuthorized);
    }

    #[test]
    fn policies_are_checked_and_decide_access() {
        let app_id = AppId::new();
        let state = run(FileState::Missing, upload(app_id, "model.bin", "aa")).unwrap();
        let empty = FilePolicy::Levels { levels: vec![] };
        assert!(matches!(run(state.clone(), FileCommand::SetPolicy(empty)), Err(DomainError::InvalidLevels(_))));
        let too_long = FilePolicy::Levels { levels: vec!["x".repeat(17)] };
        assert!(matches!(run(state.clone(), FileCommand::SetPolicy(too_long)), Err(DomainError::InvalidLevels(_))));
        let pro = FilePolicy::Levels { levels: vec!["pro".into()] };
        let state = run(state, FileCommand::SetPolicy(pro.clone())).unwrap();
        assert_eq!(state.decide(FileCommand::SetPolicy(pro.clone()), Utc::now()), Ok(vec![]));
        assert!(pro.allows(true, &["basic".into(), "pro".into()]));
        assert!(!pro.allows(true, &["basic".into()]));
        assert!(!pro.allows(false, &["pro".into()]));
        assert!(FilePolicy::Public.allows(false, &[]));
        assert!(!FilePolicy::AnyAuthorized.allows(false, &[]));
        assert!(FilePolicy::AnyAuthorized.allows(true, &[]));
    }

    #[test]
    fn streams_are_per_app_and_name() {
        let (a, b) = (AppId::new(), AppId::new());
        assert_ne!(file_stream(a, "client.dll"), file_stream(b, "client.dll"));
        assert_ne!(file_stream(a, "client.dll"), file_stream(a, "Client.dll"));
        let stream = file_stream(a, "client.dll");
        assert_eq!(StreamCategory::parse(&stream).map(|(c, _)| c), Some(StreamCategory::File));
    }
}
