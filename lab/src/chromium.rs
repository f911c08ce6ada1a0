//! Headless Chromium running one page to its verdict, on this machine or on a lab host.
//!
//! Chromium's `--dump-dom` prints the page at its load event, and `--virtual-time-budget` does
//! not wait for WebSocket traffic (virtual time races ahead while a socket is open), so the page
//! holds its own load event: it loads an image from `/hold` of the server that serves it, which
//! answers only once the page asks `/release`, after writing its verdict into
//! `<pre id="result">`. The page is served over HTTP (`/page`), so it has an origin of its own
//! (IndexedDB, CORS) like any deployed page. Each run has a server of its own, so pages can run
//! side by side (from threads) and release on their own.
//!
//! Needs Debian's `chromium` (`/usr/bin/chromium`, which `./test.sh` installs as root). Without
//! it a test skips and says so, except under CI (CI set), where a skip is a failure.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};

use crate::Lab;

/// Where Debian installs Chromium.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Chromium is killed, and the run fails, if it has not printed the page by then.
const HARD_TIMEOUT: Duration = Duration::from_secs(60);
/// Chromium's own `--timeout`: it stops waiting for the load event and dumps what it has, so a
/// hung page still shows its state before the hard timeout.
const LOAD_TIMEOUT_MS: u64 = 40_000;
/// How often the page server looks for a new connection.
const ACCEPT_POLL: Duration = Duration::from_millis(10);
/// How long a request to the page server may take to arrive whole.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether Chromium is there (a skip is said; under CI its absence is a failure).
pub fn chromium_present() -> bool {
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
pub struct Run {
    /// The text of `<pre id="result">`.
    pub verdict: String,
    /// The whole dumped document, for failure messages.
    pub dom: String,
    /// Chromium's log, for failure messages.
    pub log: String,
    /// From Chromium's start to its exit.
    pub elapsed: Duration,
}

impl Run {
    /// Panics (failing the test), with the page and Chromium's log, unless the verdict starts
    /// with `ok`.
    pub fn expect_ok(&self, ok: &str) {
        assert!(
            self.verdict.starts_with(ok),
            "page verdict: {}\n--- dumped DOM ---\n{}\n--- chromium log ---\n{}",
            self.verdict,
            self.dom,
            self.log
        );
    }
}

/// Serves `html` (in which `__SERVER__` becomes the server's `http://IP:PORT`) on loopback to
/// a fresh headless Chromium on this machine, and returns its verdict once it released its load
/// event.
pub fn run_page(html: &str) -> Result<Run> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).context("binding the page server")?;
    run(listener, Command::new(CHROMIUM), html, false)
}

impl Lab {
    /// Like [`run_page`], with the page server on `server_ip` in the lab's server namespace
    /// `server` and Chromium on the host of `home`, so the page's traffic crosses that home's
    /// NAT. The page's origin counts as secure (WebCrypto needs one; a deployed page would be
    /// served over HTTPS), and host candidates are not hidden behind mDNS names, so a page's ICE
    /// candidates show the lab's addresses.
    pub fn run_page(
        &self,
        home: &str,
        server: &str,
        server_ip: Ipv4Addr,
        html: &str,
    ) -> Result<Run> {
        let listener = self.in_ns(self.server_ns(server), || {
            TcpListener::bind((server_ip, 0)).context("binding the page server")
        })?;
        let host = self.host_ns(home).to_string();
        self.check_own_ns(&host)?;
        let chromium = crate::netns::ns_command(&host, CHROMIUM)?;
        run(listener, chromium, html, true)
    }
}

fn run(listener: TcpListener, mut cmd: Command, html: &str, lab_host: bool) -> Result<Run> {
    let addr = listener.local_addr()?;
    let server = format!("http://{addr}");
    if lab_host {
        cmd.arg(format!(
            "--unsafely-treat-insecure-origin-as-secure={server}"
        ))
        .arg("--disable-features=WebRtcHideLocalIpsWithMdns");
    }
    let html = Arc::new(html.replace("__SERVER__", &server));
    let released: Released = Arc::default();
    let serving = {
        let released = released.clone();
        std::thread::spawn(move || serve(listener, html, released))
    };

    let dir = TempDir::new("chromium")?;
    let stdout_path = dir.0.join("dom.html");
    let stderr_path = dir.0.join("chromium.log");
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
    .stdout(fs::File::create(&stdout_path)?)
    .stderr(fs::File::create(&stderr_path)?);
    let launched = Instant::now();
    let mut browser = Browser(cmd.spawn().context("spawning chromium")?);
    let status = loop {
        if let Some(status) = browser.0.try_wait()? {
            break status;
        }
        if launched.elapsed() > HARD_TIMEOUT {
            let log = fs::read_to_string(&stderr_path).unwrap_or_default();
            bail!("chromium still running after {HARD_TIMEOUT:?}; its log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let elapsed = launched.elapsed();
    drop(browser);
    // Unblocks a /hold still waiting (the page died before its release) and ends the server.
    release(&released);
    let _ = serving.join();
    let dom = fs::read_to_string(&stdout_path).unwrap_or_default();
    let log = fs::read_to_string(&stderr_path).unwrap_or_default();
    let verdict = dom
        .split_once("<pre id=\"result\">")
        .and_then(|(_, rest)| rest.split_once("</pre>"))
        .map_or("no verdict in the dumped page", |(v, _)| v)
        .to_string();
    eprintln!("chromium exited with {status} after {elapsed:?}: {verdict}");
    Ok(Run {
        verdict,
        dom,
        log,
        elapsed,
    })
}

type Released = Arc<(Mutex<bool>, Condvar)>;

fn release(released: &Released) {
    *released.0.lock().expect("lock") = true;
    released.1.notify_all();
}

/// `GET /page` is the page; `GET /hold` is answered only after `GET /release`; both of those
/// with an empty 204. Ends once released. The listener is polled, not blocked on: nothing may
/// connect to it to wake it (from this machine's namespace a lab address is not ours to reach).
fn serve(listener: TcpListener, html: Arc<String>, released: Released) {
    if listener.set_nonblocking(true).is_err() {
        return;
    }
    while !*released.0.lock().expect("lock") {
        let conn = match listener.accept() {
            Ok((conn, _)) => conn,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(ACCEPT_POLL);
                continue;
            }
            Err(_) => continue,
        };
        if conn.set_nonblocking(false).is_err() {
            continue;
        }
        let html = html.clone();
        let released = released.clone();
        std::thread::spawn(move || {
            let Some((mut conn, path)) = read_request(conn) else {
                return;
            };
            let answer = match path.as_str() {
                "/page" => format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{html}",
                    html.len()
                ),
                "/release" => {
                    release(&released);
                    "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n".into()
                }
                _ => {
                    let (lock, cvar) = &*released;
                    let _held = cvar
                        .wait_while(lock.lock().expect("lock"), |released| !*released)
                        .expect("lock");
                    "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n".into()
                }
            };
            let _ = conn.write_all(answer.as_bytes());
        });
    }
}

/// Reads an HTTP request head; returns the connection and the request path.
fn read_request(mut conn: TcpStream) -> Option<(TcpStream, String)> {
    conn.set_read_timeout(Some(REQUEST_TIMEOUT)).ok()?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf).ok()?;
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
        // SAFETY: a plain syscall; the group is the one this Chromium was started in (its pid).
        unsafe {
            libc::kill(-(self.0.id() as i32), libc::SIGKILL);
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> Result<TempDir> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|e| anyhow!("clock before 1970: {e}"))?
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("burrow-{what}-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
