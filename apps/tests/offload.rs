//! The offload pool: slow jobs run on pool threads while the worker keeps answering, and
//! results reach the right connection; the queue is bounded.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use c10m_apps::offload::Offload;
use c10m_apps::{Conn, Conns, Error, Service, kernel};

/// `SLOW n` → sleeps 300 ms on the pool, then answers `DONE n`; `PING` → `PONG` at once.
struct Slow {
    pool: Offload<u64, u64>,
}

impl Service for Slow {
    type State = Vec<u8>;
    type Command = ();

    fn on_accept(&mut self, _conn: &mut Conn<'_>) -> Vec<u8> {
        Vec::new()
    }

    fn on_readable(&mut self, conn: &mut Conn<'_>, line: &mut Vec<u8>) {
        loop {
            match conn.recv_with(|b| (b.len(), line.extend_from_slice(b))) {
                Ok(()) => {}
                Err(Error::Finished) => return conn.close(),
                Err(_) => return,
            }
            let Some(end) = line.iter().position(|&c| c == b'\n') else {
                return;
            };
            let text: Vec<u8> = line.drain(..=end).collect();
            let text = String::from_utf8_lossy(text.trim_ascii_end()).into_owned();
            if let Some(n) = text.strip_prefix("SLOW ") {
                let n = n.parse().unwrap_or(0);
                if self.pool.submit(conn.handle(), n).is_err() {
                    let _ = conn.send(b"BUSY\n");
                }
            } else {
                let _ = conn.send(b"PONG\n");
            }
        }
    }

    fn on_poll(&mut self, conns: &mut Conns<'_, Vec<u8>>) {
        self.pool.complete(conns, |conn, _, n| {
            let _ = conn.send(format!("DONE {n}\n").as_bytes());
        });
    }

    fn busy(&self) -> bool {
        self.pool.pending() > 0
    }
}

fn line(r: &mut BufReader<TcpStream>) -> String {
    let mut l = String::new();
    r.read_line(&mut l).unwrap();
    l
}

#[test]
fn slow_jobs_come_back_to_their_connection_while_the_worker_keeps_serving() {
    let addr = SocketAddr::from(([127, 0, 0, 1], 0));
    let server = kernel::Server::start(&kernel::Config::default(), &[addr], |_, _, _| Slow {
        pool: Offload::new(4, 64, |n: u64| {
            std::thread::sleep(Duration::from_millis(300));
            n * 10
        })
        .unwrap(),
    })
    .unwrap();
    let a = server.local_addrs()[0];
    let mut slow: Vec<BufReader<TcpStream>> = (0..4)
        .map(|_| {
            let s = TcpStream::connect(a).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            BufReader::new(s)
        })
        .collect();
    let started = Instant::now();
    for (i, c) in slow.iter_mut().enumerate() {
        c.get_mut()
            .write_all(format!("SLOW {i}\n").as_bytes())
            .unwrap();
    }
    // The one worker is not blocked: a PING on another connection is answered at once.
    let mut fast = BufReader::new(TcpStream::connect(a).unwrap());
    fast.get_mut()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    fast.get_mut().write_all(b"PING\n").unwrap();
    assert_eq!(line(&mut fast), "PONG\n");
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "answered while the jobs ran: {:?}",
        started.elapsed()
    );
    for (i, c) in slow.iter_mut().enumerate() {
        assert_eq!(line(c), format!("DONE {}\n", i * 10), "connection {i}");
    }
    // Four jobs on four threads ran side by side.
    assert!(started.elapsed() < Duration::from_millis(1200));
    server.stop().unwrap();
}
