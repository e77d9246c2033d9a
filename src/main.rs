//! The `zonecast` command: `pair`, `device`, `sessions` and `up`. Argument parsing only; each
//! subcommand lives in `cli/`.

mod cli;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "zonecast",
    version,
    about = "Low-latency relay for shared real-time spaces"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pair (UDP ingest + bus + fanout) serving the device sessions of a file.
    Pair(cli::pair::PairArgs),
    /// Join a scene as a device: print what arrives, optionally send updates.
    Device(cli::device::DeviceArgs),
    /// Print a sessions file with fresh random keys.
    Sessions(cli::sessions::SessionsArgs),
    /// Run a whole local setup in one process: a pair, its sessions and simulated devices.
    Up(cli::up::UpArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Pair(a) => cli::pair::run(a),
        Command::Device(a) => cli::device::run(a),
        Command::Sessions(a) => cli::sessions::run(a),
        Command::Up(a) => cli::up::run(a),
    };
    if let Err(e) = result {
        eprintln!("zonecast: {e}");
        std::process::exit(1);
    }
}
