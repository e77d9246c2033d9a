//! The `zonecast` command: `controller`, `status`, `scene`, `pair`, `ingest`, `fanout`,
//! `device`, `sessions`, `keygen`, `config` and `up`. Argument parsing, configuration layers
//! (`cli/config.rs`), logging and exit statuses only; each subcommand lives in `cli/`.

mod cli;

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use cli::logging::LogFormat;
use cli::Failure;

#[derive(Parser)]
#[command(
    name = "zonecast",
    version,
    about = "Low-latency relay for shared real-time spaces"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Configuration file (TOML; `zonecast.example.toml` lists every key): values that no
    /// flag and no ZONECAST_* environment variable sets.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Log filter, e.g. `info` or `warn,zonecast::pair=debug` (default: RUST_LOG, else info).
    #[arg(long, global = true)]
    log: Option<String>,
    /// Log lines as text or JSON (one object per line), on stderr.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
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
    /// Check a configuration file.
    Config(ConfigArgs),
    /// Run a whole local cluster in one process: a controller, two pairs, a demo scene and
    /// simulated devices.
    Up(cli::up::UpArgs),
}

#[derive(Args)]
struct ConfigArgs {
    #[command(subcommand)]
    action: ConfigAction,
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Parse FILE and validate every command's table in it, as that command would (exit 2
    /// with the reason when a key or a value is wrong).
    Check {
        /// The TOML file.
        file: PathBuf,
    },
}

/// The command tree, with a ZONECAST_* environment variable on every flag.
fn command() -> clap::Command {
    cli::config::with_env(Cli::command())
}

fn parse(argv: &[OsString]) -> Result<Cli, clap::Error> {
    let matches = command().try_get_matches_from(argv)?;
    Cli::from_arg_matches(&matches)
}

fn main() {
    let argv: Vec<OsString> = std::env::args_os().collect();
    if let Err(f) = cli::config::apply_file(&command(), &argv) {
        exit(f);
    }
    let cli = parse(&argv).unwrap_or_else(|e| e.exit());
    if let Err(e) = cli::logging::init(cli.log.as_deref(), cli.log_format) {
        exit(Failure::usage(e));
    }
    let result = match cli.command {
        Command::Controller(a) => cli::controller::run_controller(a),
        Command::Status(a) => cli::operator::run_status(a).map_err(Failure::from),
        Command::Scene(a) => cli::operator::run_scene(a).map_err(Failure::from),
        Command::Pair(a) => cli::pair::run_cli(a),
        Command::Ingest(a) => cli::split::run_ingest(a),
        Command::Fanout(a) => cli::split::run_fanout(a),
        Command::Device(a) => cli::device::run(a),
        Command::Sessions(a) => cli::sessions::run(a).map_err(Failure::from),
        Command::Keygen(a) => cli::keygen::run(a).map_err(Failure::from),
        Command::Config(ConfigArgs {
            action: ConfigAction::Check { file },
        }) => check(&file),
        Command::Up(a) => cli::up::run(a).map_err(Failure::from),
    };
    if let Err(f) = result {
        exit(f);
    }
}

fn exit(f: Failure) -> ! {
    eprintln!("zonecast: {}", f.message);
    std::process::exit(f.status);
}

/// `zonecast config check FILE`: every table parsed as its command's flags and validated.
fn check(path: &std::path::Path) -> Result<(), Failure> {
    let file = cli::config::File::read(path)?;
    let lines = cli::config::check_lines(&command(), &file)?;
    for argv in &lines {
        let name = &argv[1];
        let cli = match parse(&argv.iter().map(OsString::from).collect::<Vec<_>>()) {
            Ok(c) => c,
            // A table may leave a required flag to the command line.
            Err(e) if e.kind() == clap::error::ErrorKind::MissingRequiredArgument => continue,
            Err(e) => {
                let why = e.render().to_string();
                let why = why
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim_start_matches("error: ");
                return Err(Failure::usage(format!(
                    "{}: [{name}] {why}",
                    path.display()
                )));
            }
        };
        let valid = match &cli.command {
            Command::Controller(a) => a.validate(),
            Command::Pair(a) => a.validate(),
            Command::Ingest(a) => a.validate(),
            Command::Fanout(a) => a.validate(),
            Command::Device(a) => a.validate(),
            _ => Ok(()),
        };
        valid.map_err(|e| Failure::usage(format!("{}: [{name}] {}", path.display(), e.message)))?;
    }
    println!("{}: ok ({} command table(s))", path.display(), lines.len());
    Ok(())
}
