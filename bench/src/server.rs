//! The servers under test as child processes: finding the binaries, starting them on a free
//! loopback port, waiting until they answer, reading their CPU time, and killing them.
//!
//! A [`Server`] kills its process when dropped, so every exit path of the harness (an error, a
//! panic) takes the servers down. SIGINT and SIGTERM only set a flag ([`catch_interrupts`]) that
//! the harness's waits check ([`sleep`]), so Ctrl-C also unwinds through those drops; the servers
//! run in their own process group, so a terminal's Ctrl-C reaches only the harness. And each child
//! is started with `PR_SET_PDEATHSIG`, so the kernel kills it if the harness dies anyway (SIGKILL).

use std::ffi::OsString;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::stun;

/// How much of a server's stdout+stderr is kept for error messages.
const OUTPUT_TAIL: usize = 16 * 1024;

/// A running server process; killed (and reaped) on drop.
pub(crate) struct Server {
    /// Short name used in messages and tables (`burrow`, `coturn`).
    pub name: &'static str,
    /// The UDP address it listens on.
    pub addr: SocketAddr,
    /// The command line it was started with, for the report.
    pub command: Vec<String>,
    /// The success response to the readiness probe, to show what a response looks like.
    pub sample_response: Vec<u8>,
    child: Child,
    output: Arc<Mutex<Vec<u8>>>,
    /// Files to delete once the process is gone.
    cleanup: Vec<PathBuf>,
}

impl Server {
    /// `burrow stun --listen 127.0.0.1:PORT --no-alt-port` (one port, like coturn here), plus
    /// `--threads N` if `threads` is set (else burrow's own default).
    pub(crate) fn burrow(binary: &Path, threads: Option<u32>) -> Result<Server> {
        let addr = free_udp_addr()?;
        let mut args: Vec<OsString> = vec![
            "stun".into(),
            "--listen".into(),
            addr.to_string().into(),
            "--no-alt-port".into(),
        ];
        if let Some(n) = threads {
            args.push("--threads".into());
            args.push(n.to_string().into());
        }
        Server::spawn("burrow", binary, &args, addr, Vec::new())
    }

    /// coturn's `turnserver` as a plain STUN server on `127.0.0.1:PORT`: no config file, STUN
    /// only, UDP only (no TCP, TLS or DTLS listeners), no CLI, logging to its stdout, which the
    /// harness captures. RFC 5780 is off (it needs a second IP) and FINGERPRINT on, so that its
    /// Binding responses carry the same attributes as burrow's: XOR-MAPPED-ADDRESS,
    /// MAPPED-ADDRESS, RESPONSE-ORIGIN, SOFTWARE, FINGERPRINT (the report shows both).
    /// `threads` sets `-m` (coturn's default is one UDP thread per CPU).
    pub(crate) fn coturn(binary: &Path, threads: Option<u32>) -> Result<Server> {
        let addr = free_udp_addr()?;
        let pidfile = std::env::temp_dir().join(format!(
            "burrow-bench-coturn-{}-{}.pid",
            std::process::id(),
            addr.port()
        ));
        let mut args: Vec<OsString> = [
            "-n",
            "--stun-only",
            "--listening-ip",
            "127.0.0.1",
            "--relay-ip",
            "127.0.0.1",
            "--listening-port",
            &addr.port().to_string(),
            "--no-tcp",
            "--no-tls",
            "--no-dtls",
            "--no-cli",
            "--no-rfc5780",
            "--fingerprint",
            "--log-file",
            "stdout",
            "--simple-log",
        ]
        .into_iter()
        .map(OsString::from)
        .collect();
        args.push("--pidfile".into());
        args.push(pidfile.clone().into());
        if let Some(n) = threads {
            args.push("--relay-threads".into());
            args.push(n.to_string().into());
        }
        Server::spawn("coturn", binary, &args, addr, vec![pidfile])
    }

    fn spawn(
        name: &'static str,
        binary: &Path,
        args: &[OsString],
        addr: SocketAddr,
        cleanup: Vec<PathBuf>,
    ) -> Result<Server> {
        let mut command = Command::new(binary);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        die_with_harness(&mut command);
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {name} ({})", binary.display()))?;
        let output = Arc::new(Mutex::new(Vec::new()));
        if let Some(out) = child.stdout.take() {
            drain(out, output.clone());
        }
        if let Some(err) = child.stderr.take() {
            drain(err, output.clone());
        }
        let command =
            std::iter::once(binary.as_os_str()).chain(args.iter().map(OsString::as_os_str));
        let command = command.map(|a| a.to_string_lossy().into_owned()).collect();
        Ok(Server {
            name,
            addr,
            command,
            sample_response: Vec::new(),
            child,
            output,
            cleanup,
        })
    }

    /// Waits until the server answers a Binding request with a success response whose
    /// XOR-MAPPED-ADDRESS is the probing socket's address.
    pub(crate) fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        // One socket for all attempts: binding a fresh ephemeral port per attempt could, over
        // thousands of attempts, grab the very port the server is about to bind.
        let socket =
            UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).context("binding the probe socket")?;
        socket.connect(self.addr)?;
        let local = socket.local_addr()?;
        let deadline = Instant::now() + timeout;
        loop {
            check_interrupted()?;
            self.check_running()?;
            let Some(response) = stun::probe(&socket, Duration::from_millis(100))? else {
                if Instant::now() >= deadline {
                    bail!(
                        "{} did not answer a STUN Binding request on {} within {timeout:?}{}",
                        self.name,
                        self.addr,
                        self.output_tail()
                    );
                }
                continue;
            };
            // `probe` only returns responses whose header parsed.
            let ty = stun::parse_header(&response).map_or(0, |(ty, _)| ty);
            if ty != stun::BINDING_SUCCESS {
                bail!("{} answered a Binding request with message type {ty:#06x}, not 0x0101 (success)", self.name);
            }
            match stun::xor_mapped_address(&response) {
                Some(mapped) if mapped == local => {
                    self.sample_response = response;
                    return Ok(());
                }
                mapped => {
                    let got = mapped
                        .map_or_else(|| "no XOR-MAPPED-ADDRESS".to_string(), |m| m.to_string());
                    bail!(
                        "{} answered a Binding request from {local} with {got}; expected {local}",
                        self.name
                    );
                }
            }
        }
    }

    /// Errors if the process has exited.
    pub(crate) fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => Err(self.exited(status)),
        }
    }

    fn exited(&self, status: ExitStatus) -> anyhow::Error {
        anyhow!(
            "{} exited unexpectedly ({status}){}",
            self.name,
            self.output_tail()
        )
    }

    /// User plus system CPU time the process (all its threads) has used so far.
    pub(crate) fn cpu_time(&self) -> Result<Duration> {
        cpu_time(&format!("/proc/{}/stat", self.child.id()))
            .with_context(|| format!("reading {}'s CPU time", self.name))
    }

    /// The first line of the server's output containing `needle`, if any (e.g. a version banner).
    pub(crate) fn output_line(&self, needle: &str) -> Option<String> {
        let output = self.output.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&output)
            .lines()
            .find(|l| l.contains(needle))
            .map(|l| l.trim().to_string())
    }

    fn output_tail(&self) -> String {
        let output = self.output.lock().unwrap_or_else(|e| e.into_inner());
        let text = String::from_utf8_lossy(&output);
        let lines: Vec<&str> = text.lines().collect();
        if lines.is_empty() {
            return "; it printed nothing".to_string();
        }
        let tail = &lines[lines.len().saturating_sub(30)..];
        format!("; its last output:\n    {}", tail.join("\n    "))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for path in &self.cleanup {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Has the kernel kill the child `command` starts (SIGKILL) if the harness dies first.
pub(crate) fn die_with_harness(command: &mut Command) {
    // SAFETY: prctl is async-signal-safe, and the closure touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_signal: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Makes SIGINT and SIGTERM set a flag instead of killing the harness, so that it can stop at
/// its next [`sleep`] and kill its servers on the way out.
pub(crate) fn catch_interrupts() {
    let handler = on_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

/// Errors if SIGINT or SIGTERM has arrived.
pub(crate) fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps for `duration`, but returns an error within 50 ms of SIGINT or SIGTERM.
pub(crate) fn sleep(duration: Duration) -> Result<()> {
    let end = Instant::now() + duration;
    loop {
        check_interrupted()?;
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// Copies a child's output pipe into `sink`, keeping only the last [`OUTPUT_TAIL`] bytes.
fn drain(mut pipe: impl Read + Send + 'static, sink: Arc<Mutex<Vec<u8>>>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = pipe.read(&mut buf) {
            let mut out = sink.lock().unwrap_or_else(|e| e.into_inner());
            out.extend_from_slice(&buf[..n]);
            if out.len() > 2 * OUTPUT_TAIL {
                let excess = out.len() - OUTPUT_TAIL;
                out.drain(..excess);
            }
        }
    });
}

/// A loopback UDP address no socket is bound to right now (the kernel picks the port).
fn free_udp_addr() -> Result<SocketAddr> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free UDP port")?;
    Ok(socket.local_addr()?)
}

/// CPU time of the harness process itself (all threads), to show the load generator's share.
pub(crate) fn own_cpu_time() -> Result<Duration> {
    cpu_time("/proc/self/stat")
}

/// CPU time of process `pid` (all threads).
pub(crate) fn pid_cpu_time(pid: u32) -> Result<Duration> {
    cpu_time(&format!("/proc/{pid}/stat"))
}

/// utime + stime from a `/proc/<pid>/stat` file (fields 14 and 15, in clock ticks).
fn cpu_time(stat_path: &str) -> Result<Duration> {
    let stat =
        std::fs::read_to_string(stat_path).with_context(|| format!("reading {stat_path}"))?;
    // The command name (field 2) is in parentheses and may contain spaces: split after it.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so field N is fields[N - 3].
    let ticks = |n: usize| -> Result<u64> { Ok(fields.get(n - 3).context("short stat")?.parse()?) };
    let total = ticks(14)? + ticks(15)?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|&hz| hz > 0).unwrap_or(100);
    Ok(Duration::from_nanos(total * 1_000_000_000 / hz))
}

/// The `burrow` binary: `explicit` if given, else the sibling of this executable
/// (`target/release/burrow` when run through `cargo run --release`).
pub(crate) fn find_burrow(explicit: Option<&Path>) -> Result<PathBuf> {
    const BUILD: &str = "build it with `cargo build --release -p burrow-cli`, pass --burrow PATH, or use --only coturn";
    if let Some(path) = explicit {
        if !path.is_file() {
            bail!("--burrow {}: no such file", path.display());
        }
        return Ok(path.to_path_buf());
    }
    let exe = std::env::current_exe().context("locating the harness executable")?;
    let path = exe.with_file_name("burrow");
    if !path.is_file() {
        bail!("burrow binary not found at {}; {BUILD}", path.display());
    }
    Ok(path)
}

/// `name` as given if it contains a slash, else its first match on `$PATH`.
pub(crate) fn find_on_path(name: &Path, hint: &str) -> Result<PathBuf> {
    if name.components().count() > 1 {
        if name.is_file() {
            return Ok(name.to_path_buf());
        }
        bail!("{}: no such file; {hint}", name.display());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("{} not found on PATH; {hint}", name.display()))
}
