//! Headless Chromium running one page to its verdict.
//!
//! Chromium's `--dump-dom` prints the page at its load event, and `--virtual-time-budget` does
//! not wait for WebSocket traffic (virtual time races ahead while a socket is open), so the page
//! holds its own load event: it loads an image from `/hold` of the loopback server that serves
//! it, which answers only once the page asks `/release`, after writing its verdict into
//! `<pre id="result">`. The page is served over HTTP (`/page`), so it has an origin of its own
//! (IndexedDB, CORS) like any deployed page.
//!
//! Needs Debian's `chromium` (`/usr/bin/chromium`, which `./test.sh` installs as root). Without
//! it a test skips and says so, except under CI (CI set), where a skip is a failure.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const CHROMIUM: &str = "/usr/bin/chromium";
/// Chromium is killed, and the test fails, if it has not printed the page by then.
const HARD_TIMEOUT: Duration = Duration::from_secs(60);
/// Chromium's own `--timeout`: it stops waiting for the load event and dumps what it has, so a
/// hung page still shows its state before the hard timeout.
const LOAD_TIMEOUT_MS: u64 = 40_000;

/// Whether Chromium is there (a skip is said; under CI its absence is a failure).
pub(crate) fn chromium_present() -> bool {
    if Path::new(CHROMIUM).exists() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{CHROMIUM} not installed: CI must run the browser tests (./test.sh installs it)");
    }
    eprintln!("SKIPPED: chromium not installed");
    false
}

/// What a page ended with.
pub(crate) struct Run {
    /// The text of `<pre id="result">`.
    pub verdict: String,
    /// The whole dumped document and Chromium's log, for failure messages.
    dom: String,
    log: String,
}

impl Run {
    /// Fails the test, with the page and Chromium's log, unless the verdict starts `ok`.
    pub(crate) fn expect_ok(&self, ok: &str) {
        assert!(
            self.verdict.starts_with(ok),
            "page verdict: {}\n--- dumped DOM ---\n{}\n--- chromium log ---\n{}",
            self.verdict,
            self.dom,
            self.log
        );
    }
}

/// Serves `html` (in which `__SERVER__` becomes the server's `http://IP:PORT`) to a fresh
/// headless Chromium and returns its verdict once it released its load event.
pub(crate) async fn run_page(html: &str) -> Run {
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind page server");
    let server = format!("http://{}", listener.local_addr().unwrap());
    let html = Arc::new(html.replace("__SERVER__", &server));
    let serving = tokio::spawn(serve(listener, html));

    let dir = TempDir::new("chromium");
    let stdout_path = dir.0.join("dom.html");
    let stderr_path = dir.0.join("chromium.log");
    let mut cmd = Command::new(CHROMIUM);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ])
    .arg(format!("--timeout={LOAD_TIMEOUT_MS}"))
    .arg(format!(
        "--user-data-dir={}",
        dir.0.join("profile").display()
    ))
    .arg("--dump-dom")
    .arg(format!("{server}/page"))
    // Crashpad and dconf write under $HOME whatever the --user-data-dir: keep them in ours.
    .env("HOME", &dir.0)
    .env("XDG_CONFIG_HOME", dir.0.join("config"))
    .env("XDG_CACHE_HOME", dir.0.join("cache"))
    .process_group(0)
    .stdin(Stdio::null())
    .stdout(fs::File::create(&stdout_path).expect("create stdout file"))
    .stderr(fs::File::create(&stderr_path).expect("create stderr file"));
    let launched = Instant::now();
    let mut browser = Browser(cmd.spawn().expect("spawn chromium"));
    let deadline = Instant::now() + HARD_TIMEOUT;
    let status = loop {
        if let Some(status) = browser.0.try_wait().expect("wait for chromium") {
            break status;
        }
        if Instant::now() > deadline {
            let log = fs::read_to_string(&stderr_path).unwrap_or_default();
            panic!("chromium still running after {HARD_TIMEOUT:?}; its log:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    drop(browser);
    serving.abort();
    let dom = fs::read_to_string(&stdout_path).unwrap_or_default();
    let log = fs::read_to_string(&stderr_path).unwrap_or_default();
    let verdict = dom
        .split_once("<pre id=\"result\">")
        .and_then(|(_, rest)| rest.split_once("</pre>"))
        .map_or("no verdict in the dumped page", |(v, _)| v)
        .to_string();
    eprintln!(
        "chromium exited with {status} after {:?}: {verdict}",
        launched.elapsed()
    );
    Run { verdict, dom, log }
}

/// `GET /page` is the page; `GET /hold` is answered only after `GET /release`; both of those
/// with an empty 204.
async fn serve(listener: TcpListener, html: Arc<String>) {
    let (released_tx, released_rx) = watch::channel(false);
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            return;
        };
        let released_tx = released_tx.clone();
        let mut released_rx = released_rx.clone();
        let html = html.clone();
        tokio::spawn(async move {
            let Some((mut conn, path)) = read_request(conn).await else {
                return;
            };
            let answer = match path.as_str() {
                "/page" => format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{html}",
                    html.len()
                ),
                "/release" => {
                    released_tx.send_replace(true);
                    "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n".into()
                }
                _ => {
                    let _ = released_rx.wait_for(|&r| r).await;
                    "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n".into()
                }
            };
            let _ = conn.write_all(answer.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}

/// Reads an HTTP request head; returns the connection and the request path.
async fn read_request(mut conn: TcpStream) -> Option<(TcpStream, String)> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf).await.ok()?;
        if n == 0 || head.len() > 16 * 1024 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let path = line.split_whitespace().nth(1)?.to_string();
    Some((conn, path))
}

/// A running Chromium in its own process group, all of it killed on drop: its zygote and
/// renderers outlive a killed browser process by seconds.
struct Browser(Child);

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -KILL -- -{} 2>/dev/null", self.0.id()))
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("burrow-{what}-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
