//! Protected files (see [`licensd_domain::file`]): recording an uploaded version, setting the
//! access policy, deleting. The bytes are stored by the blob store before the upload is
//! recorded here; the events carry only the blob's key, size and SHA-256.

use crate::{Actor, CommandError, Executed};
use licensd_domain::file::{file_stream, FileCommand, FileEvent, FilePolicy, FileState};
use licensd_domain::{AccountId, AppId};

impl crate::Commands {
    /// Runs a file command on the app's file `name`. The caller has checked that the app
    /// belongs to `account_id` (the file stream is the app's).
    pub async fn file_command(
        &self,
        account_id: AccountId,
        app_id: AppId,
        name: &str,
        command: FileCommand,
        actor: &Actor,
    ) -> Result<Executed<FileEvent>, CommandError> {
        let guard = |state: &FileState| match state {
            FileState::Live(file) if file.app_id != app_id => Err(CommandError::Forbidden("file")),
            _ => Ok(()),
        };
        self.execute::<FileState>(&file_stream(app_id, name), command, actor, Some(account_id), guard).await
    }

    /// Records a version whose bytes the blob store holds under `storage_key`.
    pub async fn record_file_upload(
        &self,
        account_id: AccountId,
        app_id: AppId,
        name: &str,
        (size, sha256, storage_key): (u64, String, String),
        actor: &Actor,
    ) -> Result<Executed<FileEvent>, CommandError> {
        let command = FileCommand::Upload { app_id, name: name.to_string(), size, sha256, storage_key };
        self.file_command(account_id, app_id, name, command, actor).await
    }

    pub async fn set_file_policy(
        &self,
        account_id: AccountId,
        app_id: AppId,
        name: &str,
        policy: FilePolicy,
        actor: &Actor,
    ) -> Result<Executed<FileEvent>, CommandError> {
        self.file_command(account_id, app_id, name, FileCommand::SetPolicy(policy), actor).await
    }

    pub async fn delete_file(
        &self,
        account_id: AccountId,
        app_id: AppId,
        name: &str,
        actor: &Actor,
    ) -> Result<Executed<FileEvent>, CommandError> {
        self.file_command(account_id, app_id, name, FileCommand::Delete, actor).await
    }
}
