//! A custom service in about 50 lines: a line-oriented key-value store (`SET k v`,
//! `GET k`), on the kernel backend. The same `Kv` runs unchanged on the simulation and
//! dataplane backends (`c10m_apps::Runtime`).
//!
//! `cargo run -p c10m-apps --example kv -- [PORT] [--secs N]`, then `nc 127.0.0.1 PORT`.
use std::collections::HashMap;

use c10m_apps::{Conn, Error, Service, kernel};

#[derive(Default)]
struct Kv {
    map: HashMap<String, String>,
}

impl Kv {
    fn answer(&mut self, line: &str) -> String {
        let mut words = line.trim_end().splitn(3, ' ');
        match (words.next(), words.next(), words.next()) {
            (Some("SET"), Some(k), Some(v)) => {
                self.map.insert(k.into(), v.into());
                "OK\n".into()
            }
            (Some("GET"), Some(k), None) => match self.map.get(k) {
                Some(v) => format!("{v}\n"),
                None => "NOT FOUND\n".into(),
            },
            _ => "ERR\n".into(),
        }
    }
}

impl Service for Kv {
    type State = Vec<u8>; // the partial line
    type Command = ();

    fn on_accept(&mut self, _conn: &mut Conn<'_>) -> Vec<u8> {
        Vec::new()
    }

    fn on_readable(&mut self, conn: &mut Conn<'_>, line: &mut Vec<u8>) {
        loop {
            match conn.recv_with(|b| (b.len(), line.extend_from_slice(b))) {
                Ok(()) if conn.send_room().is_ok() => {}
                Err(Error::Finished) => return conn.close(),
                _ => return,
            }
            let Some(end) = line.iter().position(|&c| c == b'\n') else {
                if line.len() > 4096 {
                    conn.abort()
                }
                return;
            };
            let text: Vec<u8> = line.drain(..=end).collect();
            let reply = self.answer(&String::from_utf8_lossy(&text));
            let _ = conn.send(reply.as_bytes());
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let port = args.first().and_then(|p| p.parse().ok()).unwrap_or(7000);
    let secs = args
        .iter()
        .position(|a| a == "--secs")
        .and_then(|i| args.get(i + 1)?.parse().ok());
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let server = kernel::Server::start(&kernel::Config::default(), &[addr], |_, _| Kv::default())?;
    println!("kv on {}", server.local_addrs()[0]);
    std::thread::sleep(std::time::Duration::from_secs(secs.unwrap_or(u64::MAX / 4)));
    server.stop()?;
    Ok(())
}
