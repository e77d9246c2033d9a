//! X25519 key pairs: one format for CurveZMQ (the control plane, the ZeroMQ bus) and Noise
//! (the replication stream), both of which are Curve25519 Diffie-Hellman.
//!
//! Keys are shown in Z85 (40 characters, ZeroMQ RFC 32), encoded by libzmq. Key files use the
//! ZeroMQ certificate layout (czmq `zcert`, pyzmq `zmq.auth`): `NAME.key` holds the public key,
//! `NAME.key_secret` both keys and is written mode 0600; a secret file that others can read is
//! refused, like ssh refuses an unprotected private key. pyzmq's `zmq.auth.load_certificate`
//! reads both files as they are.
//!
//! Secrets come from the operating system's CSPRNG; the public key is derived with
//! x25519-dalek and checked against the file's on load, so a damaged file is an error, not a
//! silent wrong key.

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::SecurityError;

/// A Curve25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    pub fn from_bytes(raw: [u8; 32]) -> PublicKey {
        PublicKey(raw)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses the 40-character Z85 form.
    pub fn from_z85(s: &str) -> Result<PublicKey, SecurityError> {
        decode_z85(s.trim()).map(PublicKey)
    }

    pub fn to_z85(&self) -> String {
        encode_z85(&self.0)
    }

    /// A key given on the command line: its Z85 text, or the path of a key file (`NAME.key`
    /// or `NAME.key_secret`) holding it.
    pub fn from_arg(arg: &str) -> Result<PublicKey, SecurityError> {
        let arg = arg.trim();
        if arg.len() == 40 && !Path::new(arg).exists() {
            return PublicKey::from_z85(arg);
        }
        let text = fs::read_to_string(arg)
            .map_err(|e| SecurityError::Key(format!("cannot read key file {arg}: {e}")))?;
        let public = field(&text, "public-key").ok_or_else(|| {
            SecurityError::Key(format!("{arg} is neither a Z85 key nor a key file"))
        })?;
        PublicKey::from_z85(&public)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_z85())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_z85())
    }
}

/// A Curve25519 key pair. The secret is wiped from memory when the pair is dropped.
#[derive(Clone)]
pub struct KeyPair {
    public: PublicKey,
    secret: x25519_dalek::StaticSecret,
}

impl KeyPair {
    /// A fresh key pair from the operating system's random source.
    pub fn generate() -> KeyPair {
        let mut raw = [0u8; 32];
        getrandom::getrandom(&mut raw).expect("the operating system's random source failed");
        KeyPair::from_secret(raw)
    }

    /// The key pair of a 32-byte secret.
    pub fn from_secret(raw: [u8; 32]) -> KeyPair {
        let secret = x25519_dalek::StaticSecret::from(raw);
        let public = PublicKey(x25519_dalek::PublicKey::from(&secret).to_bytes());
        KeyPair { public, secret }
    }

    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// The raw secret, for libzmq and snow, which take keys as bytes.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.secret.to_bytes()
    }

    /// Reads `NAME.key_secret` (the path given, or `path + "_secret"` when `path` is the
    /// public file): refuses a file group or others can read, and one whose public key does
    /// not match its secret.
    pub fn load(path: &Path) -> Result<KeyPair, SecurityError> {
        let path = if path.extension().is_some_and(|e| e == "key") {
            secret_path(path)
        } else {
            path.to_path_buf()
        };
        let shown = path.display();
        let meta = fs::metadata(&path)
            .map_err(|e| SecurityError::Key(format!("cannot read key file {shown}: {e}")))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(SecurityError::Key(format!(
                "{shown} is readable by others (mode {:o}): chmod 600 it",
                meta.permissions().mode() & 0o777
            )));
        }
        let text = fs::read_to_string(&path)
            .map_err(|e| SecurityError::Key(format!("cannot read key file {shown}: {e}")))?;
        let secret = field(&text, "secret-key")
            .ok_or_else(|| SecurityError::Key(format!("{shown} has no secret-key")))?;
        let pair = KeyPair::from_secret(decode_z85(&secret)?);
        if let Some(public) = field(&text, "public-key") {
            if PublicKey::from_z85(&public)? != pair.public {
                return Err(SecurityError::Key(format!(
                    "{shown}: public-key does not belong to secret-key"
                )));
            }
        }
        Ok(pair)
    }

    /// Writes `base.key` (public) and `base.key_secret` (mode 0600, never overwritten).
    /// Returns both paths.
    pub fn save(&self, base: &Path) -> Result<(PathBuf, PathBuf), SecurityError> {
        let mut public_path = base.as_os_str().to_owned();
        public_path.push(".key");
        let public_path = PathBuf::from(public_path);
        let secret_path = secret_path(&public_path);
        let io = |p: &Path, e: std::io::Error| {
            SecurityError::Key(format!("cannot write {}: {e}", p.display()))
        };
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&secret_path)
            .map_err(|e| io(&secret_path, e))?;
        f.write_all(certificate(self.public, Some(self)).as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| io(&secret_path, e))?;
        fs::write(&public_path, certificate(self.public, None)).map_err(|e| io(&public_path, e))?;
        Ok((public_path, secret_path))
    }
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyPair({}, secret hidden)", self.public)
    }
}

fn secret_path(public: &Path) -> PathBuf {
    let mut p = public.as_os_str().to_owned();
    p.push("_secret");
    PathBuf::from(p)
}

/// The ZeroMQ certificate text (public only when `pair` is `None`).
fn certificate(public: PublicKey, pair: Option<&KeyPair>) -> String {
    let mut out =
        String::from("#   zonecast key (ZeroMQ CURVE certificate; X25519, also used for Noise)\n");
    match pair {
        Some(_) => out += "#   SECRET: do not share this file or change its permissions.\n",
        None => out += "#   Public: give it to every peer that must authenticate this key.\n",
    }
    out += "\nmetadata\ncurve\n";
    out += &format!("    public-key = \"{public}\"\n");
    if let Some(p) = pair {
        out += &format!("    secret-key = \"{}\"\n", encode_z85(&p.secret_bytes()));
    }
    out
}

/// The quoted value of `name = "..."` in a certificate.
fn field(text: &str, name: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let rest = l
            .trim()
            .strip_prefix(name)?
            .trim_start()
            .strip_prefix('=')?;
        Some(rest.trim().trim_matches('"').to_string())
    })
}

fn encode_z85(raw: &[u8; 32]) -> String {
    zmq::z85_encode(raw).expect("32 bytes are a multiple of 4")
}

fn decode_z85(s: &str) -> Result<[u8; 32], SecurityError> {
    let bad = || SecurityError::Key(format!("`{s}` is not a 40-character Z85 key"));
    if s.len() != 40 {
        return Err(bad());
    }
    let raw: [u8; 32] = zmq::z85_decode(s)
        .map_err(|_| bad())?
        .try_into()
        .map_err(|_| bad())?;
    // libzmq's decoder lets some characters outside the alphabet through: only a key that
    // encodes back to the same text is one.
    if encode_z85(&raw) != s {
        return Err(bad());
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn z85_round_trips_and_matches_the_rfc_example() {
        // ZeroMQ RFC 26 (CurveZMQ) test key pair.
        let secret = decode_z85("JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6").unwrap();
        let pair = KeyPair::from_secret(secret);
        assert_eq!(
            pair.public().to_z85(),
            "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
        );
        let p = PublicKey::from_z85(&pair.public().to_z85()).unwrap();
        assert_eq!(p, pair.public());
        assert!(PublicKey::from_z85("short").is_err());
        assert!(PublicKey::from_z85(&"\u{7f}".repeat(40)).is_err());
    }

    #[test]
    fn key_files_round_trip_and_refuse_damage_and_loose_modes() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("ctl");
        let pair = KeyPair::generate();
        let (public, secret) = pair.save(&base).unwrap();
        assert_eq!(
            fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(KeyPair::load(&secret).unwrap().public(), pair.public());
        assert_eq!(KeyPair::load(&public).unwrap().public(), pair.public());
        assert_eq!(
            PublicKey::from_arg(public.to_str().unwrap()).unwrap(),
            pair.public()
        );
        assert_eq!(
            PublicKey::from_arg(&pair.public().to_z85()).unwrap(),
            pair.public()
        );
        assert!(
            pair.save(&base).is_err(),
            "a secret file is never overwritten"
        );

        // Another key's public line: refused.
        let other = KeyPair::generate().public().to_z85();
        let text = fs::read_to_string(&secret).unwrap();
        let damaged = text.replace(&pair.public().to_z85(), &other);
        fs::write(&secret, damaged).unwrap();
        assert!(KeyPair::load(&secret)
            .unwrap_err()
            .to_string()
            .contains("does not belong"));

        fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(KeyPair::load(&secret)
            .unwrap_err()
            .to_string()
            .contains("chmod 600"));
    }
}
