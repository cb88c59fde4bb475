//! `c10m-bench`: the project's benchmarks, one subcommand each. `--json` prints one JSON
//! object on stdout; progress goes to stderr.

mod client;
mod compare;
mod conns;
mod cps;
mod flood;
mod impair;
mod loss;
mod measure;
mod memory;
mod net;
mod proto;
mod reflect;
mod rps;
mod stack;
mod xsk;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "c10m-bench",
    about = "Benchmarks of the c10m dataplane",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// In-memory scale scenario: two stacks back to back on simulated time.
    Stack(stack::Args),
    /// This host's memory: the latency of one random cache miss and how many one core
    /// overlaps, with and without transparent hugepages (what a cold connection costs).
    Memory(memory::Args),
    /// Connection scale over AF_XDP: a stateless client opening, holding and resetting
    /// N connections (run in c10m-gen).
    Conns(conns::Args),
    /// Raw AF_XDP packet rates (tx, rx-drop, or both across the test bed).
    Xsk(xsk::Args),
    /// The dataplane against the kernel on the same host: held connections and memory,
    /// RPS and latency, CPS; a side-by-side table and a report with plots.
    Compare(compare::Args),
    /// Requests per second and their latency over long-lived connections (http or
    /// echo), the project's stack as the client on AF_XDP (run in c10m-gen).
    Rps(rps::Args),
    /// Connections per second: connect, one request, the response, reset (run in
    /// c10m-gen).
    Cps(cps::Args),
    /// A stateless TCP reflector on AF_XDP where the dataplane would run: SYN-ACK, one
    /// response segment per request, FIN-ACK; the ceiling of this path (run in c10m-dut).
    Reflect(reflect::Args),
    /// Hostile traffic: a bounded SYN, ACK or RST flood from spoofed sources in
    /// 198.18.0.0/15 over AF_XDP (run in c10m-gen).
    Flood(flood::Args),
    /// Loss on the test bed: drop a fraction of the IP frames leaving an interface
    /// (gen0: toward the server) or arriving at it (toward the client), show the
    /// counters, or remove it (run in c10m-gen).
    Impair(impair::Args),
    /// One connection's bulk goodput and request latency at several loss rates toward
    /// the server or the client, the dataplane against the kernel (run as root with the
    /// bed up).
    Loss(loss::Args),
}

/// Runs one subcommand. An error — usually an operator's: no such interface, the test
/// bed down, a server not answering — is one line on stderr that says what to do, and
/// exit status 1.
fn main() -> ExitCode {
    let cli = Cli::parse();
    let (name, result) = match cli.command {
        Command::Stack(args) => ("stack", stack::run(&args)),
        Command::Memory(args) => ("memory", memory::run(&args)),
        Command::Xsk(args) => ("xsk", xsk::run(&args)),
        Command::Conns(args) => ("conns", conns::run(&args)),
        Command::Rps(args) => ("rps", rps::run(&args)),
        Command::Cps(args) => ("cps", cps::run(&args)),
        Command::Compare(args) => ("compare", compare::run(&args)),
        Command::Flood(args) => ("flood", flood::run(&args)),
        Command::Reflect(args) => ("reflect", reflect::run(&args)),
        Command::Impair(args) => ("impair", impair::run(&args)),
        Command::Loss(args) => ("loss", loss::run(&args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("c10m-bench {name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}
