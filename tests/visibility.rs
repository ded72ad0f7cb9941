//! On Postgres a committed event stays above the readers' visibility horizon while any older
//! transaction in the cluster is still open. A lookup that misses (an API key an operator command
//! has just created) must wait that moment out instead of answering 401 for a key that exists.

mod common;

use common::{temp_postgres, Deployment, TempDir};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn a_key_created_while_an_older_transaction_is_open_is_found() {
    let Some(database) = temp_postgres() else { return };
    let dir = TempDir::new();
    let deployment = Deployment::postgres(&dir.0, &database.url);
    let server = deployment.start();
    // Let the server settle first, so the only open transaction below is ours.
    let (admin_key, _) = deployment.merchant(&server, "first@example.com");
    assert_eq!(server.get(&admin_key, "/v1/apps").0, 200);

    // An older transaction that holds an id: what commits after it is not yet "safe" to read.
    let mut psql = Command::new("psql")
        .args(["-X", "-q", "-A", "-t", &database.url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("psql");
    let mut input = psql.stdin.take().expect("stdin");
    writeln!(input, "BEGIN; SELECT pg_current_xact_id();").expect("begin");
    let mut xid = String::new();
    BufReader::new(psql.stdout.take().expect("stdout")).read_line(&mut xid).expect("xid");
    assert!(xid.trim().parse::<u64>().is_ok(), "the blocking transaction holds an id: {xid:?}");

    let account = deployment.cli(&["account", "create", "--email", "fresh@example.com"]);
    let api_key = account["apiKey"].as_str().expect("apiKey").to_string();
    // The older transaction ends a little later, as a concurrent write elsewhere would.
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(400));
        writeln!(input, "COMMIT;").expect("commit");
        drop(input);
        psql.wait().expect("psql exits")
    });
    let (status, body) = server.get(&api_key, "/v1/apps");
    assert!(release.join().expect("release").success());
    assert_eq!(status, 200, "a key that exists was refused: {body}");
}
