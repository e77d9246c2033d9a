//! `zonecast sessions`: write a sessions file with fresh random keys.

use std::path::PathBuf;

use clap::Args;
use zonecast::pair::SessionsFile;

#[derive(Args)]
pub struct SessionsArgs {
    /// How many devices.
    #[arg(long, default_value_t = 4)]
    devices: u32,
    /// Spread the devices round-robin over this many scenes (1..=N).
    #[arg(long, default_value_t = 1)]
    scenes: u32,
    /// First device id.
    #[arg(long, default_value_t = 1)]
    first: u32,
    /// Write to this file instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(a: SessionsArgs) -> Result<(), String> {
    let json = SessionsFile::generate(a.first, a.devices, a.scenes).to_json();
    match a.out {
        Some(path) => std::fs::write(&path, json + "\n")
            .map_err(|e| format!("cannot write {}: {e}", path.display())),
        None => {
            println!("{json}");
            Ok(())
        }
    }
}
