//! A mesh node's home: its own XDG directories (state, runtime, config), so that every node of
//! the benchmark has its own key, mesh state and API socket, as `MeshHome` in the CLI's tests;
//! child processes that live in one; and the node's local API as the harness reads it.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use burrow::api::ApiClient;
use serde::Deserialize;

/// One node's directories, removed on drop.
pub(crate) struct MeshHome {
    root: PathBuf,
}

impl MeshHome {
    /// A fresh home `label` under `parent`: `run` (0700, the API socket's parent), `state`
    /// and `config`.
    pub(crate) fn new(parent: &Path, label: &str) -> Result<MeshHome> {
        let root = parent.join(label);
        let _ = std::fs::remove_dir_all(&root);
        for dir in ["run", "state", "config"] {
            std::fs::create_dir_all(root.join(dir))
                .with_context(|| format!("creating {}", root.join(dir).display()))?;
        }
        std::fs::set_permissions(root.join("run"), std::fs::Permissions::from_mode(0o700))?;
        Ok(MeshHome { root })
    }

    /// The variables that put a `burrow` process in this home.
    pub(crate) fn env(&self) -> [(&'static str, PathBuf); 3] {
        [
            ("XDG_RUNTIME_DIR", self.root.join("run")),
            ("XDG_STATE_HOME", self.root.join("state")),
            ("XDG_CONFIG_HOME", self.root.join("config")),
        ]
    }

    /// The same as `NAME=VALUE` arguments of `env(1)`, for commands started through a wrapper
    /// (`ip netns exec NS env ... burrow ...`), which hands its environment on.
    pub(crate) fn env_args(&self) -> Vec<OsString> {
        self.env()
            .into_iter()
            .map(|(k, v)| {
                let mut a = OsString::from(format!("{k}="));
                a.push(v);
                a
            })
            .collect()
    }

    /// A file or directory in this home.
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
}

impl Drop for MeshHome {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A child process of the harness (on loopback, no lab) with its output in files; killed when
/// dropped, and by the kernel if the harness dies.
pub(crate) struct Proc {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Proc {
    /// Starts `burrow args` in `home`, its output going to `label`.out/.err there.
    pub(crate) fn spawn(
        burrow: &Path,
        home: &MeshHome,
        label: &str,
        args: &[&str],
    ) -> Result<Proc> {
        let (stdout, stderr) = (
            home.path(&format!("{label}.out")),
            home.path(&format!("{label}.err")),
        );
        let mut cmd = Command::new(burrow);
        cmd.args(args)
            .envs(home.env())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout)?)
            .stderr(std::fs::File::create(&stderr)?);
        crate::server::die_with_harness(&mut cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting burrow {}", args.join(" ")))?;
        Ok(Proc {
            child,
            stdout,
            stderr,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The first complete stdout line that `pred` accepts, within `timeout`.
    pub(crate) fn wait_for_line(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            crate::server::check_interrupted()?;
            let lines = self.lines();
            if let Some(line) = lines.iter().find(|l| pred(l)) {
                return Ok(line.clone());
            }
            let exited = self.child.try_wait()?;
            if exited.is_some() || Instant::now() >= deadline {
                let err = std::fs::read_to_string(&self.stderr).unwrap_or_default();
                bail!(
                    "{} without the line expected; stdout: {}; stderr: {err}",
                    exited.map_or("timed out".to_string(), |s| format!("exited ({s})")),
                    lines.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Asks it to stop (SIGTERM) and waits for it, killing it after `patience`.
    pub(crate) fn terminate(mut self, patience: Duration) -> Result<()> {
        let pid = libc::pid_t::try_from(self.child.id())?;
        // SAFETY: a plain syscall, on our own child, which has not been reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + patience;
        while self.child.try_wait()?.is_none() {
            if Instant::now() >= deadline {
                bail!("pid {pid} did not stop within {patience:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Every complete stdout line so far.
    pub(crate) fn lines(&self) -> Vec<String> {
        let out = std::fs::read_to_string(&self.stdout).unwrap_or_default();
        let complete = out.rfind('\n').map_or("", |i| &out[..i]);
        complete.lines().map(str::to_string).collect()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a one-shot `burrow` command (already given its arguments and home) within `timeout`,
/// and returns the JSON object it printed.
pub(crate) fn run_json(cmd: Command, timeout: Duration) -> Result<serde_json::Value> {
    let what = format!("{:?}", cmd.get_args().collect::<Vec<_>>());
    let out = burrow_lab::output_with_timeout(cmd, timeout)?;
    ensure!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rfind(|l| l.starts_with('{'))
        .with_context(|| format!("{what} printed no JSON: {text}"))?;
    serde_json::from_str(line).with_context(|| format!("{what} printed {line}"))
}

/// The API socket a `burrow up --json` says it serves, from its first line.
pub(crate) fn api_of_up(line: &str) -> Result<ApiClient> {
    let v: serde_json::Value = serde_json::from_str(line).with_context(|| line.to_string())?;
    ensure!(v["event"] == "up", "burrow up printed {line}");
    let socket = v["api"].as_str().context("no api in burrow up's line")?;
    Ok(ApiClient::unix(socket).with_timeout(Duration::from_secs(5)))
}

/// A member as `GET /v1/members` shows it.
#[derive(Debug, Deserialize)]
pub(crate) struct Member {
    pub node_id: String,
    pub me: bool,
    pub online: bool,
    pub path: Option<String>,
}

#[derive(Deserialize)]
struct Members {
    members: Vec<Member>,
}

/// The members the daemon behind `api` lists.
pub(crate) async fn members(api: &ApiClient) -> Result<Vec<Member>> {
    let m: Members = api.get("/v1/members").await?;
    Ok(m.members)
}

/// A fresh invite token from the daemon behind `api` (one use, a day).
pub(crate) async fn invite(api: &ApiClient) -> Result<String> {
    let v: serde_json::Value = api.post("/v1/invites", &serde_json::json!({})).await?;
    Ok(v["token"].as_str().context("no token")?.to_string())
}
