//! The daemon's local API on real sockets, with real endpoints behind it: who may call it (the
//! same user, not another; no web page; the TCP listener's token and Host), its limits, its
//! routes and events, and the socket file's life.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use burrow::api::{
    ApiClient, ApiConfig, ApiError, ApiServer, ClientError, ErrorCode, Event, NodeApi, PathKind,
    PathView, Pong, RelayState, Router, ServeError, TcpOptions, Token, MAX_BODY,
};
use burrow::endpoint::{Connection, Endpoint, EndpointOptions};
use burrow::{tool, NodeId, SecretKey};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::broadcast;
use tokio::time::timeout;

/// The daemon's side as a test builds it: a real endpoint and the connections it dialled.
struct Daemon {
    endpoint: Endpoint,
    started: Instant,
    events: broadcast::Sender<Event>,
    conns: Mutex<HashMap<NodeId, Connection>>,
    seq: AtomicU64,
}

impl NodeApi for Daemon {
    fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn started(&self) -> Instant {
        self.started
    }

    fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    async fn ping(&self, node: NodeId) -> Result<Pong, ApiError> {
        let conn = self.conns.lock().unwrap().get(&node).cloned();
        let conn = conn.ok_or_else(|| {
            ApiError::new(ErrorCode::UnknownPeer, format!("not connected to {node}"))
        })?;
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        match tool::ping(&conn, seq, Duration::from_secs(2)).await {
            Ok(Some(rtt)) => Ok(Pong::new(&self.endpoint, node, rtt)),
            Ok(None) => Err(ApiError::new(ErrorCode::PeerTimeout, "no pong")),
            Err(e) => Err(ApiError::new(ErrorCode::Internal, e.to_string())),
        }
    }
}

async fn endpoint(relays: Vec<burrow::relay_client::RelayUrl>) -> Endpoint {
    Endpoint::bind(
        SecretKey::from_bytes(rand::random()),
        EndpointOptions {
            bind_v4: "127.0.0.1:0".parse().unwrap(),
            bind_v6: None,
            alpns: vec![tool::ALPN.to_vec()],
            relays,
            ..Default::default()
        },
    )
    .await
    .expect("endpoint binds")
}

fn daemon(endpoint: Endpoint) -> Arc<Daemon> {
    Arc::new(Daemon {
        endpoint,
        started: Instant::now(),
        events: broadcast::channel(64).0,
        conns: Mutex::default(),
        seq: AtomicU64::new(1),
    })
}

/// A fresh directory of this test's own under the temp dir.
fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("burrow-api-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

async fn serve(dir: &Path, tcp: bool, state: Arc<Daemon>) -> ApiServer {
    let config = ApiConfig {
        socket: dir.join("run").join("api.sock"),
        tcp: tcp.then(|| TcpOptions {
            port: 0,
            token_file: dir.join("state").join("api-token"),
        }),
    };
    ApiServer::bind(&config, Router::new(), state)
        .await
        .expect("the API binds")
}

/// An answer as it came over the wire.
struct Raw {
    status: u16,
    head: String,
    json: serde_json::Value,
}

impl Raw {
    fn code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("")
    }
}

/// Sends one request exactly as given (it should say `Connection: close`) and reads the answer.
async fn raw(mut io: impl AsyncRead + AsyncWrite + Unpin, request: &[u8]) -> Raw {
    io.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    timeout(Duration::from_secs(5), io.read_to_end(&mut answer))
        .await
        .expect("an answer within 5 s")
        .expect("read");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let json = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    Raw {
        status,
        head: head.to_ascii_lowercase(),
        json,
    }
}

async fn unix(server: &ApiServer, request: &str) -> Raw {
    let io = tokio::net::UnixStream::connect(server.socket_path())
        .await
        .unwrap();
    raw(io, request.as_bytes()).await
}

async fn tcp(server: &ApiServer, request: &str) -> Raw {
    let io = tokio::net::TcpStream::connect(server.tcp_addr().unwrap())
        .await
        .unwrap();
    raw(io, request.as_bytes()).await
}

#[tokio::test]
async fn the_same_user_gets_status_peers_and_pings_over_the_socket() {
    timeout(Duration::from_secs(30), async {
        let dir = test_dir("routes");
        let (a, b) = (endpoint(vec![]).await, endpoint(vec![]).await);
        tokio::spawn({
            let b = b.clone();
            async move {
                while let Some(conn) = b.accept().await {
                    tokio::spawn(tool::serve(conn));
                }
            }
        });
        let state = daemon(a.clone());
        let conn = a.connect(&b.ticket(), tool::ALPN).await.expect("connects");
        tool::greeting(&conn).await.unwrap();
        state.conns.lock().unwrap().insert(b.node_id(), conn);
        let server = serve(&dir, false, state).await;
        let client = ApiClient::unix(server.socket_path());

        let status = client.status().await.expect("status");
        assert_eq!(status.node_id, a.node_id());
        assert_eq!(status.addrs, vec![a.local_addr().unwrap()]);
        assert_eq!(status.ticket.node_id, a.node_id());
        assert_eq!(status.version, env!("CARGO_PKG_VERSION"));
        assert!(status.relays.is_empty());

        let peers = client.peers().await.expect("peers");
        assert_eq!(peers.len(), 1, "{peers:?}");
        assert_eq!(peers[0].node_id, b.node_id());
        assert_eq!(peers[0].path.path, PathKind::Direct);
        let b_addr = b.local_addr().unwrap().to_string();
        assert_eq!(peers[0].path.remote_addr.as_deref(), Some(b_addr.as_str()));
        assert!(peers[0].idle_ms.is_some_and(|ms| ms < 10_000), "{peers:?}");

        let pong = client.ping(b.node_id()).await.expect("pong");
        assert_eq!(pong.node_id, b.node_id());
        assert_eq!(pong.path, PathKind::Direct);
        assert_eq!(pong.remote_addr.as_deref(), Some(b_addr.as_str()));
        assert!(pong.rtt_ms > 0.0 && pong.rtt_ms < 1000.0, "{pong:?}");
        eprintln!("ping over the API: {} ms", pong.rtt_ms);

        let stranger = SecretKey::from_bytes(rand::random()).node_id();
        let err = client.ping(stranger).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::UnknownPeer), "{err}");
        assert!(matches!(err, ClientError::Api { status: 404, .. }), "{err}");

        let bad = unix(
            &server,
            "POST /v1/ping HTTP/1.1\r\nHost: x\r\nContent-Length: 17\r\nConnection: close\r\n\r\n{\"node\": \"nope\"}\n",
        )
        .await;
        assert_eq!((bad.status, bad.code()), (400, "bad_request"), "{}", bad.json);
        server.shutdown().await;
        a.close().await;
        b.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
    })
    .await
    .expect("within 30 s");
}

#[tokio::test]
async fn status_shows_each_relay_and_why_it_is_not_connected() {
    // Nothing listens on this port: the relay client keeps failing, and says why.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url: burrow::relay_client::RelayUrl = format!("http://{}", dead.local_addr().unwrap())
        .parse()
        .unwrap();
    drop(dead);
    let dir = test_dir("relays");
    let server = serve(&dir, false, daemon(endpoint(vec![url.clone()]).await)).await;
    let client = ApiClient::unix(server.socket_path());
    let relay = timeout(Duration::from_secs(10), async {
        loop {
            let status = client.status().await.unwrap();
            assert_eq!(status.relays.len(), 1);
            let relay = status.relays[0].clone();
            if relay.state == RelayState::Backoff {
                return relay;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the relay client backs off within 10 s");
    assert_eq!(relay.url, url);
    assert!(!relay.home);
    assert_eq!(relay.connects, 0);
    assert!(relay.error.is_some_and(|e| !e.is_empty()));
    std::fs::remove_dir_all(&dir).unwrap();
}

const CHILD_SOCKET: &str = "BURROW_API_TEST_CHILD_SOCKET";

/// Run by [`another_user_is_refused`] in a child process (as another uid): calls the API at
/// the socket it is given and prints what happened.
#[test]
#[ignore = "a child process of another_user_is_refused runs it"]
fn child_client() {
    let Some(socket) = std::env::var_os(CHILD_SOCKET) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let outcome = match rt.block_on(ApiClient::unix(socket).status()) {
        Ok(_) => "ok".to_string(),
        Err(ClientError::Api { code, .. }) => format!("refused {code}"),
        Err(ClientError::Connect { source, .. }) => format!("connect {:?}", source.kind()),
        Err(e) => format!("other {e}"),
    };
    println!("OUTCOME {outcome}");
}

/// Runs [`child_client`] against `socket` as `uid` (or as ourselves).
fn run_child(socket: &Path, uid: Option<u32>) -> String {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child_client", "--ignored", "--nocapture"])
        .env(CHILD_SOCKET, socket);
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
    let out = cmd.output().expect("the test binary runs as a child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("OUTCOME "))
        .unwrap_or_else(|| {
            panic!(
                "no outcome from the child: {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .to_string()
}

#[tokio::test]
async fn another_user_is_refused() {
    if euid() != 0 {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root: this test must run"
        );
        eprintln!("skipped: needs root, to run a client as another user");
        return;
    }
    const NOBODY: u32 = 65534;
    let dir = test_dir("uid");
    let server = serve(&dir, false, daemon(endpoint(vec![]).await)).await;
    let socket = server.socket_path().to_owned();
    let run_dir = socket.parent().unwrap().to_owned();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&run_dir), 0o700);
    assert_eq!(mode(&socket), 0o600);
    // Open the socket itself, so that only its directory keeps others out...
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let child = |uid| {
        let socket = socket.clone();
        tokio::task::spawn_blocking(move || run_child(&socket, uid))
    };
    assert_eq!(child(None).await.unwrap(), "ok", "the child's client works");
    assert_eq!(
        child(Some(NOBODY)).await.unwrap(),
        "connect PermissionDenied"
    );
    // ...then the directory too: now only the credential check stands in the way.
    std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(child(Some(NOBODY)).await.unwrap(), "refused forbidden_user");
    assert_eq!(child(None).await.unwrap(), "ok", "root still may");
    server.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

fn euid() -> u32 {
    // SAFETY: geteuid takes nothing and cannot fail.
    unsafe { libc::geteuid() }
}

#[tokio::test]
async fn web_pages_are_refused_on_both_listeners_and_tcp_needs_the_token_and_host() {
    let dir = test_dir("web");
    let server = serve(&dir, true, daemon(endpoint(vec![]).await)).await;
    let token = Token::read(&dir.join("state").join("api-token")).expect("the token file");
    let port = server.tcp_addr().unwrap().port();
    let good = format!(
        "Host: 127.0.0.1:{port}\r\nAuthorization: Bearer {}\r\n",
        token.as_str()
    );
    let get =
        |headers: &str| format!("GET /v1/status HTTP/1.1\r\n{headers}Connection: close\r\n\r\n");

    for h in [
        "Origin: http://example.com\r\n",
        "Referer: http://example.com/page\r\n",
    ] {
        let r = unix(&server, &get(&format!("Host: localhost\r\n{h}"))).await;
        assert_eq!((r.status, r.code()), (403, "forbidden_origin"), "unix {h}");
        let r = tcp(&server, &get(&format!("{good}{h}"))).await;
        assert_eq!((r.status, r.code()), (403, "forbidden_origin"), "tcp {h}");
    }
    let r = unix(&server, &get("Host: localhost\r\n")).await;
    assert_eq!(r.status, 200, "{}", r.json);

    let r = tcp(&server, &get(&format!("Host: 127.0.0.1:{port}\r\n"))).await;
    assert_eq!((r.status, r.code()), (401, "unauthorized"));
    assert!(r.head.contains("www-authenticate: bearer"), "{}", r.head);
    let wrong = format!(
        "Host: 127.0.0.1:{port}\r\nAuthorization: Bearer {}x\r\n",
        token.as_str()
    );
    let r = tcp(&server, &get(&wrong)).await;
    assert_eq!((r.status, r.code()), (401, "unauthorized"));
    let r = tcp(&server, &get(&good)).await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert!(r.json["node_id"].is_string(), "{}", r.json);
    let localhost = good.replace("127.0.0.1", "localhost");
    assert_eq!(tcp(&server, &get(&localhost)).await.status, 200);
    // A page whose DNS name points at 127.0.0.1 sends its own name.
    let rebound = good.replace("127.0.0.1", "attacker.example");
    let r = tcp(&server, &get(&rebound)).await;
    assert_eq!((r.status, r.code()), (403, "forbidden_host"));

    let client = ApiClient::tcp(server.tcp_addr().unwrap(), token);
    assert!(client.status().await.is_ok());
    let no_token = ApiClient::tcp(
        server.tcp_addr().unwrap(),
        Token::load_or_create(&dir.join("other-token")).unwrap(),
    );
    let err = no_token.status().await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unauthorized), "{err}");
    let err = no_token.events().await.unwrap_err();
    assert_eq!(
        err.code(),
        Some(ErrorCode::Unauthorized),
        "the events too: {err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn limits_and_unknown_routes_answer_in_json() {
    let dir = test_dir("limits");
    let server = serve(&dir, false, daemon(endpoint(vec![]).await)).await;

    let big = "x".repeat(MAX_BODY + 1);
    let r = unix(
        &server,
        &format!("POST /v1/ping HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{big}", big.len()),
    )
    .await;
    assert_eq!((r.status, r.code()), (413, "payload_too_large"));
    // Without a length up front: cut off once it passes the limit.
    let chunked = format!("{:x}\r\n{big}\r\n0\r\n\r\n", big.len());
    let r = unix(
        &server,
        &format!("POST /v1/ping HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{chunked}"),
    )
    .await;
    assert_eq!((r.status, r.code()), (413, "payload_too_large"));

    let r = unix(
        &server,
        "GET /v1/nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!((r.status, r.code()), (404, "not_found"));
    assert!(
        r.head.contains("content-type: application/json"),
        "{}",
        r.head
    );
    let r = unix(
        &server,
        "GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!((r.status, r.code()), (404, "not_found"), "unversioned");
    let r = unix(
        &server,
        "DELETE /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!((r.status, r.code()), (405, "method_not_allowed"));
    assert!(r.head.contains("allow: get"), "{}", r.head);
    let r = unix(
        &server,
        "GET /v1/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!((r.status, r.code()), (400, "bad_request"), "not an upgrade");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn the_events_websocket_delivers_what_the_daemon_publishes() {
    timeout(Duration::from_secs(30), async {
        let dir = test_dir("events");
        let (a, b) = (endpoint(vec![]).await, endpoint(vec![]).await);
        let state = daemon(a.clone());
        let server = serve(&dir, true, state.clone()).await;
        let token = Token::read(&dir.join("state").join("api-token")).unwrap();
        let mut over_unix = ApiClient::unix(server.socket_path())
            .events()
            .await
            .unwrap();
        let mut over_tcp = ApiClient::tcp(server.tcp_addr().unwrap(), token)
            .events()
            .await
            .unwrap();

        let up = Event::PeerUp {
            node_id: b.node_id(),
            path: PathView {
                path: PathKind::Relay,
                remote_addr: None,
                rtt_ms: None,
            },
        };
        state.events.send(up.clone()).unwrap();
        assert_eq!(over_unix.next().await.unwrap().unwrap(), up);
        assert_eq!(over_tcp.next().await.unwrap().unwrap(), up);

        // The endpoint's own path changes, published by the watcher.
        let watcher = burrow::api::watch_paths(a.clone(), state.events.clone());
        let _conn = a.connect(&b.ticket(), tool::ALPN).await.expect("connects");
        let b_addr = b.local_addr().unwrap().to_string();
        loop {
            match over_unix.next().await.unwrap().unwrap() {
                Event::PathChanged { node_id, path } if path.path == PathKind::Direct => {
                    assert_eq!(node_id, b.node_id());
                    assert_eq!(path.remote_addr.as_deref(), Some(b_addr.as_str()));
                    break;
                }
                other => eprintln!("before the direct path: {other:?}"),
            }
        }
        watcher.abort();

        // Shutdown closes the streams and removes the socket.
        let socket = server.socket_path().to_owned();
        server.shutdown().await;
        for stream in [&mut over_unix, &mut over_tcp] {
            while let Some(e) = stream.next().await {
                e.expect("events until the close frame");
            }
        }
        assert!(!socket.exists(), "the socket file is removed on exit");
        a.close().await;
        b.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
    })
    .await
    .expect("within 30 s");
}

#[tokio::test]
async fn a_stale_socket_is_replaced_and_a_live_one_refused() {
    let dir = test_dir("stale");
    let state = daemon(endpoint(vec![]).await);
    let first = serve(&dir, false, state.clone()).await;
    let config = ApiConfig {
        socket: first.socket_path().to_owned(),
        tcp: None,
    };
    let err = ApiServer::bind(&config, Router::new(), state.clone())
        .await
        .expect_err("a daemon answers there");
    assert!(
        matches!(err, ServeError::AlreadyRunning { pid: Some(p), .. } if p as u32 == std::process::id()),
        "{err}"
    );
    assert!(
        err.to_string().starts_with(&format!(
            "a daemon is already running (pid {})",
            std::process::id()
        )),
        "{err}"
    );
    assert!(
        ApiClient::unix(&config.socket).status().await.is_ok(),
        "the first one is untouched"
    );
    drop(first);
    assert!(
        !config.socket.exists(),
        "dropped, the server removes its socket"
    );

    // A daemon that died without cleaning up: its socket file stays, and nobody answers.
    drop(std::os::unix::net::UnixListener::bind(&config.socket).unwrap());
    assert!(config.socket.exists());
    let err = ApiClient::unix(&config.socket).status().await.unwrap_err();
    assert!(matches!(err, ClientError::NoDaemon { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "no burrow daemon at {}: run `burrow up`",
            config.socket.display()
        )
    );
    let second = ApiServer::bind(&config, Router::new(), state.clone())
        .await
        .expect("the stale socket is replaced");
    assert!(ApiClient::unix(&config.socket).status().await.is_ok());
    drop(second);

    std::fs::write(&config.socket, "not a socket").unwrap();
    let err = ApiServer::bind(&config, Router::new(), state.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, ServeError::NotASocket { .. }), "{err}");
    assert!(config.socket.exists(), "left alone");

    std::fs::remove_file(&config.socket).unwrap();
    let err = ApiClient::unix(&config.socket).status().await.unwrap_err();
    assert!(matches!(err, ClientError::NoDaemon { .. }), "{err}");

    // A socket directory others may enter is refused.
    let run_dir = config.socket.parent().unwrap();
    std::fs::set_permissions(run_dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    let err = ApiServer::bind(&config, Router::new(), state)
        .await
        .unwrap_err();
    assert!(matches!(err, ServeError::Dir(_)), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
