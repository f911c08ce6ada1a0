//! The delay line: holds each packet that iptables hands to an NFQUEUE for a fixed time, then
//! accepts it. This kernel has no `tc netem`, so this is how the lab adds latency.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};

use crate::topology::Home;
use crate::{netns, Lab};

/// Longest sleep between polls of the queue: bounds the extra delay a packet can get on top of
/// the configured one (the `nfq` crate does not expose its descriptor, so we cannot block in
/// poll(2) on it).
const TICK: Duration = Duration::from_micros(500);

/// Holds every packet of NFQUEUE `queue_num` (in the calling thread's network namespace) for
/// `delay`, in arrival order, until `stop` is set. Calls `ready` once the queue is bound.
///
/// This is what `burrow-lab delay-line` runs; the lab runs it on a thread inside the router
/// namespace.
pub fn run_delay_line(
    queue_num: u16,
    delay: Duration,
    stop: &AtomicBool,
    ready: impl FnOnce(),
) -> Result<()> {
    let mut queue = nfq::Queue::open().context("opening NFQUEUE netlink socket")?;
    queue
        .bind(queue_num)
        .with_context(|| format!("binding NFQUEUE {queue_num}"))?;
    // Metadata only: the verdict needs the packet id, not its bytes.
    queue.set_copy_range(queue_num, 0)?;
    queue.set_queue_max_len(queue_num, 65_536)?;
    queue.set_nonblocking(true);
    ready();
    let mut held: VecDeque<(Instant, nfq::Message)> = VecDeque::new();
    let result = loop {
        if stop.load(Ordering::Relaxed) {
            break Ok(());
        }
        let mut failed = None;
        loop {
            match queue.recv() {
                Ok(msg) => held.push_back((Instant::now() + delay, msg)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = failed {
            break Err(anyhow!(e).context("receiving from NFQUEUE"));
        }
        let now = Instant::now();
        while held.front().is_some_and(|(due, _)| *due <= now) {
            let (_, mut msg) = held.pop_front().expect("checked");
            msg.set_verdict(nfq::Verdict::Accept);
            queue.verdict(msg).context("NFQUEUE verdict")?;
        }
        let nap = held
            .front()
            .map_or(TICK, |(due, _)| due.saturating_duration_since(now))
            .min(TICK);
        std::thread::sleep(nap);
    };
    // Let go of whatever is still held rather than leaving it to the kernel.
    for (_, mut msg) in held {
        msg.set_verdict(nfq::Verdict::Accept);
        let _ = queue.verdict(msg);
    }
    result
}

/// A delay line running on a thread inside a lab namespace; stopped on drop.
pub(crate) struct DelayLine {
    ns: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl DelayLine {
    /// Starts a delay line in `ns` and waits until its queue is bound.
    pub(crate) fn start(ns: &str, queue_num: u16, delay: Duration) -> Result<DelayLine> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<()>();
        let ns_owned = ns.to_string();
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("delay-{ns}"))
            .spawn(move || {
                crate::netns::enter(&ns_owned)?;
                run_delay_line(queue_num, delay, &stop2, || {
                    let _ = tx.send(());
                })
            })?;
        let mut line = DelayLine {
            ns: ns.to_string(),
            stop,
            thread: Some(thread),
        };
        if rx.recv_timeout(Duration::from_secs(5)).is_err() {
            // The thread failed before binding (its sender is gone) or hangs: report why.
            line.stop.store(true, Ordering::Relaxed);
            let why = line.ended().unwrap_or_else(|| "did not start".into());
            return Err(anyhow!("delay line in {ns}: {why}"));
        }
        Ok(line)
    }

    /// Fails, saying why, once the delay line has stopped: its link no longer has the delay
    /// the lab was built with.
    fn check_running(&mut self) -> Result<()> {
        if self.thread.as_ref().is_some_and(|t| !t.is_finished()) {
            return Ok(());
        }
        let why = self.ended().unwrap_or_else(|| "it returned".into());
        bail!("delay line in {} stopped: {why}", self.ns)
    }

    /// Joins the thread (set `stop` first, or know it ended): why it failed, or `None` when it
    /// returned cleanly (or was joined before).
    fn ended(&mut self) -> Option<String> {
        match self.thread.take()?.join() {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("{e:#}")),
            Err(_) => Some("panicked".into()),
        }
    }
}

impl Lab {
    /// Checks that every link given a delay is delayed now: its delay line still runs, and a
    /// round trip through the link takes at least twice the one-way delay. Run it after the
    /// measurements that rely on the delay.
    pub fn check_delays(&self) -> Result<()> {
        let mut lines = self.delay_lines.lock().expect("lock");
        for line in lines.iter_mut() {
            line.check_running()?;
        }
        drop(lines);
        for h in &self.homes {
            let Some(delay) = h.conditions.delay.filter(|d| !d.is_zero()) else {
                continue;
            };
            // Best of three, so that only a missing delay (not a slow moment) can fail it.
            let mut best = Duration::MAX;
            for _ in 0..3 {
                best = best.min(link_rtt(h)?);
            }
            ensure!(
                best >= 2 * delay,
                "home {}: round trip through its link {best:?}, below twice its one-way delay \
                 of {delay:?}: the delay is not in force",
                h.name
            );
        }
        Ok(())
    }
}

/// Round trip from `home`'s host to the internet router's end of the home's link: a TCP SYN
/// to a closed port there comes back as a reset, through the home's NATs and its link both
/// ways (TCP, since some kinds drop UDP).
fn link_rtt(home: &Home) -> Result<Duration> {
    let to = SocketAddr::from((Ipv4Addr::new(198, 18, home.n, 1), 9));
    netns::in_netns(&home.host_ns, || {
        let sent = Instant::now();
        match TcpStream::connect_timeout(&to, Duration::from_secs(5)) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(sent.elapsed()),
            Ok(_) => bail!("{to} accepted a connection on a closed port"),
            Err(e) => Err(e).with_context(|| format!("probing the link of {} at {to}", home.name)),
        }
    })
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(why) = self.ended() {
            eprintln!("burrow-lab: delay line in {}: {why}", self.ns);
        }
    }
}
