//! Low-level namespace plumbing: running `ip` batches, entering a namespace from a thread or a
//! child process, finding and killing processes inside namespaces, sweeping stale labs.
//!
//! Safety: every namespace name that reaches `ip` is checked to carry the project prefix, every
//! batch that runs in the root namespace may only add or delete such namespaces, and every `link`
//! command in a namespace batch may only name `bw-` interfaces (or `lo`).

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Prefix of every namespace and interface the lab creates.
pub(crate) const PREFIX: &str = "bw-";

/// Directory where `ip netns` keeps its namespace files.
const NETNS_DIR: &str = "/run/netns";

pub(crate) fn netns_path(ns: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(ns)
}

/// Refuses any namespace name without the project prefix, so a bug can never make the lab act on
/// a namespace (or, through an empty name, the root namespace) it does not own.
pub(crate) fn check_ns_name(ns: &str) -> Result<()> {
    let ok = ns.starts_with(PREFIX)
        && ns.len() > PREFIX.len()
        && ns
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok {
        bail!("refusing to touch namespace {ns:?}: not a lab namespace");
    }
    Ok(())
}

/// Checks a batch for the root namespace: only `netns add|del <lab namespace>` lines.
fn check_root_batch(script: &str) -> Result<()> {
    for line in script.lines().filter(|l| !l.trim().is_empty()) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["netns", "add" | "del", ns] => check_ns_name(ns)?,
            _ => bail!("refusing root-namespace ip command {line:?}"),
        }
    }
    Ok(())
}

/// Checks a batch for a lab namespace: `link` lines may only name `bw-` interfaces or `lo`, and
/// may only move peers into lab namespaces.
fn check_ns_batch(script: &str) -> Result<()> {
    for line in script.lines().filter(|l| !l.trim().is_empty()) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() != Some(&"link") {
            continue;
        }
        let dev = match words.get(1) {
            Some(&"add") | Some(&"set") | Some(&"del") => words.get(2).copied(),
            _ => None,
        };
        let mut names: Vec<&str> = dev.into_iter().collect();
        for pair in words.windows(2) {
            if pair[0] == "name" || pair[0] == "dev" {
                names.push(pair[1]);
            }
            if pair[0] == "netns" {
                check_ns_name(pair[1])?;
            }
        }
        if names.is_empty() {
            bail!("refusing ip link command without a device: {line:?}");
        }
        for name in names {
            if name != "lo" && !(name.starts_with(PREFIX) && name.len() <= 15) {
                bail!("refusing ip link command on interface {name:?}: {line:?}");
            }
        }
    }
    Ok(())
}

/// Runs `ip [-n NS] [-force] -batch -` with `script` on stdin and fails on a non-zero exit.
///
/// Without `-force`, `ip` stops at the first failing line, so nothing after a failure runs.
pub(crate) fn ip_batch(ns: Option<&str>, script: &str, force: bool) -> Result<()> {
    let mut cmd = Command::new("ip");
    match ns {
        Some(ns) => {
            check_ns_name(ns)?;
            check_ns_batch(script)?;
            cmd.args(["-n", ns]);
        }
        None => check_root_batch(script)?,
    }
    if force {
        cmd.arg("-force");
    }
    cmd.args(["-batch", "-"]);
    let what = format!("ip batch in {}", ns.unwrap_or("the root namespace"));
    run_with_stdin(cmd, script).with_context(|| format!("{what}:\n{script}"))
}

/// Runs `cmd` with `input` on stdin; fails with its stderr on a non-zero exit.
pub(crate) fn run_with_stdin(mut cmd: Command, input: &str) -> Result<()> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let program = format!("{:?}", cmd.get_program());
    let mut child = cmd.spawn().with_context(|| format!("spawning {program}"))?;
    // The input is small (a few KiB at most), well below the pipe buffer, so writing it all before
    // reading any output cannot deadlock.
    let mut stdin = child.stdin.take().expect("stdin was piped");
    let write = stdin.write_all(input.as_bytes());
    drop(stdin);
    let out = child.wait_with_output()?;
    write.with_context(|| format!("writing stdin of {program}"))?;
    check_output(&program, &out)
}

fn check_output(program: &str, out: &Output) -> Result<()> {
    if !out.status.success() {
        bail!(
            "{program} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(())
}

/// Runs `cmd` with stdout and stderr captured, killing it after `timeout`.
pub(crate) fn output_with_timeout(mut cmd: Command, timeout: Duration) -> Result<Output> {
    let program = format!(
        "{:?} {:?}",
        cmd.get_program(),
        cmd.get_args().collect::<Vec<_>>()
    );
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {program}"))?;
    // Read both pipes on their own threads so a chatty child can never block on a full pipe.
    let mut so = child.stdout.take().expect("piped");
    let mut se = child.stderr.take().expect("piped");
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let status = wait_timeout(&mut child, timeout)?;
    let stdout = t_out.join().unwrap_or_default();
    let stderr = t_err.join().unwrap_or_default();
    match status {
        Some(status) => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        None => bail!(
            "{program} did not finish within {timeout:?}; output so far:\n{}",
            String::from_utf8_lossy(&stdout)
        ),
    }
}

/// Waits for `child` up to `timeout`; kills and reaps it and returns `None` when time runs out.
pub(crate) fn wait_timeout(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Moves the calling thread into namespace `ns` (network namespaces are per thread on Linux).
pub(crate) fn enter(ns: &str) -> Result<()> {
    check_ns_name(ns)?;
    let f = File::open(netns_path(ns)).with_context(|| format!("opening namespace {ns}"))?;
    // SAFETY: plain syscall on a descriptor we own for the duration of the call.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("setns into {ns}"));
    }
    Ok(())
}

/// Runs `f` on a fresh thread that has entered namespace `ns`, and returns its result.
pub(crate) fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(ns)?;
            f()
        })
        .join()
        .unwrap_or_else(|_| bail!("thread in namespace {ns} panicked"))
    })
}

/// A command whose child process enters namespace `ns` right before exec (no `ip netns exec`
/// in between, which saves a process and a sysfs mount per call).
pub(crate) fn ns_command(ns: &str, program: &str) -> Result<Command> {
    check_ns_name(ns)?;
    let f = File::open(netns_path(ns)).with_context(|| format!("opening namespace {ns}"))?;
    let mut cmd = Command::new(program);
    // SAFETY: the closure only makes one async-signal-safe syscall; `f` lives inside the closure
    // (and so as long as the Command) and is close-on-exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(cmd)
}

/// Writes sysctls (`net.ipv4.ip_forward` style keys) inside each namespace, all from one thread
/// that hops between namespaces: `/proc/sys/net` shows the net namespace of the calling thread.
pub(crate) fn set_sysctls(plan: &[(String, Vec<(&'static str, &'static str)>)]) -> Result<()> {
    std::thread::scope(|s| {
        s.spawn(|| -> Result<()> {
            for (ns, items) in plan {
                enter(ns)?;
                for (key, value) in items {
                    let path = format!("/proc/sys/{}", key.replace('.', "/"));
                    std::fs::write(&path, value)
                        .with_context(|| format!("setting {key}={value} in {ns}"))?;
                }
            }
            Ok(())
        })
        .join()
        .unwrap_or_else(|_| bail!("sysctl thread panicked"))
    })
}

/// (device, inode) identity of a namespace file.
fn ns_identity(path: &Path) -> Option<(u64, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino()))
}

/// Pids of all processes (other than this one) whose network namespace is one of `namespaces`.
pub(crate) fn pids_in(namespaces: &[String]) -> Vec<i32> {
    let ids: HashSet<(u64, u64)> = namespaces
        .iter()
        .filter_map(|ns| ns_identity(&netns_path(ns)))
        .collect();
    if ids.is_empty() {
        return Vec::new();
    }
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            ns_identity(Path::new(&format!("/proc/{pid}/ns/net")))
                .is_some_and(|id| ids.contains(&id))
        })
        .collect()
}

/// SIGKILLs every process inside `namespaces` (processes that tests started with
/// [`crate::Lab::command`] and did not hand to the lab, or leftovers of a dead lab).
pub(crate) fn kill_all_in(namespaces: &[String]) {
    for pid in pids_in(namespaces) {
        // SAFETY: plain syscall.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// Deletes namespaces with one `ip -force -batch` (a missing one does not stop the others).
pub(crate) fn delete_namespaces(namespaces: &[String]) -> Result<()> {
    let existing: Vec<&String> = namespaces
        .iter()
        .filter(|ns| netns_path(ns).exists())
        .collect();
    if existing.is_empty() {
        return Ok(());
    }
    let script: String = existing
        .iter()
        .map(|ns| format!("netns del {ns}\n"))
        .collect();
    ip_batch(None, &script, true)
}

/// Namespaces of labs of this process (`bw-<our pid>-...`): killed and deleted.
pub(crate) fn remove_own() -> Result<Vec<String>> {
    let mine = format!("{PREFIX}{}-", std::process::id());
    let own: Vec<String> = std::fs::read_dir(NETNS_DIR)
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|name| name.starts_with(&mine) && check_ns_name(name).is_ok())
                .collect()
        })
        .unwrap_or_default();
    if !own.is_empty() {
        kill_all_in(&own);
        delete_namespaces(&own)?;
    }
    Ok(own)
}

/// Lab namespaces left behind by processes that no longer run (`bw-<pid>-...` with a dead pid).
pub(crate) fn stale_namespaces() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| check_ns_name(name).is_ok())
        .filter(|name| {
            let pid = name[PREFIX.len()..].split('-').next().unwrap_or("");
            !pid.is_empty()
                && pid.bytes().all(|b| b.is_ascii_digit())
                && !Path::new(&format!("/proc/{pid}")).exists()
        })
        .collect()
}

/// Kills what runs in stale lab namespaces and deletes them; returns what it removed.
pub(crate) fn sweep_stale() -> Result<Vec<String>> {
    let stale = stale_namespaces();
    if !stale.is_empty() {
        kill_all_in(&stale);
        delete_namespaces(&stale)?;
    }
    Ok(stale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_ns_name("bw-1-2-inet").is_ok());
        assert!(check_ns_name("").is_err());
        assert!(check_ns_name("bw-").is_err());
        assert!(check_ns_name("eth0").is_err());
        assert!(check_ns_name("bw-1 x").is_err());
        assert!(check_root_batch("netns add bw-1-2-x\nnetns del bw-1-2-x\n").is_ok());
        assert!(check_root_batch("link add bw-a type veth peer name bw-b").is_err());
        assert!(check_root_batch("netns add other").is_err());
        assert!(check_ns_batch("link add bw-a type veth peer name bw-b netns bw-1-x").is_ok());
        assert!(check_ns_batch("link set lo up\naddr add 10.0.0.1/24 dev bw-a").is_ok());
        assert!(check_ns_batch("link set eth0 netns bw-1-x").is_err());
        assert!(check_ns_batch("link add bw-a type veth peer name eth0").is_err());
        assert!(check_ns_batch("link add bw-a type veth peer name bw-b netns foo").is_err());
    }
}
