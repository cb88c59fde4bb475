//! Half-sync/half-async: a service whose requests need slow work (here a deliberately
//! expensive hash, standing for a blocking lookup) hands it to an offload pool and
//! answers when the result comes back, so the worker keeps serving other connections.
//!
//! `cargo run -p c10m-apps --example offload -- [PORT] [--secs N]`, then
//! `nc 127.0.0.1 PORT` and type `HASH some text` (slow, offloaded) or `PING` (at once).
use c10m_apps::offload::Offload;
use c10m_apps::{Conn, Conns, Error, Service, kernel};

/// The slow work: many rounds of FNV-1a, on a pool thread.
fn slow_hash(text: Vec<u8>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for _ in 0..200_000 {
        for &b in &text {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    format!("{h:016x}\n")
}

struct Hasher {
    pool: Offload<Vec<u8>, String>,
}

impl Service for Hasher {
    type State = Vec<u8>; // the partial line
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
                if line.len() > 4096 {
                    conn.abort();
                }
                return;
            };
            let text: Vec<u8> = line.drain(..=end).collect();
            let text = text.trim_ascii_end();
            if let Some(arg) = text.strip_prefix(b"HASH ") {
                // Too slow for a handler: to the pool; the answer comes in on_poll.
                if self.pool.submit(conn.handle(), arg.to_vec()).is_err() {
                    let _ = conn.send(b"BUSY\n");
                }
            } else if text == b"PING" {
                let _ = conn.send(b"PONG\n");
            } else {
                let _ = conn.send(b"ERR\n");
            }
        }
    }

    fn on_poll(&mut self, conns: &mut Conns<'_, Vec<u8>>) {
        self.pool.complete(conns, |conn, _, hash| {
            let _ = conn.send(hash.as_bytes());
        });
    }

    fn busy(&self) -> bool {
        self.pool.pending() > 0
    }
}

fn main() -> std::process::ExitCode {
    // One line of `Display` on failure (a `Result` from `main` prints the `Debug` form).
    match serve() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("offload: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn serve() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let port = args.first().and_then(|p| p.parse().ok()).unwrap_or(7001);
    let secs = args
        .iter()
        .position(|a| a == "--secs")
        .and_then(|i| args.get(i + 1)?.parse().ok());
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let server = kernel::Server::start(&kernel::Config::default(), &[addr], |_, _, _| Hasher {
        pool: Offload::new(2, 1024, slow_hash).expect("starting the offload pool"),
    })?;
    println!("offload example on {}", server.local_addrs()[0]);
    std::thread::sleep(std::time::Duration::from_secs(secs.unwrap_or(u64::MAX / 4)));
    server.stop()?;
    Ok(())
}
