//! Processes in a lab: commands run inside its namespaces, [`Spawned`] background processes
//! with their logs, and the lab's tracking of what it started.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};

use crate::{netns, Lab};

/// Runs `cmd` with stdout and stderr captured (stdin from /dev/null) and returns its output;
/// kills it and fails if it runs longer than `timeout`. Several coturn tools wait forever for
/// a response that a NAT filters (e.g. `turnutils_stunclient` after its CHANGE-REQUEST), so
/// run them through this: `output_with_timeout(lab.command(ns, "turnutils_stunclient"), ..)`.
pub fn output_with_timeout(cmd: Command, timeout: Duration) -> Result<std::process::Output> {
    netns::output_with_timeout(cmd, timeout)
}

/// A process the lab started and kills on drop.
pub(crate) struct Tracked {
    pub(crate) child: Child,
    pub(crate) label: String,
    pub(crate) logs: Option<(PathBuf, PathBuf)>,
}

/// A background process started with [`Lab::spawn`]; its stdout and stderr go to files in the
/// lab's directory. The lab kills it when dropped (or with [`Lab::kill`]).
#[derive(Debug, Clone)]
pub struct Spawned {
    pid: u32,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Spawned {
    /// Process id (of the program itself: `ip netns exec` execs it in place).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// File receiving the process's stdout.
    pub fn stdout_path(&self) -> &Path {
        &self.stdout
    }

    /// File receiving the process's stderr.
    pub fn stderr_path(&self) -> &Path {
        &self.stderr
    }

    /// Everything the process wrote to stdout so far.
    pub fn stdout(&self) -> String {
        read_lossy(&self.stdout)
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        read_lossy(&self.stderr)
    }

    /// Waits until a complete stdout line satisfies `pred` and returns it. Fails after `timeout`
    /// or as soon as the process has exited without printing one.
    pub fn wait_for_line(
        &self,
        timeout: Duration,
        pred: impl FnMut(&str) -> bool,
    ) -> Result<String> {
        self.wait_for_line_in(&self.stdout, timeout, pred)
    }

    /// [`Spawned::wait_for_line`] on stderr, where servers say they are ready.
    pub fn wait_for_stderr_line(
        &self,
        timeout: Duration,
        pred: impl FnMut(&str) -> bool,
    ) -> Result<String> {
        self.wait_for_line_in(&self.stderr, timeout, pred)
    }

    fn wait_for_line_in(
        &self,
        path: &Path,
        timeout: Duration,
        mut pred: impl FnMut(&str) -> bool,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let exited = !is_alive(self.pid);
            let out = read_lossy(path);
            // Only lines ended by a newline count, so a half-written line is never returned.
            let complete = out.rfind('\n').map_or("", |i| &out[..i]);
            if let Some(line) = complete.lines().find(|l| pred(l)) {
                return Ok(line.to_string());
            }
            if exited || Instant::now() >= deadline {
                bail!(
                    "process {} {} without the expected line; stdout:\n{}\nstderr:\n{}",
                    self.pid,
                    if exited { "exited" } else { "timed out" },
                    tail(&self.stdout(), 40),
                    tail(&self.stderr(), 40)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// True while `pid` runs (a zombie counts as exited).
fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may itself contain spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

pub(crate) fn read_lossy(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

pub(crate) fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

impl Lab {
    /// `ip netns exec NS program`: add arguments, then run it as usual. Not tracked by the lab
    /// (see [`Lab::spawn`] for background processes), but killed with the lab if still running.
    pub fn command(&self, ns: &str, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).arg(program);
        cmd
    }

    /// Starts `program args..` in the background inside `ns`, with stdout and stderr going to
    /// files in [`Lab::dir`]. The lab kills it when dropped.
    pub fn spawn<I, S>(&self, ns: &str, program: impl AsRef<OsStr>, args: I) -> Result<Spawned>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.check_own_ns(ns)?;
        let program = program.as_ref();
        let mut cmd = self.command(ns, program);
        cmd.args(args);
        let seq = self.spawned.fetch_add(1, Ordering::Relaxed);
        let base = Path::new(program)
            .file_name()
            .unwrap_or(program)
            .to_string_lossy()
            .into_owned();
        let stdout = self.dir.join(format!("{seq:02}-{base}.out"));
        let stderr = self.dir.join(format!("{seq:02}-{base}.err"));
        cmd.stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout)?)
            .stderr(std::fs::File::create(&stderr)?);
        let label = format!("{base} in {ns}");
        let child = cmd.spawn().with_context(|| format!("spawning {label}"))?;
        let pid = child.id();
        self.children.lock().expect("lock").push(Tracked {
            child,
            label,
            logs: Some((stdout.clone(), stderr.clone())),
        });
        Ok(Spawned {
            pid,
            stdout,
            stderr,
        })
    }

    /// Spawns a command built by the caller (e.g. from [`Lab::command`], with its own stdio)
    /// and tracks it like [`Lab::spawn`] does; returns the pid.
    pub fn spawn_command(&self, mut cmd: Command) -> Result<u32> {
        let label = format!("{:?}", cmd.get_args().collect::<Vec<_>>());
        let child = cmd.spawn().with_context(|| format!("spawning {label}"))?;
        let pid = child.id();
        self.children.lock().expect("lock").push(Tracked {
            child,
            label,
            logs: None,
        });
        Ok(pid)
    }

    /// Kills (SIGKILL) and reaps a process started by [`Lab::spawn`] or [`Lab::spawn_command`].
    pub fn kill(&self, pid: u32) -> Result<()> {
        let mut children = self.children.lock().expect("lock");
        let i = children
            .iter()
            .position(|t| t.child.id() == pid)
            .ok_or_else(|| anyhow!("process {pid} was not started by this lab"))?;
        let mut t = children.remove(i);
        let _ = t.child.kill();
        t.child.wait()?;
        Ok(())
    }

    /// `Some(status)` once a process started by the lab has exited.
    pub fn try_wait(&self, pid: u32) -> Result<Option<ExitStatus>> {
        let mut children = self.children.lock().expect("lock");
        let t = children
            .iter_mut()
            .find(|t| t.child.id() == pid)
            .ok_or_else(|| anyhow!("process {pid} was not started by this lab"))?;
        Ok(t.child.try_wait()?)
    }

    pub(crate) fn check_own_ns(&self, ns: &str) -> Result<()> {
        ensure!(
            self.namespaces.iter().any(|n| n == ns),
            "namespace {ns:?} is not part of this lab"
        );
        Ok(())
    }

    /// Runs `f` on a new thread inside namespace `ns` and returns its result. Sockets that `f`
    /// opens (also from threads or runtimes it starts) live in that namespace, so a test can
    /// drive in-process code as if it ran on a lab host.
    pub fn in_ns<T: Send>(&self, ns: &str, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        self.check_own_ns(ns)?;
        netns::in_netns(ns, f)
    }
}
