//! A herd as five hosts: one network namespace per server, each joined by a veth pair to a
//! bridge in a namespace of its own, plus a client namespace on the same bridge from which
//! the test talks to the nodes. Addresses are in 10.213.0.0/24, which exists only inside
//! these namespaces. Every node runs the real binary with `ip netns exec`, bound to its own
//! address, with TLS on.
//!
//! [`Net::with_delay`] wires the hosts differently, for benchmarks on kernels without `netem`:
//! each host's interface is a TAP device, and a [`DelayLine`] in the creating process switches
//! Ethernet frames between them, holding every frame for a fixed delay first.
//!
//! [`Net`] removes everything it made (nodes first, then the delay line, then namespaces, which
//! takes their interfaces with them) when dropped, so also when a test fails.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::common::{eventually, spawn, Node, FIVE, FIVE_LINKS, HERD};

/// The port every node listens on, in its own namespace.
pub const PORT: u16 = 7000;
/// Where libfaketime's preload library lives on Debian.
pub const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// Says on the terminal that a test is skipped, and why. Written straight to the process's
/// stderr, not through `eprintln!`, so the test harness's output capture cannot hide it.
pub fn skipped(why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
}

/// Why the namespace tests cannot run here, if they cannot.
pub fn unavailable() -> Option<String> {
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root: creating network namespaces needs root".into());
    }
    static PROBES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = format!("hdprobe{}x{n}", std::process::id());
    match Command::new("ip").args(["netns", "add", &probe]).output() {
        Err(e) => return Some(format!("`ip` (iproute2) cannot be run: {e}")),
        Ok(out) if !out.status.success() => {
            return Some(format!(
                "`ip netns add` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
        Ok(_) => {}
    }
    let _ = Command::new("ip").args(["netns", "del", &probe]).output();
    None
}

/// Runs `ip ARGS`, panicking with its error output on failure.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a command and returns its error output on failure.
pub fn try_cmd(prog: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(prog)
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// Five hosts, a bridge and a client namespace.
pub struct Net {
    pub tag: String,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    /// Server name → host index (0..5).
    pub index: BTreeMap<String, usize>,
    pub nodes: BTreeMap<String, Node>,
    /// Extra environment per server (say, a shifted clock).
    pub env: BTreeMap<String, Vec<(String, String)>>,
    namespaces: Vec<String>,
    /// What switches frames between the hosts, when it is not the bridge.
    line: Option<DelayLine>,
}

impl Net {
    /// Builds the namespaces and writes a config for the default five-server herd, with
    /// certificates from `herd certs` for every server and for `extra_servers` (which get an
    /// address in the client namespace), and `extra` TOML.
    pub fn new(extra: &str, extra_servers: &[(&str, &[&str])]) -> Net {
        Net::build(extra, extra_servers, None)
    }

    /// Like [`Net::new`], but each host's interface is a TAP device joined to the others by a
    /// [`DelayLine`] that holds every frame for `delay`: a frame from one host to another is
    /// delayed once, as `tc netem delay` on every host's interface would delay it.
    pub fn with_delay(extra: &str, extra_servers: &[(&str, &[&str])], delay: Duration) -> Net {
        Net::build(extra, extra_servers, Some(delay))
    }

    fn build(extra: &str, extra_servers: &[(&str, &[&str])], delay: Option<Duration>) -> Net {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = format!("hd{}x{n}", std::process::id() % 100_000);
        let dir = tempfile::tempdir().unwrap();
        let mut net = Net {
            config: dir.path().join("herd.toml"),
            dir,
            index: FIVE
                .iter()
                .enumerate()
                .map(|(i, n)| (n.to_string(), i))
                .collect(),
            nodes: BTreeMap::new(),
            env: BTreeMap::new(),
            namespaces: Vec::new(),
            line: None,
            tag,
        };
        // The bridge's namespace is made either way (with a delay line its bridge stays empty),
        // so every `Net` has the same namespaces to find and remove.
        let bridge = net.ns_bridge();
        net.add_ns(&bridge);
        ip(&["-n", &bridge, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &bridge, "link", "set", "br0", "up"]);
        let mut taps = Vec::new();
        for i in 0..=FIVE.len() {
            let ns = if i == FIVE.len() {
                net.ns_client()
            } else {
                net.ns_host(i)
            };
            net.add_ns(&ns);
            let (inner, outer) = (format!("vh{i}"), format!("vb{i}"));
            if delay.is_some() {
                // Made here (the process holding it serves it), then moved to its host.
                let name = format!("{}t{i}", net.tag);
                taps.push(open_tap(&name));
                ip(&["link", "set", &name, "netns", &ns]);
                ip(&["-n", &ns, "link", "set", &name, "name", &inner]);
            } else {
                ip(&[
                    "link", "add", &inner, "netns", &ns, "type", "veth", "peer", "name", &outer,
                    "netns", &bridge,
                ]);
                ip(&["-n", &bridge, "link", "set", &outer, "master", "br0"]);
                ip(&["-n", &bridge, "link", "set", &outer, "up"]);
            }
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", Net::host_ip(i)),
                "dev",
                &inner,
            ]);
            ip(&["-n", &ns, "link", "set", &inner, "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        if let Some(delay) = delay {
            net.line = Some(DelayLine::start(taps, delay));
        }
        // The config: every server at its own host's address.
        let mut text = String::from("links = [");
        for (a, b) in FIVE_LINKS {
            text.push_str(&format!("[{a:?}, {b:?}], "));
        }
        for (name, linked) in extra_servers {
            for b in *linked {
                text.push_str(&format!("[{name:?}, {b:?}], "));
            }
        }
        text.push_str("]\n[tls]\ndir = \"certs\"\n");
        text.push_str(extra);
        text.push_str("\n[servers]\n");
        for (i, name) in FIVE.iter().enumerate() {
            text.push_str(&format!("{name} = \"{}:{PORT}\"\n", Net::host_ip(i)));
        }
        for (k, (name, _)) in extra_servers.iter().enumerate() {
            text.push_str(&format!(
                "{name} = \"{}:{}\"\n",
                Net::host_ip(FIVE.len()),
                PORT + 1 + k as u16
            ));
        }
        std::fs::write(&net.config, text).unwrap();
        let mut names: Vec<&str> = FIVE.to_vec();
        names.extend(extra_servers.iter().map(|(n, _)| *n));
        let out = Command::new(HERD)
            .arg("certs")
            .arg("--out")
            .arg(net.dir.path().join("certs"))
            .arg("--config")
            .arg(&net.config)
            .args(&names)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "herd certs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        net
    }

    fn add_ns(&mut self, ns: &str) {
        ip(&["netns", "add", ns]);
        self.namespaces.push(ns.to_owned());
    }

    pub fn ns_bridge(&self) -> String {
        format!("{}br", self.tag)
    }
    pub fn ns_client(&self) -> String {
        format!("{}c", self.tag)
    }
    pub fn ns_host(&self, i: usize) -> String {
        format!("{}h{i}", self.tag)
    }

    /// The address of host `i` (the client namespace is host 5).
    pub fn host_ip(i: usize) -> String {
        format!("10.213.0.{}", i + 1)
    }

    /// Where clients reach server `name`.
    pub fn addr(&self, name: &str) -> String {
        format!("{}:{PORT}", Net::host_ip(self.index[name]))
    }

    /// The namespace of server `name`, and its interface there.
    pub fn host_of(&self, name: &str) -> (String, String) {
        let i = self.index[name];
        (self.ns_host(i), format!("vh{i}"))
    }

    pub fn log_dir(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.log_dir().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Starts server `name` in its namespace and waits for its readiness line.
    pub fn start(&mut self, name: &str) {
        let (ns, _) = self.host_of(name);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns])
            .arg(HERD)
            .args(["serve", name, "--config"])
            .arg(&self.config)
            .arg("--state-dir")
            .arg(self.dir.path().join("state").join(name))
            .arg("--log-dir")
            .arg(self.log_dir())
            .current_dir(self.dir.path())
            .env_remove("HERD_SECRET")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in self.env.get(name).into_iter().flatten() {
            cmd.env(k, v);
        }
        let node = spawn(cmd);
        eventually(
            Duration::from_secs(20),
            &format!("{name} to announce readiness"),
            || node.stderr.lock().unwrap().contains(" ready "),
        );
        self.nodes.insert(name.to_owned(), node);
    }

    pub fn start_all(&mut self) {
        for name in FIVE {
            self.start(name);
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self, name: &str) {
        if let Some(mut node) = self.nodes.remove(name) {
            node.child.kill().unwrap();
            node.child.wait().unwrap();
        }
    }

    /// Takes server `name`'s host off the network, or puts it back.
    pub fn set_link(&self, name: &str, up: bool) {
        let (ns, dev) = self.host_of(name);
        ip(&[
            "-n",
            &ns,
            "link",
            "set",
            &dev,
            if up { "up" } else { "down" },
        ]);
    }

    /// Ethernet frames the six hosts have sent so far: what the bridge's ports or the delay
    /// line received.
    pub fn frames(&self) -> u64 {
        if let Some(line) = &self.line {
            return line.frames.load(Ordering::Relaxed);
        }
        let script = "cat /sys/class/net/vb[0-9]*/statistics/rx_packets";
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns_bridge(), "sh", "-c", script])
            .output()
            .expect("run ip netns exec");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|n| n.parse::<u64>().ok())
            .sum()
    }

    /// How late the delay line let frames go (p50, p99, max, in microseconds past their due
    /// time), and forgets it; `None` without a delay line.
    pub fn line_lateness(&self) -> Option<(u32, u32, u32)> {
        let line = self.line.as_ref()?;
        let mut late = std::mem::take(&mut *line.late_us.lock().unwrap());
        if late.is_empty() {
            return Some((0, 0, 0));
        }
        late.sort_unstable();
        let at = |q: f64| late[((late.len() - 1) as f64 * q) as usize];
        Some((at(0.5), at(0.99), late[late.len() - 1]))
    }

    /// Runs `f` on a thread inside the client namespace (sockets it opens are there).
    pub fn in_client<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        in_ns(&self.ns_client(), f)
    }
}

/// Moves the calling thread into network namespace `ns`.
pub fn enter_ns(ns: &str) {
    let path = Path::new("/var/run/netns").join(ns);
    let file = std::fs::File::open(&path).unwrap();
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "setns {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// Runs `f` on a new thread that has joined network namespace `ns`.
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        enter_ns(&ns);
        f()
    })
    .join()
    .unwrap()
}

impl Drop for Net {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            let _ = node.child.kill();
            let _ = node.child.wait();
        }
        // Closing its TAP devices' files removes them.
        drop(self.line.take());
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Why TAP devices (for [`Net::with_delay`]) cannot be made here, if they cannot.
pub fn tap_unavailable() -> Option<String> {
    static PROBES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = PROBES.fetch_add(1, Ordering::Relaxed);
    let name = format!("hdtp{}x{n}", std::process::id() % 100_000);
    try_open_tap(&name).err()
}

/// Opens a new TAP device `name` (Ethernet frames, no packet-information header), non-blocking.
fn open_tap(name: &str) -> std::fs::File {
    try_open_tap(name).unwrap_or_else(|why| panic!("{why}"))
}

fn try_open_tap(name: &str) -> Result<std::fs::File, String> {
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    const IFF_TAP: libc::c_short = 0x0002;
    const IFF_NO_PI: libc::c_short = 0x1000;
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        flags: libc::c_short,
        _rest: [u8; 22],
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|e| format!("cannot open /dev/net/tun: {e}"))?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TAP | IFF_NO_PI,
        _rest: [0; 22],
    };
    assert!(name.len() < libc::IFNAMSIZ, "{name}: name too long");
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    let fd = file.as_raw_fd();
    if unsafe { libc::ioctl(fd, TUNSETIFF as _, &mut req) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(format!("cannot make TAP device {name} (TUNSETIFF): {e}"));
    }
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } != 0 {
        return Err(format!(
            "fcntl O_NONBLOCK: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(file)
}

/// An Ethernet switch in user space between TAP devices: it learns which port each source
/// address is behind, and forwards every frame it reads, `delay` after reading it, to that
/// port (or to every other port when the destination is a group address or not yet learned).
/// Frames leave in the order they came, each on time to within the thread's wake-up latency.
pub struct DelayLine {
    stop: std::sync::Arc<AtomicBool>,
    /// Frames read so far.
    pub frames: std::sync::Arc<AtomicU64>,
    /// How late each frame left, in microseconds past its due time.
    pub late_us: std::sync::Arc<std::sync::Mutex<Vec<u32>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DelayLine {
    fn start(taps: Vec<std::fs::File>, delay: Duration) -> DelayLine {
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let frames = std::sync::Arc::new(AtomicU64::new(0));
        let late_us = std::sync::Arc::default();
        let thread = {
            let (stop, frames, late) = (
                stop.clone(),
                frames.clone(),
                std::sync::Arc::clone(&late_us),
            );
            std::thread::Builder::new()
                .name("delay-line".into())
                .spawn(move || switch(&taps, delay, &stop, &frames, &late))
                .expect("start the delay line")
        };
        DelayLine {
            stop,
            frames,
            late_us,
            thread: Some(thread),
        }
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn switch(
    taps: &[std::fs::File],
    delay: Duration,
    stop: &AtomicBool,
    frames: &AtomicU64,
    late: &std::sync::Mutex<Vec<u32>>,
) {
    use std::io::{Read, Write};
    use std::time::Instant;
    let mut ports: std::collections::HashMap<[u8; 6], usize> = Default::default();
    let mut held: std::collections::VecDeque<(Instant, usize, Vec<u8>)> = Default::default();
    let mut polls: Vec<libc::pollfd> = taps
        .iter()
        .map(|t| libc::pollfd {
            fd: t.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        let wait = held.front().map_or(Duration::from_millis(20), |(due, ..)| {
            due.saturating_duration_since(Instant::now())
        });
        let timeout = libc::timespec {
            tv_sec: wait.as_secs() as _,
            tv_nsec: wait.subsec_nanos() as _,
        };
        let n = polls.len() as libc::nfds_t;
        unsafe { libc::ppoll(polls.as_mut_ptr(), n, &timeout, std::ptr::null()) };
        for (port, mut tap) in taps.iter().enumerate() {
            if polls[port].revents & libc::POLLIN == 0 {
                continue;
            }
            while let Ok(len) = tap.read(&mut buf) {
                if len < 14 {
                    continue;
                }
                frames.fetch_add(1, Ordering::Relaxed);
                let source: [u8; 6] = buf[6..12].try_into().unwrap();
                ports.insert(source, port);
                held.push_back((Instant::now() + delay, port, buf[..len].to_vec()));
            }
        }
        let now = Instant::now();
        while held.front().is_some_and(|(due, ..)| *due <= now) {
            let (due, from, frame) = held.pop_front().unwrap();
            late.lock()
                .unwrap()
                .push((now - due).as_micros().min(u32::MAX as u128) as u32);
            let dest: [u8; 6] = frame[..6].try_into().unwrap();
            let known = ports.get(&dest).copied().filter(|_| dest[0] & 1 == 0);
            for (port, mut tap) in taps.iter().enumerate() {
                if port != from && known.is_none_or(|k| k == port) {
                    // A host whose interface is down, or whose queue is full, loses the frame.
                    let _ = tap.write(&frame);
                }
            }
        }
    }
}
