//! The `zonecast` command: `controller`, `status`, `scene`, `pair`, `ingest`, `fanout`,
//! `device`, `sessions`, `keygen` and `up`. Argument parsing only; each
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
    /// Run the controller (ZeroMQ control plane).
    Controller(cli::controller::ControllerArgs),
    /// Show the cluster: regions, pairs with load and health, scenes.
    Status(cli::operator::OperatorArgs),
    /// Create, list, show or delete scenes.
    Scene(cli::operator::SceneArgs),
    /// Run a pair (UDP ingest + bus + fanout), registered with a controller or serving the
    /// device sessions of a file.
    Pair(cli::pair::PairCli),
    /// Run the ingest half of a split pair: it registers the pair and streams every event to
    /// its fanout half over ipc://.
    Ingest(cli::split::IngestArgs),
    /// Run the fanout half of a split pair, subscribed to its ingest half.
    Fanout(cli::split::FanoutArgs),
    /// Join a scene as a device: print what arrives, optionally send updates.
    Device(cli::device::DeviceArgs),
    /// Print a sessions file with fresh random keys.
    Sessions(cli::sessions::SessionsArgs),
    /// Write a new key pair (CurveZMQ and Noise) for a controller or a pair.
    Keygen(cli::keygen::KeygenArgs),
    /// Run a whole local cluster in one process: a controller, two pairs, a demo scene and
    /// simulated devices.
    Up(cli::up::UpArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Controller(a) => cli::controller::run_controller(a),
        Command::Status(a) => cli::operator::run_status(a),
        Command::Scene(a) => cli::operator::run_scene(a),
        Command::Pair(a) => cli::pair::run_cli(a),
        Command::Ingest(a) => cli::split::run_ingest(a),
        Command::Fanout(a) => cli::split::run_fanout(a),
        Command::Device(a) => cli::device::run(a),
        Command::Sessions(a) => cli::sessions::run(a),
        Command::Keygen(a) => cli::keygen::run(a),
        Command::Up(a) => cli::up::run(a),
    };
    if let Err(e) = result {
        eprintln!("zonecast: {e}");
        std::process::exit(1);
    }
}
