//! A Kafka-protocol broker for the multi-node benchmark: the tansu binary that `.ci/tansu`
//! builds, on its SQLite storage engine in a temporary folder (the in-memory engine loses
//! messages when the broker resumes), on a free port. Stopped with SIGKILL, so it stops
//! answering at once, and started again on the same port and storage.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Broker {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Broker {
    /// Starts `bin` (`tansu`) and waits until its port accepts connections.
    pub fn start(bin: &Path) -> anyhow::Result<Self> {
        anyhow::ensure!(bin.is_file(), "no broker binary at {} (`bash .ci/tansu` builds it)", bin.display());
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = std::env::temp_dir().join(format!("licensd-bench-{}-broker-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let mut broker = Self { bin: bin.to_path_buf(), dir, port, child: None };
        broker.resume()?;
        Ok(broker)
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the broker process (again) and waits until its port accepts connections.
    pub fn resume(&mut self) -> anyhow::Result<()> {
        let url = format!("tcp://{}", self.address());
        let child = Command::new(&self.bin)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start the broker {}", self.bin.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(self.address()).is_err() {
            if Instant::now() > deadline {
                bail!("the broker did not listen on {} within 30 s", self.address());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// SIGKILL: the broker stops answering at once.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Creates `topic` with the admin API (the broker creates none by itself); one that exists
    /// already counts as created.
    pub async fn create_topic(&self, topic: &str, partitions: i32) -> anyhow::Result<()> {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        use rdkafka::client::DefaultClientContext;
        use rdkafka::types::RDKafkaErrorCode;
        let admin: AdminClient<DefaultClientContext> =
            rdkafka::ClientConfig::new().set("bootstrap.servers", self.address()).create()?;
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let topics = [NewTopic::new(topic, partitions, TopicReplication::Fixed(1))];
            let created = admin.create_topics(&topics, &options).await;
            match created.as_ref().map(|results| results.as_slice()) {
                Ok([Ok(_)]) | Ok([Err((_, RDKafkaErrorCode::TopicAlreadyExists))]) => return Ok(()),
                other if Instant::now() > deadline => bail!("cannot create the topic {topic}: {other:?}"),
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
