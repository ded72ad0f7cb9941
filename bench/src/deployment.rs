//! A licensd under test: its database (a fresh SQLite folder or a fresh Postgres database), its
//! operator commands, and server processes started from the release binary.

use anyhow::{bail, Context};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "Postgres",
        }
    }
}

pub struct Deployment {
    pub backend: Backend,
    bin: PathBuf,
    data_dir: PathBuf,
    database_url: String,
    master_key: Option<String>,
    /// Postgres: (admin URL, database name) to drop afterwards.
    drop_database: Option<(String, String)>,
}

/// A fixed key: benchmark data protects nothing.
pub(crate) const MASTER_KEY: &str = "abababababababababababababababababababababababababababababababab";

impl Deployment {
    /// A fresh, empty deployment. `postgres_admin_url` names a database on a server where the
    /// user may create databases (Postgres only).
    pub fn create(backend: Backend, bin: &Path, postgres_admin_url: &str, label: &str) -> anyhow::Result<Self> {
        let data_dir = std::env::temp_dir().join(format!("licensd-bench-{}-{label}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data_dir);
        std::fs::create_dir_all(&data_dir)?;
        let (database_url, drop_database) = match backend {
            Backend::Sqlite => (format!("sqlite://{}/licensd.db", data_dir.display()), None),
            Backend::Postgres => {
                let name = format!("licensd_bench_{}_{label}", std::process::id());
                psql(postgres_admin_url, &format!("DROP DATABASE IF EXISTS {name}"))?;
                psql(postgres_admin_url, &format!("CREATE DATABASE {name}"))?;
                (database_url_for(postgres_admin_url, &name), Some((postgres_admin_url.to_string(), name)))
            }
        };
        Ok(Self {
            backend,
            bin: bin.to_path_buf(),
            data_dir,
            database_url,
            master_key: Some(MASTER_KEY.to_string()),
            drop_database,
        })
    }

    pub fn database_url(&self) -> &str {
        &self.database_url
    }

    /// The Postgres database's name (`None` on SQLite).
    pub fn database_name(&self) -> Option<&str> {
        self.drop_database.as_ref().map(|(_, name)| name.as_str())
    }

    fn command(&self, args: &[&str]) -> Command {
        self.command_in(&self.data_dir, args)
    }

    fn command_in(&self, data_dir: &Path, args: &[&str]) -> Command {
        let mut command = Command::new(&self.bin);
        command
            .args(args)
            .env("LICENSD_DATA_DIR", data_dir)
            .env("LICENSD_DATABASE_URL", &self.database_url)
            .env("LICENSD_LOG", "warn");
        if let Some(key) = &self.master_key {
            command.env("LICENSD_MASTER_KEY", key);
        }
        command
    }

    /// Runs an operator command; returns its JSON output.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<Value> {
        let output = self.command(args).output().context("cannot run licensd")?;
        if !output.status.success() {
            bail!("licensd {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(serde_json::from_slice(&output.stdout)?)
    }

    /// Starts `licensd serve` on a free port; returns once it listens.
    pub fn start(&self, env: &[(&str, String)]) -> anyhow::Result<Server> {
        self.serve(self.command(&["serve"]), env)
    }

    /// Starts another node on the same database (Postgres): `LICENSD_NODE_ID` is `node`, and its
    /// data folder (its snapshot) is a subfolder of its own.
    pub fn start_node(&self, node: &str, env: &[(&str, String)]) -> anyhow::Result<Server> {
        let data_dir = self.data_dir.join(node);
        std::fs::create_dir_all(&data_dir)?;
        let mut command = self.command_in(&data_dir, &["serve"]);
        command.env("LICENSD_NODE_ID", node);
        self.serve(command, env)
    }

    fn serve(&self, mut command: Command, env: &[(&str, String)]) -> anyhow::Result<Server> {
        command.env("LICENSD_LISTEN", "127.0.0.1:0").stdout(Stdio::piped()).stderr(Stdio::inherit());
        for (name, value) in env {
            command.env(name, value);
        }
        let started = Instant::now();
        let mut child = command.spawn().context("cannot start licensd serve")?;
        let line = first_line(&mut child, Duration::from_secs(300))?;
        let startup = started.elapsed();
        let listening: Value = serde_json::from_str(&line).with_context(|| format!("unexpected output {line:?}"))?;
        let addr = listening["listening"].as_str().context("no listening address")?;
        Ok(Server { base_url: format!("http://{addr}"), child, startup })
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data_dir);
        if let Some((admin, name)) = &self.drop_database {
            let _ = psql(admin, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
}

/// A running server process (licensd or the floor).
pub struct Server {
    pub base_url: String,
    child: Child,
    /// From process start to the listening line (includes rebuilding the read model).
    pub startup: Duration,
}

impl Server {
    /// Starts this benchmark binary's own floor server; with `durable_url`, the durable floor.
    pub fn floor(durable_url: Option<&str>) -> anyhow::Result<Self> {
        let started = Instant::now();
        let mut command = Command::new(std::env::current_exe()?);
        command.args(["floor", "--listen", "127.0.0.1:0"]);
        if let Some(url) = durable_url {
            command.args(["--durable", url]);
        }
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn()?;
        let line = first_line(&mut child, Duration::from_secs(30))?;
        let listening: Value = serde_json::from_str(&line)?;
        let addr = listening["listening"].as_str().context("floor printed no address")?;
        Ok(Self { base_url: format!("http://{addr}"), child, startup: started.elapsed() })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the process, in bytes.
    pub fn rss_bytes(&self) -> u64 {
        rss_of(self.child.id())
    }

    /// SIGTERM, then waits for the graceful shutdown (SIGKILL after 30 s).
    pub fn stop(mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// VmRSS of process `pid` in bytes (0 once it is gone).
pub fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn first_line(child: &mut Child, timeout: Duration) -> anyhow::Result<String> {
    let stdout = child.stdout.take().context("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = tx.send(line);
        // Keep draining so the child never blocks on a full pipe.
        let mut rest = String::new();
        while reader.read_line(&mut rest).is_ok_and(|n| n > 0) {
            rest.clear();
        }
    });
    rx.recv_timeout(timeout).context("the server did not print its address in time")
}

fn psql(url: &str, sql: &str) -> anyhow::Result<()> {
    query(url, sql).map(drop)
}

/// Runs `sql` with `psql` on `url`; returns its unaligned output (rows on lines, `|` between
/// columns), trimmed.
pub fn query(url: &str, sql: &str) -> anyhow::Result<String> {
    let output = Command::new("psql").args([url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql]).output()?;
    if !output.status.success() {
        bail!("psql {sql:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// `url` with its database name replaced by `name`.
fn database_url_for(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
    match query {
        Some(q) => format!("{server}/{name}?{q}"),
        None => format!("{server}/{name}"),
    }
}

/// Whether Postgres answers at `url` (the suite skips the Postgres half, saying so, when not).
pub fn postgres_reachable(url: &str) -> bool {
    psql(url, "SELECT 1").is_ok()
}

#[cfg(test)]
mod tests {
    use super::database_url_for;

    #[test]
    fn replaces_the_database_name() {
        assert_eq!(database_url_for("postgres://u@h:5432/postgres", "x"), "postgres://u@h:5432/x");
        assert_eq!(database_url_for("postgres://u@h/db?sslmode=disable", "x"), "postgres://u@h/x?sslmode=disable");
    }
}
