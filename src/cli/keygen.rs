//! `zonecast keygen`: a new X25519 key pair for CurveZMQ and Noise, written as ZeroMQ
//! certificates (`NAME.key` public, `NAME.key_secret` mode 0600). See docs/SECURITY.md.

use std::path::PathBuf;

use clap::Args;
use zonecast::security::{KeyPair, PublicKey};

#[derive(Args)]
pub struct KeygenArgs {
    /// Base path of the files: writes BASE.key and BASE.key_secret (never overwritten).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: KeygenArgs) -> Result<(), String> {
    let pair = KeyPair::generate();
    let (public, secret) = pair.save(&a.out).map_err(|e| e.to_string())?;
    println!("public key {}", pair.public());
    println!("  public  {} (give it to every peer)", public.display());
    println!(
        "  secret  {} (mode 0600; keep it on this host)",
        secret.display()
    );
    Ok(())
}

/// Parses a `--controller-key` value: a Z85 public key or a key file holding one.
pub fn public_key(arg: &str) -> Result<PublicKey, String> {
    PublicKey::from_arg(arg).map_err(|e| e.to_string())
}
