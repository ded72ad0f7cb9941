//! A blocking wrapper around a real WebSocket client library (tokio-tungstenite), so the
//! scenarios read top to bottom like the HTTP tests.

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::runtime::Runtime;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Stream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What came from the server next.
#[derive(Debug)]
pub enum Frame {
    Json(Value),
    Closed(u16, String),
}

pub struct Ws {
    rt: Arc<Runtime>,
    stream: Option<Stream>,
    pub resume_id: String,
}

pub fn runtime() -> Arc<Runtime> {
    Arc::new(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap())
}

/// `ws://host/ws` of an `http://host` base.
pub fn endpoint(base: &str) -> String {
    format!("{}/ws", base.replacen("http://", "ws://", 1))
}

/// Opens a session (resuming one when `resume_id` is given); `Err(status)` when the upgrade is
/// refused, with its `Retry-After`.
pub async fn open(base: &str, resume_id: Option<&str>) -> Result<(Stream, String), (u16, Option<String>)> {
    let mut request = endpoint(base).into_client_request().unwrap();
    if let Some(id) = resume_id {
        request.headers_mut().insert("Resume-Id", HeaderValue::from_str(id).unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((stream, response)) => {
            let id = response.headers().get("resume-id").expect("Resume-Id on every accept");
            Ok((stream, id.to_str().unwrap().to_string()))
        }
        Err(Error::Http(response)) => {
            let retry = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
            Err((response.status().as_u16(), retry))
        }
        Err(e) => panic!("connect: {e}"),
    }
}

/// The next text frame or the close, skipping pings; panics after 15 s of silence.
pub async fn next(stream: &mut Stream) -> Frame {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(15), stream.next()).await.expect("a frame within 15 s");
        match message {
            Some(Ok(Message::Text(text))) => return Frame::Json(serde_json::from_str(text.as_str()).unwrap()),
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) = frame.map_or((1005, String::new()), |f| (u16::from(f.code), f.reason.to_string()));
                return Frame::Closed(code, reason);
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("socket error before a close frame: {e}"),
            None => panic!("the server dropped the socket without a close frame"),
        }
    }
}

/// Opens a session over a socket whose receive buffer is pinned at `bytes` (which turns off
/// the kernel's receive-buffer autotuning, up to 32 MiB on loopback here), so that what the
/// server can push ahead of a client that stops reading is bounded and a test of a stop that
/// races a stream is deterministic.
pub async fn open_with_receive_buffer(base: &str, bytes: u32) -> (Stream, String) {
    let address = base.trim_start_matches("http://").to_string();
    let address: std::net::SocketAddr = tokio::net::lookup_host(&address).await.unwrap().next().unwrap();
    let socket = if address.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() };
    let socket = socket.unwrap();
    socket.set_recv_buffer_size(bytes).unwrap();
    let tcp = socket.connect(address).await.expect("connect");
    let request = endpoint(base).into_client_request().unwrap();
    let (stream, response) =
        tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(tcp)).await.expect("upgrade accepted");
    let id = response.headers().get("resume-id").expect("Resume-Id on every accept");
    (stream, id.to_str().unwrap().to_string())
}

impl Ws {
    pub fn connect(rt: &Arc<Runtime>, base: &str) -> Self {
        Self::resume(rt, base, None).expect("upgrade accepted")
    }

    /// [`open_with_receive_buffer`], blocking.
    #[allow(dead_code)] // tests/live_files.rs only
    pub fn connect_with_receive_buffer(rt: &Arc<Runtime>, base: &str, bytes: u32) -> Self {
        let (stream, resume_id) = rt.block_on(open_with_receive_buffer(base, bytes));
        Self { rt: rt.clone(), stream: Some(stream), resume_id }
    }

    pub fn resume(rt: &Arc<Runtime>, base: &str, resume_id: Option<&str>) -> Result<Self, (u16, Option<String>)> {
        let (stream, resume_id) = rt.block_on(open(base, resume_id))?;
        Ok(Self { rt: rt.clone(), stream: Some(stream), resume_id })
    }

    fn stream(&mut self) -> &mut Stream {
        self.stream.as_mut().expect("open")
    }

    pub fn send_message(&mut self, message: Message) {
        let rt = self.rt.clone();
        rt.block_on(self.stream().send(message)).expect("send");
    }

    pub fn send(&mut self, packet: Value) {
        self.send_message(Message::Text(packet.to_string().into()));
    }

    pub fn next(&mut self) -> Frame {
        let rt = self.rt.clone();
        rt.block_on(next(self.stream()))
    }

    /// The next text or binary frame (file streams), skipping pings; panics after 15 s.
    #[allow(dead_code)] // tests/live_files.rs only
    pub fn next_message(&mut self) -> Message {
        let rt = self.rt.clone();
        let stream = self.stream();
        rt.block_on(async {
            loop {
                match tokio::time::timeout(Duration::from_secs(15), stream.next()).await.expect("a frame within 15 s") {
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(message)) => return message,
                    other => panic!("socket ended: {other:?}"),
                }
            }
        })
    }

    /// The next JSON frame; panics on a close.
    pub fn recv(&mut self) -> Value {
        match self.next() {
            Frame::Json(v) => v,
            Frame::Closed(code, reason) => panic!("closed {code} {reason:?} where a frame was expected"),
        }
    }

    /// Sends a packet and returns the next frame (its response, in these scenarios).
    pub fn call(&mut self, packet: Value) -> Value {
        let id = packet["id"].clone();
        self.send(packet);
        let answer = self.recv();
        assert_eq!(answer["id"], id, "{answer}");
        assert!(answer.get("type").is_none(), "responses carry no type: {answer}");
        answer
    }

    pub fn closed(&mut self) -> (u16, String) {
        match self.next() {
            Frame::Closed(code, reason) => (code, reason),
            Frame::Json(v) => panic!("expected a close, got {v}"),
        }
    }

    pub fn init(&mut self, key: &str, client_id: &str) -> Value {
        self.call(json!({"type": 0, "id": 1, "websocket_api_key": key, "client_id": client_id, "protocol_version": 3}))
    }

    /// Closes with 1000: the session ends (no resume).
    pub fn close_normally(&mut self) {
        let frame = CloseFrame { code: CloseCode::Normal, reason: "".into() };
        self.send_message(Message::Close(Some(frame)));
    }

    /// The server dropped this socket without a close frame (a take-over).
    pub fn ends_silently(&mut self) -> bool {
        let rt = self.rt.clone();
        let stream = self.stream();
        rt.block_on(async {
            loop {
                match tokio::time::timeout(Duration::from_secs(15), stream.next()).await.expect("ends within 15 s") {
                    None | Some(Err(_)) => return true,
                    Some(Ok(Message::Close(_) | Message::Text(_))) => return false,
                    Some(Ok(_)) => continue,
                }
            }
        })
    }

    /// Drops the TCP connection without a close frame (a network failure).
    pub fn drop_connection(mut self) {
        drop(self.stream.take());
    }
}

/// The HTTP limits relaxed and the live rate limits high enough that only the scenarios decide,
/// plus `extra`.
pub fn live_env<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = crate::common::RELAXED_LIMITS.to_vec();
    env.extend([
        ("LICENSD_LIVE_SESSION_ACTIONS_PER_MINUTE", "100000"),
        ("LICENSD_LIVE_IP_ACTIONS_PER_MINUTE", "100000"),
    ]);
    env.extend_from_slice(extra);
    env
}

/// A merchant with credits, and its app's WebSocket API key (shown once by `POST /v1/apps`).
pub fn live_merchant(
    deployment: &crate::common::Deployment,
    server: &crate::common::Server,
    email: &str,
) -> (crate::common::Merchant, String) {
    let account = deployment.cli(&["account", "create", "--email", email]);
    let api_key = account["apiKey"].as_str().unwrap().to_string();
    let account_id = account["accountId"].as_str().unwrap().to_string();
    deployment.cli(&["credits", "grant", "--account", &account_id, "--amount", "100"]);
    let (status, app) = server.post(&api_key, "/v1/apps", &json!({ "name": "Live app" }));
    assert_eq!(status, 201, "{app}");
    let text = |field: &str| app[field].as_str().unwrap().to_string();
    let ws_key = text("websocketApiKey");
    assert_eq!(ws_key.len(), 21);
    let merchant = crate::common::Merchant {
        account_id,
        api_key,
        app_id: text("appId"),
        app_secret: text("appSecret"),
        public_key: text("publicKey"),
    };
    (merchant, ws_key)
}

/// The socket is closed by the server with `code`; its reason.
pub fn closes_with(ws: &mut Ws, code: u16) -> String {
    let (closed, reason) = ws.closed();
    assert_eq!(closed, code, "{reason}");
    reason
}
