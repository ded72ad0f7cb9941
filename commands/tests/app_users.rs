//! App users on the command side, on SQLite and on Postgres (`LICENSD_TEST_POSTGRES_URL`):
//! login uniqueness decided by the log under concurrency, a license linked to one user at most,
//! and nothing personal in any event.

use licensd_commands::app_users::{login_digest, NewAppUser, PasswordCost, LOGIN_FIELD};
use licensd_commands::{Actor, CommandError, Commands, MasterKey, NewLicense, Writer, WriterConfig};
use licensd_domain::{AccountId, AppId, DomainError, LicenseKey, SystemClock};
use licensd_store::testing::on_both_backends;
use licensd_store::{EventStore, Position, Store};
use std::sync::Arc;

const CHEAP: PasswordCost = PasswordCost { memory_kib: 256, iterations: 1 };

fn commands(store: &Store) -> Commands {
    let (writer, _task) = Writer::spawn(store.clone(), WriterConfig::default());
    let key = MasterKey::parse(&"cd".repeat(32)).unwrap();
    Commands::new(store.clone(), writer, Arc::new(SystemClock), key)
}

async fn app(commands: &Commands) -> (AccountId, AppId, LicenseKey) {
    let op = Actor::Operator;
    let account = commands.create_account("users@example.com", &op).await.unwrap().account_id;
    let app = commands.create_app(account, "Users", &op).await.unwrap().app_id;
    let spec = NewLicense {
        app_id: app,
        expires_at: None,
        max_hwid_slots: 1,
        label: None,
        levels: vec![],
        max_sessions: None,
    };
    let created = commands.create_licenses(account, spec, 1, &op).await.unwrap();
    (account, app, created[0].0.clone())
}

fn new_user(account_id: AccountId, app_id: AppId, login: &str) -> NewAppUser {
    NewAppUser {
        app_id,
        account_id,
        login: login.into(),
        normalized_login: login.to_lowercase(),
        password: "correct horse".into(),
        comment: Some("a private note".into()),
        levels: vec![],
        license_required: false,
        license: None,
    }
}

async fn one_of_twenty_concurrent_sign_ups_wins(store: Store) {
    let commands = commands(&store);
    let (account, app_id, _) = app(&commands).await;
    let tries: Vec<_> = (0..20)
        .map(|_| {
            let commands = commands.clone();
            let user = new_user(account, app_id, "Racer");
            tokio::spawn(async move { commands.create_app_user(user, &CHEAP, &Actor::Operator).await })
        })
        .collect();
    let (mut won, mut taken) = (0, 0);
    for attempt in tries {
        match attempt.await.unwrap() {
            Ok(_) => won += 1,
            Err(CommandError::Domain(DomainError::AlreadyExists("app user"))) => taken += 1,
            Err(other) => panic!("unexpected: {other}"),
        }
    }
    assert_eq!((won, taken), (1, 19));
    // The same login in another app is another user.
    let (_, other_app, _) = (account, AppId::new(), ());
    let digest = |app| login_digest(commands.master_key(), app, "racer");
    assert_ne!(digest(app_id), digest(other_app));
}

async fn a_license_goes_to_one_user_and_deletion_frees_login_and_license(store: Store) {
    let commands = commands(&store);
    let op = Actor::Operator;
    let (account, app_id, key) = app(&commands).await;
    let ann = commands.create_app_user(new_user(account, app_id, "ann.b"), &CHEAP, &op).await.unwrap().0;
    let bob = commands.create_app_user(new_user(account, app_id, "bob.c"), &CHEAP, &op).await.unwrap().0;
    let links: Vec<_> = [ann, bob]
        .into_iter()
        .map(|user| {
            let (commands, key) = (commands.clone(), key.clone());
            tokio::spawn(async move {
                commands.link_license_to_user(app_id, user, &key, Some("pc-1".into()), &Actor::Operator).await
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for link in links {
        outcomes.push(link.await.unwrap());
    }
    let wins = outcomes.iter().filter(|o| o.is_ok()).count();
    assert_eq!(wins, 1, "{outcomes:?}");
    assert!(outcomes.iter().any(|o| matches!(o, Err(CommandError::Domain(DomainError::LicenseLinkedToOtherUser)))));
    let winner = if outcomes[0].is_ok() { ann } else { bob };

    // Deleting the winner unlinks the license, frees the login and erases the vault rows.
    assert!(commands.app_user_field(winner, LOGIN_FIELD).await.unwrap().is_some());
    commands.delete_app_user(account, winner, std::slice::from_ref(&key), &op).await.unwrap();
    assert_eq!(commands.app_user_field(winner, LOGIN_FIELD).await.unwrap(), None);
    assert_eq!(commands.app_user_verifier(winner).await.unwrap(), None);
    let loser = if winner == ann { bob } else { ann };
    commands.link_license_to_user(app_id, loser, &key, Some("pc-1".into()), &op).await.unwrap();
    let login = if winner == ann { "ann.b" } else { "bob.c" };
    commands.create_app_user(new_user(account, app_id, login), &CHEAP, &op).await.expect("the login is free again");

    // No event holds the login, the comment or the verifier.
    let events = store.read_all(Position::START, 10_000).await.unwrap();
    for event in &events {
        let text = format!("{} {}", event.payload.get(), event.metadata.get());
        for secret in ["ann.b", "bob.c", "private note", "argon2", "correct horse"] {
            assert!(!text.contains(secret), "{} holds {secret}: {text}", event.event_type);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_sign_ups_of_one_login_one_wins() {
    on_both_backends(one_of_twenty_concurrent_sign_ups_wins).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_license_is_linked_to_one_user_and_deletion_leaves_no_login() {
    on_both_backends(a_license_goes_to_one_user_and_deletion_frees_login_and_license).await;
}
