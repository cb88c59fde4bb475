//! A packet capture inside a namespace, for tests that check segments on the wire: an
//! AF_PACKET socket (every frame the namespace sends and receives) read by a thread of its
//! own, the TCP segments parsed out of it, and a pcap file of everything it saw written
//! when the test fails (`target/tmp/pcap/NAME.pcap`, the path printed after the failure;
//! `C10M_KEEP_PCAP=1` keeps it whatever the outcome).
//!
//! Why not smoltcp's `PcapWriter`: it wraps a smoltcp device, and the device under test
//! runs in another process (`c10m run`); a capture on the peer's side also shows what the
//! kernel client really sent and received, which is what a conformance test is about.
#![allow(dead_code, unreachable_pub)]

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use socket2::{Domain, Protocol, Socket, Type};

use super::in_netns;

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;

struct Frame {
    /// Since the Unix epoch.
    at: Duration,
    data: Vec<u8>,
}

/// One TCP segment over IPv4 or IPv6, as captured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    /// The window field as sent (not scaled).
    pub win: u16,
    /// Payload bytes.
    pub len: u32,
    pub mss: Option<u16>,
    pub wscale: Option<u8>,
    pub sack_permitted: bool,
    /// TSval, TSecr.
    pub timestamps: Option<(u32, u32)>,
}

impl Segment {
    pub fn has(&self, flags: u8) -> bool {
        self.flags & flags == flags
    }

    /// Parses an Ethernet frame; `None` unless it is a whole TCP segment over IPv4, or
    /// over IPv6 with no extension header.
    fn parse(f: &[u8]) -> Option<Segment> {
        let ip = f.get(14..)?;
        let (src, dst, tcp): (IpAddr, IpAddr, _) = match f.get(12..14)? {
            [0x08, 0x00] if ip.len() >= 20 => {
                let ihl = usize::from(ip[0] & 0x0f) * 4;
                let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
                if ip[0] >> 4 != 4 || ip[9] != 6 || ihl < 20 || total > ip.len() {
                    return None;
                }
                let addr = |o: usize| Ipv4Addr::from(<[u8; 4]>::try_from(&ip[o..o + 4]).unwrap());
                (addr(12).into(), addr(16).into(), ip.get(ihl..total)?)
            }
            [0x86, 0xdd] if ip.len() >= 40 => {
                let len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
                if ip[0] >> 4 != 6 || ip[6] != 6 {
                    return None;
                }
                let addr = |o: usize| Ipv6Addr::from(<[u8; 16]>::try_from(&ip[o..o + 16]).unwrap());
                (addr(8).into(), addr(24).into(), ip.get(40..40 + len)?)
            }
            _ => return None,
        };
        if tcp.len() < 20 {
            return None;
        }
        let be16 = |o: usize| u16::from_be_bytes([tcp[o], tcp[o + 1]]);
        let be32 = |o: usize| u32::from_be_bytes([tcp[o], tcp[o + 1], tcp[o + 2], tcp[o + 3]]);
        let doff = usize::from(tcp[12] >> 4) * 4;
        if doff < 20 || doff > tcp.len() {
            return None;
        }
        let mut s = Segment {
            src: SocketAddr::new(src, be16(0)),
            dst: SocketAddr::new(dst, be16(2)),
            seq: be32(4),
            ack: be32(8),
            flags: tcp[13],
            win: be16(14),
            len: (tcp.len() - doff) as u32,
            mss: None,
            wscale: None,
            sack_permitted: false,
            timestamps: None,
        };
        let mut opts = &tcp[20..doff];
        while let Some(&kind) = opts.first() {
            match kind {
                0 => break,
                1 => opts = &opts[1..],
                _ => {
                    let n = usize::from(*opts.get(1)?);
                    if n < 2 || n > opts.len() {
                        return None;
                    }
                    let o = &opts[..n];
                    match (kind, n) {
                        (2, 4) => s.mss = Some(u16::from_be_bytes([o[2], o[3]])),
                        (3, 3) => s.wscale = Some(o[2]),
                        (4, 2) => s.sack_permitted = true,
                        (8, 10) => {
                            let v =
                                |i: usize| u32::from_be_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
                            s.timestamps = Some((v(2), v(6)));
                        }
                        _ => {}
                    }
                    opts = &opts[n..];
                }
            }
        }
        Some(s)
    }
}

/// Captures every frame of namespace `ns` while it lives.
pub struct Capture {
    name: String,
    frames: Arc<Mutex<Vec<Frame>>>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

impl Capture {
    /// Starts capturing in `ns`; `name` names the pcap file kept if the test fails.
    pub fn start(ns: &str, name: &str) -> Capture {
        // ETH_P_ALL in network byte order: frames of every protocol, both directions.
        let all = Protocol::from(i32::from((libc::ETH_P_ALL as u16).to_be()));
        let sock = in_netns(ns, || Socket::new(Domain::PACKET, Type::RAW, Some(all)))
            .expect("an AF_PACKET socket (needs root)");
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let _ = sock.set_recv_buffer_size(8 << 20);
        let frames = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (frames, stop) = (frames.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 16];
                while !stop.load(Ordering::Relaxed) {
                    match (&sock).read(&mut buf) {
                        Ok(n) => {
                            let at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
                            let data = buf[..n].to_vec();
                            frames.lock().unwrap().push(Frame { at, data });
                        }
                        Err(e)
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                        Err(e) => panic!("capture: {e}"),
                    }
                }
            })
        };
        Capture {
            name: name.to_owned(),
            frames,
            stop,
            reader: Some(reader),
        }
    }

    /// The TCP segments captured so far, in order.
    pub fn segments(&self) -> Vec<Segment> {
        let frames = self.frames.lock().unwrap();
        frames
            .iter()
            .filter_map(|f| Segment::parse(&f.data))
            .collect()
    }

    /// Waits up to `limit` until `done` holds for the segments captured; returns them, or
    /// panics naming `what`.
    pub fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        done: impl Fn(&[Segment]) -> bool,
    ) -> Vec<Segment> {
        let deadline = Instant::now() + limit;
        loop {
            let segs = self.segments();
            if done(&segs) {
                return segs;
            }
            assert!(
                Instant::now() < deadline,
                "not on the wire after {limit:?}: {what}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Writes what was captured as a pcap file (microsecond timestamps, Ethernet).
    pub fn save(&self) -> std::io::Result<PathBuf> {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pcap");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{}.pcap", self.name));
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
        let header: [u32; 6] = [0xa1b2_c3d4, 2 | 4 << 16, 0, 0, 1 << 16, 1];
        for w in header {
            out.write_all(&w.to_le_bytes())?;
        }
        for f in self.frames.lock().unwrap().iter() {
            let len = f.data.len() as u32;
            for w in [f.at.as_secs() as u32, f.at.subsec_micros(), len, len] {
                out.write_all(&w.to_le_bytes())?;
            }
            out.write_all(&f.data)?;
        }
        out.flush()?;
        Ok(path)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        if std::thread::panicking() || std::env::var_os("C10M_KEEP_PCAP").is_some() {
            match self.save() {
                Ok(path) => eprintln!("the test's traffic: {}", path.display()),
                Err(e) => eprintln!("saving the test's traffic: {e}"),
            }
        }
    }
}
