//! A network emulator in user space: a shaping TCP proxy on 127.0.0.1 (port 0) in front of
//! a real server, so the real HTTP client talks to the real server through a bad link.
//! This machine's kernel has no netem (`tc qdisc ... netem` is unknown), hence this.
//!
//! What the proxy does to the bytes, per direction (up: device to server; down: server to
//! device), in this order:
//!
//! - **Bandwidth**: one pacer per direction, shared by every connection of the proxy (one
//!   radio link): a segment leaves when the link has finished sending the previous one,
//!   and takes `bytes / rate` to send. No burst allowance: a pure serialisation delay.
//! - **Latency**: every segment arrives `delay` (one-way) after it has been sent.
//! - **Loss**: TCP hides loss, so a lost segment shows up as a stall. Segments are
//!   [`MSS`]-sized blocks of each direction's byte stream (so the draws do not depend on how
//!   the kernel chunks reads); each is lost or not by a two-state (Gilbert) chain with the
//!   profile's mean loss and mean burst length, from a seeded generator: the same seed loses
//!   the same segments. A lost segment arrives [`Profile::retransmit_stall`] late (about a
//!   tail-loss probe: twice the round trip, at least 200 ms), doubled for each lost
//!   retransmission; TCP delivers in order, so everything behind it waits too.
//! - **Connection set-up**: the first byte of a connection leaves one round trip after the
//!   connection was opened (the TCP handshake), plus the profile's `first_packet_late`
//!   (3G at the cell edge: the radio wakes up), plus 1 s for each lost SYN or SYN-ACK
//!   (Linux's initial retransmission timeout, doubling).
//! - **Cuts**: [`Netem::cut_after`] closes both sockets of the connection that carries the
//!   Nth byte in one direction from then on, right after that byte is delivered (with a
//!   reset, as a dead link looks to the application); the cut fires once.
//!   [`Profile::with_cut_every`] cuts every connection once it has carried N bytes in
//!   one direction.
//! - **Outages**: during a window ([`Profile::outages`] from the proxy's start, or
//!   [`Netem::outage_for`] from now) new connections are reset as soon as they are accepted,
//!   and every open connection is reset when the window begins.
//!
//! What it does not model: TCP's congestion window (an initial window of 10 segments holds
//! the 9 to 14 KB bodies measured here, so slow start would not add round trips for them),
//! ACK traffic, reordering, TLS (one more round trip per connection with TLS 1.3), and a
//! link that dies silently (here a cut or an outage resets at once; a real radio may leave
//! the client waiting for its timeouts).
//!
//! It counts the TCP payload bytes it forwards in each direction (HTTP headers included),
//! the connections, the request/response turns and the lost segments ([`Counters`]).
//!
//! Everything runs on a tokio runtime owned by the [`Netem`]; dropping it aborts every task
//! and closes every socket.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

/// The segment size used for loss draws: a TCP payload on a 1,500-byte path with timestamps.
pub const MSS: usize = 1448;
/// Largest read from a socket at once.
const READ_BUF: usize = 16 * 1024;
/// Segments queued per direction of a connection before the reader waits (about 370 KB):
/// the proxy's receive window.
const QUEUE_SEGMENTS: usize = 256;
/// Open connections at once; more are reset.
const MAX_CONNECTIONS: usize = 64;
/// A connection older than this is reset: nothing here runs unbounded.
const MAX_CONNECTION_LIFE: Duration = Duration::from_secs(900);
/// Linux's initial retransmission timeout, paid for a lost SYN or SYN-ACK.
const SYN_RTO: Duration = Duration::from_secs(1);
/// Linux's floor on the retransmission timeout.
const MIN_RTO: Duration = Duration::from_millis(200);
/// Retransmissions of one segment before the model gives up losing it.
const MAX_RETRIES: u32 = 6;
/// Time given to the runtime's tasks to stop when the proxy is dropped.
const SHUTDOWN: Duration = Duration::from_secs(2);

/// A direction of the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Device to server (the client's requests).
    Up,
    /// Server to device (the replies).
    Down,
}

impl Dir {
    fn index(self) -> usize {
        match self {
            Dir::Up => 0,
            Dir::Down => 1,
        }
    }
}

/// What one direction of the link does to the bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    /// One-way delay.
    pub delay: Duration,
    /// Bytes per second; `None` for no limit.
    pub rate: Option<u64>,
    /// Mean fraction of segments lost, 0.0 to 1.0.
    pub loss: f64,
    /// Mean length of a run of lost segments (1.0: losses on their own).
    pub burst: f64,
}

impl Shape {
    /// Nothing added.
    pub const CLEAR: Shape = Shape {
        delay: Duration::ZERO,
        rate: None,
        loss: 0.0,
        burst: 1.0,
    };

    /// A one-way delay and a rate in bytes per second (`None`: no limit), no loss.
    pub fn new(delay: Duration, rate: Option<u64>) -> Shape {
        Shape {
            delay,
            rate,
            ..Shape::CLEAR
        }
    }

    /// A one-way delay in milliseconds and a rate in kbit/s (1,000 bits), as the network
    /// profiles are written.
    pub fn kbit(delay_ms: u64, kbit_per_s: u64) -> Shape {
        Shape::new(Duration::from_millis(delay_ms), Some(kbit_per_s * 1000 / 8))
    }

    pub fn with_loss(self, loss: f64, burst: f64) -> Shape {
        Shape { loss, burst, ..self }
    }

    /// Time to put `bytes` on the link (no delay).
    pub fn send_time(&self, bytes: u64) -> Duration {
        match self.rate {
            Some(rate) if rate > 0 => Duration::from_secs_f64(bytes as f64 / rate as f64),
            _ => Duration::ZERO,
        }
    }

    /// Time for `bytes` sent on an idle link to arrive: delay plus sending time, no loss.
    pub fn one_way_time(&self, bytes: u64) -> Duration {
        self.delay + self.send_time(bytes)
    }
}

/// A window with no connectivity, from the proxy's start; `len: None` lasts forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outage {
    pub start: Duration,
    pub len: Option<Duration>,
}

impl Outage {
    fn contains(&self, since_start: Duration) -> bool {
        since_start >= self.start && self.len.is_none_or(|len| since_start < self.start + len)
    }
}

/// A link to emulate: both directions, connection set-up, outages and the loss seed.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub name: String,
    /// Device to server.
    pub up: Shape,
    /// Server to device.
    pub down: Shape,
    /// Extra wait before the first byte of every connection (a radio waking up).
    pub first_packet_late: Duration,
    /// Whether a new connection pays a round trip for the TCP handshake before its first byte.
    pub handshake: bool,
    pub outages: Vec<Outage>,
    /// A cut armed from the start: see [`Netem::cut_after`].
    pub cut: Option<(Dir, u64)>,
    /// Every connection is cut once it has carried this many bytes in one direction
    /// (each direction counted on its own): a link that never lets a long exchange
    /// through. See [`Profile::with_cut_every`].
    pub cut_every: Option<u64>,
    /// Seed of the loss draws.
    pub seed: u64,
}

impl Profile {
    /// The same shape both ways, with the handshake, no loss.
    pub fn symmetric(name: &str, shape: Shape) -> Profile {
        Profile::asymmetric(name, shape, shape)
    }

    pub fn asymmetric(name: &str, up: Shape, down: Shape) -> Profile {
        Profile {
            name: name.to_string(),
            up,
            down,
            first_packet_late: Duration::ZERO,
            handshake: true,
            outages: Vec::new(),
            cut: None,
            cut_every: None,
            seed: 1,
        }
    }

    /// Plain loopback through the proxy: nothing added, bytes still counted.
    pub fn loopback() -> Profile {
        Profile {
            handshake: false,
            ..Profile::symmetric("loopback", Shape::CLEAR)
        }
    }

    /// EDGE: 240 / 200 kbit/s down / up, 840 ms round trip, 2-5% loss in bursts (modelled
    /// as 3.5% in runs of 3 segments on average).
    pub fn edge() -> Profile {
        Profile::asymmetric(
            "EDGE",
            Shape::kbit(420, 200).with_loss(0.035, 3.0),
            Shape::kbit(420, 240).with_loss(0.035, 3.0),
        )
    }

    /// 2G regular: 250 / 50 kbit/s down / up, 300 ms round trip, 2% loss.
    pub fn two_g() -> Profile {
        Profile::asymmetric(
            "2G",
            Shape::kbit(150, 50).with_loss(0.02, 1.0),
            Shape::kbit(150, 250).with_loss(0.02, 1.0),
        )
    }

    /// 3G at the cell edge: 400 / 400 kbit/s, 2,000 ms round trip, 1-3% loss (modelled as
    /// 2%), the first packet of a connection 2.5 s late.
    pub fn three_g_cell_edge() -> Profile {
        Profile {
            first_packet_late: Duration::from_millis(2500),
            ..Profile::symmetric("3G cell edge", Shape::kbit(1000, 400).with_loss(0.02, 1.0))
        }
    }

    /// 3G regular: 750 / 250 kbit/s down / up, 100 ms round trip, 1% loss.
    pub fn three_g() -> Profile {
        Profile::asymmetric(
            "3G",
            Shape::kbit(50, 250).with_loss(0.01, 1.0),
            Shape::kbit(50, 750).with_loss(0.01, 1.0),
        )
    }

    /// A dead zone: no connectivity at all, ever.
    pub fn dead_zone() -> Profile {
        Profile {
            outages: vec![Outage {
                start: Duration::ZERO,
                len: None,
            }],
            ..Profile::symmetric("dead zone", Shape::CLEAR)
        }
    }

    /// The same one-way delay and rate (bytes per second) both ways, no loss.
    pub fn link(one_way: Duration, bytes_per_s: u64) -> Profile {
        let name = format!("{} ms one way, {} B/s", one_way.as_millis(), bytes_per_s);
        Profile::symmetric(&name, Shape::new(one_way, Some(bytes_per_s)))
    }

    pub fn with_seed(self, seed: u64) -> Profile {
        Profile { seed, ..self }
    }

    pub fn with_outage(mut self, start: Duration, len: Duration) -> Profile {
        self.outages.push(Outage { start, len: Some(len) });
        self
    }

    pub fn with_cut(self, dir: Dir, after_bytes: u64) -> Profile {
        Profile {
            cut: Some((dir, after_bytes)),
            ..self
        }
    }

    /// Cuts every connection once it has carried `bytes` in one direction: with 4,096, no
    /// request or reply larger than 4 KB (headers included) ever gets through, and a
    /// connection reused for several exchanges dies in the one that crosses the mark.
    pub fn with_cut_every(self, bytes: u64) -> Profile {
        Profile {
            cut_every: Some(bytes.max(1)),
            ..self
        }
    }

    /// Round trip: both one-way delays.
    pub fn rtt(&self) -> Duration {
        self.up.delay + self.down.delay
    }

    /// How late a lost segment arrives: a tail-loss probe or a fast retransmission fires
    /// about two round trips after the segment was sent, never sooner than Linux's 200 ms
    /// floor on the retransmission timeout.
    pub fn retransmit_stall(&self) -> Duration {
        (self.rtt() * 2).max(MIN_RTO)
    }

    fn shape(&self, dir: Dir) -> &Shape {
        match dir {
            Dir::Up => &self.up,
            Dir::Down => &self.down,
        }
    }
}

/// What the proxy has seen since it started. Subtract two snapshots with [`Counters::since`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// TCP payload bytes forwarded device to server.
    pub up_bytes: u64,
    /// TCP payload bytes forwarded server to device.
    pub down_bytes: u64,
    /// Connections forwarded to the server.
    pub connections: u64,
    /// Connections reset on arrival (outage, too many at once, or the server unreachable).
    pub refused: u64,
    /// Turns: the device starts sending after the connection opened or after the server
    /// sent something (one request and its reply is one turn).
    pub turns: u64,
    /// Segments lost (each a stall), retransmissions and handshake packets included.
    pub lost_segments: u64,
    /// Cuts that fired.
    pub cuts: u64,
    /// Open connections reset because an outage began.
    pub killed: u64,
}

impl Counters {
    /// What happened after `earlier` was taken.
    pub fn since(&self, earlier: &Counters) -> Counters {
        Counters {
            up_bytes: self.up_bytes - earlier.up_bytes,
            down_bytes: self.down_bytes - earlier.down_bytes,
            connections: self.connections - earlier.connections,
            refused: self.refused - earlier.refused,
            turns: self.turns - earlier.turns,
            lost_segments: self.lost_segments - earlier.lost_segments,
            cuts: self.cuts - earlier.cuts,
            killed: self.killed - earlier.killed,
        }
    }

    /// Round trips the device waited for: one per connection (the TCP handshake) and one
    /// per turn.
    pub fn round_trips(&self) -> u64 {
        self.connections + self.turns
    }

    pub fn bytes(&self, dir: Dir) -> u64 {
        match dir {
            Dir::Up => self.up_bytes,
            Dir::Down => self.down_bytes,
        }
    }

    fn bytes_mut(&mut self, dir: Dir) -> &mut u64 {
        match dir {
            Dir::Up => &mut self.up_bytes,
            Dir::Down => &mut self.down_bytes,
        }
    }
}

/// A shaping proxy on 127.0.0.1 in front of one server, until dropped. It owns its tokio
/// runtime: create and drop it from plain (not async) code.
pub struct Netem {
    addr: SocketAddr,
    url: String,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for Netem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netem")
            .field("url", &self.url)
            .field("profile", &self.shared.profile.name)
            .finish()
    }
}

impl Netem {
    /// Starts a proxy in front of `upstream` (a server on this machine).
    pub fn start(upstream: SocketAddr, profile: Profile) -> io::Result<Netem> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("netem")
            .enable_all()
            .build()?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let listener = {
            let _inside = runtime.enter();
            TcpListener::from_std(listener)?
        };
        let shared = Arc::new(Shared::new(profile));
        runtime.spawn(accept_loop(listener, upstream, Arc::clone(&shared)));
        for outage in &shared.profile.outages {
            let at = tokio::time::Instant::from_std(shared.started + outage.start);
            let shared = Arc::clone(&shared);
            runtime.spawn(async move {
                tokio::time::sleep_until(at).await;
                shared.kill_open_connections();
            });
        }
        Ok(Netem {
            addr,
            url: format!("http://{addr}"),
            shared,
            runtime: Some(runtime),
        })
    }

    /// Starts a proxy in front of the server at `url` (`http://127.0.0.1:PORT`).
    pub fn in_front_of(url: &str, profile: Profile) -> io::Result<Netem> {
        let host = url.strip_prefix("http://").unwrap_or(url).trim_end_matches('/');
        let upstream: SocketAddr = host
            .parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("not an address: {url}")))?;
        Netem::start(upstream, profile)
    }

    /// The proxy's base URL, to give the HTTP transport instead of the server's.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn profile(&self) -> &Profile {
        &self.shared.profile
    }

    pub fn counters(&self) -> Counters {
        *lock(&self.shared.counters)
    }

    /// Arms a cut: the connection that carries the `bytes`th byte sent in `dir` from now on
    /// is closed (both sockets, with a reset) right after that byte is delivered. Fires
    /// once; a new call replaces an armed cut.
    pub fn cut_after(&self, dir: Dir, bytes: u64) {
        let total = lock(&self.shared.counters).bytes(dir);
        lock(&self.shared.control).cut = Some((dir, total + bytes));
    }

    /// An outage from now for `len`: open connections are reset, new ones too until it ends.
    pub fn outage_for(&self, len: Duration) {
        lock(&self.shared.control).outage_until = Some(Instant::now() + len);
        self.shared.kill_open_connections();
    }

    /// Whether the link is down now.
    pub fn in_outage(&self) -> bool {
        self.shared.in_outage(Instant::now())
    }
}

impl Drop for Netem {
    fn drop(&mut self) {
        // Shutting the runtime down drops every task: the listener and every socket close.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(SHUTDOWN);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Shared state.

struct Shared {
    profile: Profile,
    started: Instant,
    counters: Mutex<Counters>,
    control: Mutex<Control>,
    /// Bumped when an outage begins; every connection watches it.
    kill: watch::Sender<u64>,
    /// Up and down.
    links: [Mutex<Link>; 2],
}

struct Control {
    /// Direction and the total byte count of that direction at which the cut fires.
    cut: Option<(Dir, u64)>,
    outage_until: Option<Instant>,
}

/// One direction of the radio link: its pacer and its loss chain.
struct Link {
    free_at: Instant,
    rng: SplitMix,
    bad: bool,
}

impl Shared {
    fn new(profile: Profile) -> Shared {
        let started = Instant::now();
        let link = |salt: u64| {
            Mutex::new(Link {
                free_at: started,
                rng: SplitMix(profile.seed ^ salt),
                bad: false,
            })
        };
        Shared {
            control: Mutex::new(Control {
                cut: profile.cut,
                outage_until: None,
            }),
            links: [link(0x5550_5550), link(0x444f_574e)],
            profile,
            started,
            counters: Mutex::new(Counters::default()),
            kill: watch::channel(0).0,
        }
    }

    fn in_outage(&self, now: Instant) -> bool {
        let since_start = now.saturating_duration_since(self.started);
        let manual = lock(&self.control).outage_until.is_some_and(|until| now < until);
        manual || self.profile.outages.iter().any(|o| o.contains(since_start))
    }

    fn kill_open_connections(&self) {
        self.kill.send_modify(|generation| *generation += 1);
    }

    fn count(&self, update: impl FnOnce(&mut Counters)) {
        update(&mut lock(&self.counters));
    }

    /// Counts `n` bytes read in `dir`; returns how many to forward and whether the armed
    /// cut fires within them.
    fn take_bytes(&self, dir: Dir, n: usize) -> (usize, bool) {
        let mut control = lock(&self.control);
        let mut counters = lock(&self.counters);
        let total = counters.bytes(dir);
        let (take, cut) = match control.cut {
            Some((cut_dir, at)) if cut_dir == dir && total + n as u64 >= at => {
                control.cut = None;
                counters.cuts += 1;
                (at.saturating_sub(total) as usize, true)
            }
            _ => (n, false),
        };
        *counters.bytes_mut(dir) += take as u64;
        (take, cut)
    }

    /// Whether the next segment sent in `dir` is lost (advances that direction's chain).
    fn next_lost(&self, dir: Dir) -> bool {
        let shape = self.profile.shape(dir);
        if shape.loss <= 0.0 {
            return false;
        }
        let loss = shape.loss.min(0.99);
        let burst = shape.burst.max(1.0);
        // Gilbert chain, every segment lost in the bad state: the mean loss is `loss` and a
        // bad run lasts `burst` segments on average.
        let to_bad = (loss / (burst * (1.0 - loss))).min(1.0);
        let to_good = 1.0 / burst;
        let mut link = lock(&self.links[dir.index()]);
        let u = link.rng.unit();
        link.bad = if link.bad { u >= to_good } else { u < to_bad };
        link.bad
    }

    /// Whether a retransmission sent in `dir` is lost: drawn on its own, since it leaves
    /// long after the burst that took the original.
    fn retransmission_lost(&self, dir: Dir) -> bool {
        let loss = self.profile.shape(dir).loss;
        loss > 0.0 && lock(&self.links[dir.index()]).rng.unit() < loss
    }

    /// Stall of a new segment in `dir`: zero, or the time its retransmissions take.
    fn segment_stall(&self, dir: Dir) -> Duration {
        if !self.next_lost(dir) {
            return Duration::ZERO;
        }
        let mut stall = Duration::ZERO;
        let mut rto = self.profile.retransmit_stall();
        let mut lost = 1;
        for _ in 0..MAX_RETRIES {
            stall += rto;
            rto *= 2;
            if !self.retransmission_lost(dir) {
                break;
            }
            lost += 1;
        }
        self.count(|c| c.lost_segments += lost);
        stall
    }

    /// When a connection opened at `opened` may send its first byte.
    fn first_byte_at(&self, opened: Instant) -> Instant {
        let mut at = opened + self.profile.first_packet_late;
        if self.profile.handshake {
            at += self.profile.rtt();
            for dir in [Dir::Up, Dir::Down] {
                // The SYN goes up, the SYN-ACK comes down.
                let mut rto = SYN_RTO;
                for _ in 0..MAX_RETRIES {
                    if !self.retransmission_lost(dir) {
                        break;
                    }
                    self.count(|c| c.lost_segments += 1);
                    at += rto;
                    rto *= 2;
                }
            }
        }
        at
    }

    /// Sends `len` bytes on the `dir` link no sooner than `ready`: when they arrive.
    fn schedule(&self, dir: Dir, ready: Instant, len: usize) -> Instant {
        let shape = self.profile.shape(dir);
        let mut link = lock(&self.links[dir.index()]);
        let start = link.free_at.max(ready);
        link.free_at = start + shape.send_time(len as u64);
        link.free_at + shape.delay
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain counters behind: go on.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// SplitMix64: small, seeded, the same sequence on every platform and version.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

// ---------------------------------------------------------------------------------------
// The proxy's tasks.

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    // Runs until the proxy is dropped (its runtime shuts down and drops this task).
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(_) => {
                // Out of file descriptors or the like: wait a little rather than spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        if shared.in_outage(Instant::now()) || connections.len() >= MAX_CONNECTIONS {
            reset(client);
            shared.count(|c| c.refused += 1);
            continue;
        }
        connections.spawn(connection(client, upstream, Arc::clone(&shared)));
    }
}

/// Closes a socket with a reset (no FIN): what a dead link looks like to the application.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Why a connection ended early.
#[derive(Debug)]
enum Stop {
    Io,
    Cut,
}

/// What a reader hands its writer, with the time it is due at the other end.
enum Item {
    Data(Instant, Vec<u8>),
    Fin(Instant),
    Cut(Instant),
}

/// The connection's turn taking, for [`Counters::turns`].
struct Turns(Mutex<Option<Dir>>);

impl Turns {
    fn saw(&self, dir: Dir, shared: &Shared) {
        let mut last = lock(&self.0);
        if dir == Dir::Up && *last != Some(Dir::Up) {
            shared.count(|c| c.turns += 1);
        }
        *last = Some(dir);
    }
}

async fn connection(mut client: TcpStream, upstream: SocketAddr, shared: Arc<Shared>) {
    let opened = Instant::now();
    let mut kill = shared.kill.subscribe();
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        reset(client);
        shared.count(|c| c.refused += 1);
        return;
    };
    shared.count(|c| c.connections += 1);
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let first_byte = shared.first_byte_at(opened);
    let turns = Turns(Mutex::new(None));
    let graceful = {
        let (client_in, client_out) = client.split();
        let (server_in, server_out) = server.split();
        let (up_tx, up_rx) = mpsc::channel(QUEUE_SEGMENTS);
        let (down_tx, down_rx) = mpsc::channel(QUEUE_SEGMENTS);
        let work = async {
            tokio::try_join!(
                read_side(client_in, up_tx, Dir::Up, &shared, &turns, first_byte),
                write_side(server_out, up_rx),
                read_side(server_in, down_tx, Dir::Down, &shared, &turns, opened),
                write_side(client_out, down_rx),
            )
        };
        tokio::select! {
            done = work => done.is_ok(),
            _ = kill.changed() => {
                shared.count(|c| c.killed += 1);
                false
            }
            _ = tokio::time::sleep(MAX_CONNECTION_LIFE) => false,
        }
    };
    if !graceful {
        reset(client);
        reset(server);
    }
}

/// Reads one direction, counts and shapes it, and queues it for the writer.
async fn read_side<R: AsyncRead + Unpin>(
    mut from: R,
    to_writer: mpsc::Sender<Item>,
    dir: Dir,
    shared: &Shared,
    turns: &Turns,
    first_byte: Instant,
) -> Result<(), Stop> {
    let mut buf = vec![0u8; READ_BUF];
    let delay = shared.profile.shape(dir).delay;
    // Offset in this direction's stream, for segment boundaries.
    let mut offset = 0usize;
    let mut stall = Duration::ZERO;
    // TCP delivers in order: nothing arrives before what was sent earlier.
    let mut last_arrival = first_byte;
    // Bytes this direction of this connection carried, for `cut_every`.
    let mut carried = 0u64;
    // Bounded by the stream: every turn reads at least one byte or ends.
    loop {
        let n = from.read(&mut buf).await.map_err(|_| Stop::Io)?;
        let now = Instant::now();
        if n == 0 {
            let at = last_arrival.max(now + delay);
            let _ = to_writer.send(Item::Fin(at)).await;
            return Ok(());
        }
        let (n, every) = match shared.profile.cut_every {
            Some(limit) if carried + n as u64 >= limit => ((limit - carried) as usize, true),
            _ => (n, false),
        };
        let (take, cut) = shared.take_bytes(dir, n);
        carried += take as u64;
        if every && !cut {
            shared.count(|c| c.cuts += 1);
        }
        let cut = cut || every;
        if take > 0 {
            turns.saw(dir, shared);
        }
        let ready = now.max(first_byte);
        let mut pos = 0;
        while pos < take {
            let in_segment = offset % MSS;
            if in_segment == 0 {
                stall = shared.segment_stall(dir);
            }
            let len = (MSS - in_segment).min(take - pos);
            let arrival = (shared.schedule(dir, ready, len) + stall).max(last_arrival);
            last_arrival = arrival;
            to_writer
                .send(Item::Data(arrival, buf[pos..pos + len].to_vec()))
                .await
                .map_err(|_| Stop::Io)?;
            pos += len;
            offset += len;
        }
        if cut {
            let _ = to_writer.send(Item::Cut(last_arrival.max(now))).await;
            return Ok(());
        }
    }
}

/// Delivers what its reader queued, each item when it is due.
async fn write_side<W: AsyncWrite + Unpin>(mut to: W, mut queue: mpsc::Receiver<Item>) -> Result<(), Stop> {
    // Bounded by the reader: it ends the queue with Fin or Cut, or drops it.
    while let Some(item) = queue.recv().await {
        match item {
            Item::Data(at, bytes) => {
                sleep_until(at).await;
                to.write_all(&bytes).await.map_err(|_| Stop::Io)?;
            }
            Item::Fin(at) => {
                sleep_until(at).await;
                let _ = to.shutdown().await;
                return Ok(());
            }
            Item::Cut(at) => {
                sleep_until(at).await;
                return Err(Stop::Cut);
            }
        }
    }
    Ok(())
}

async fn sleep_until(at: Instant) {
    tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loss_chain_keeps_its_mean_and_its_bursts() {
        let shared = Shared::new(Profile::edge().with_seed(7));
        let draws = 200_000;
        let mut lost = 0;
        let mut runs = 0;
        let mut previous = false;
        for _ in 0..draws {
            let now = shared.next_lost(Dir::Up);
            if now {
                lost += 1;
                if !previous {
                    runs += 1;
                }
            }
            previous = now;
        }
        let mean = lost as f64 / draws as f64;
        let burst = lost as f64 / runs as f64;
        assert!((mean - 0.035).abs() < 0.005, "mean loss {mean}");
        assert!((burst - 3.0).abs() < 0.3, "mean burst {burst}");
    }

    #[test]
    fn the_same_seed_loses_the_same_segments() {
        let draw = |seed| {
            let shared = Shared::new(Profile::two_g().with_seed(seed));
            (0..2000).map(|_| shared.next_lost(Dir::Down)).collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
    }

    #[test]
    fn the_pacer_serialises_segments_and_adds_the_delay() {
        let profile = Profile::link(Duration::from_millis(250), 32_000);
        let shared = Shared::new(profile);
        let t0 = shared.started;
        let first = shared.schedule(Dir::Up, t0, 16_000);
        let second = shared.schedule(Dir::Up, t0, 16_000);
        assert_eq!(first - t0, Duration::from_millis(750));
        assert_eq!(second - t0, Duration::from_millis(1250));
        // The other direction has its own pacer.
        assert_eq!(shared.schedule(Dir::Down, t0, 0) - t0, Duration::from_millis(250));
    }

    #[test]
    fn outages_are_windows_from_the_start() {
        let o = Outage {
            start: Duration::from_secs(1),
            len: Some(Duration::from_secs(2)),
        };
        assert!(!o.contains(Duration::from_millis(999)));
        assert!(o.contains(Duration::from_secs(1)));
        assert!(!o.contains(Duration::from_secs(3)));
        let forever = Outage {
            start: Duration::ZERO,
            len: None,
        };
        assert!(forever.contains(Duration::from_secs(1_000_000)));
    }
}
