//! Static device sessions, provisioned from a JSON file (the controller-less mode):
//! `{"devices": [{"device": 1, "scene": 1, "key": "<64 hex chars>"}, ...]}`.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::wire::SessionKey;

/// One provisioned device.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SessionEntry {
    pub device: u32,
    pub scene: u32,
    /// 32-byte session key, hex.
    pub key: String,
}

impl SessionEntry {
    pub fn session_key(&self) -> Result<SessionKey, SessionsError> {
        SessionKey::from_hex(&self.key).ok_or(SessionsError::BadKey(self.device))
    }
}

/// The sessions file.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SessionsFile {
    pub devices: Vec<SessionEntry>,
}

/// Why a sessions file was refused.
#[derive(Debug)]
#[non_exhaustive]
pub enum SessionsError {
    Io(std::io::Error),
    Json(serde_json::Error),
    BadKey(u32),
    Duplicate(u32),
    ZeroId,
}

impl std::fmt::Display for SessionsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionsError::Io(e) => write!(f, "cannot read sessions file: {e}"),
            SessionsError::Json(e) => write!(f, "sessions file is not valid: {e}"),
            SessionsError::BadKey(d) => write!(f, "device {d}: key must be 64 hex characters"),
            SessionsError::Duplicate(d) => write!(f, "device {d} appears twice"),
            SessionsError::ZeroId => write!(f, "device and scene ids start at 1"),
        }
    }
}

impl std::error::Error for SessionsError {}

impl SessionsFile {
    /// Reads and validates a sessions file.
    pub fn load(path: &Path) -> Result<SessionsFile, SessionsError> {
        let text = std::fs::read_to_string(path).map_err(SessionsError::Io)?;
        SessionsFile::parse(&text)
    }

    pub fn parse(text: &str) -> Result<SessionsFile, SessionsError> {
        let file: SessionsFile = serde_json::from_str(text).map_err(SessionsError::Json)?;
        let mut seen = HashSet::new();
        for d in &file.devices {
            if d.device == 0 || d.scene == 0 {
                return Err(SessionsError::ZeroId);
            }
            if !seen.insert(d.device) {
                return Err(SessionsError::Duplicate(d.device));
            }
            d.session_key()?;
        }
        Ok(file)
    }

    /// `count` devices numbered from `first`, spread round-robin over scenes 1..=scenes, each
    /// with a fresh random key.
    pub fn generate(first: u32, count: u32, scenes: u32) -> SessionsFile {
        let scenes = scenes.max(1);
        let devices = (0..count)
            .map(|i| SessionEntry {
                device: first.max(1) + i,
                scene: 1 + i % scenes,
                key: SessionKey::random().to_hex(),
            })
            .collect();
        SessionsFile { devices }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    pub fn get(&self, device: u32) -> Option<&SessionEntry> {
        self.devices.iter().find(|d| d.device == device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_validation() {
        let f = SessionsFile::generate(1, 3, 2);
        let back = SessionsFile::parse(&f.to_json()).unwrap();
        assert_eq!(back, f);
        assert_eq!(back.devices[2].scene, 1);
        let dup = r#"{"devices":[{"device":1,"scene":1,"key":"00"}]}"#;
        assert!(matches!(
            SessionsFile::parse(dup),
            Err(SessionsError::BadKey(1))
        ));
        let k = "11".repeat(32);
        let dup = format!(
            r#"{{"devices":[{{"device":1,"scene":1,"key":"{k}"}},{{"device":1,"scene":2,"key":"{k}"}}]}}"#
        );
        assert!(matches!(
            SessionsFile::parse(&dup),
            Err(SessionsError::Duplicate(1))
        ));
        assert!(matches!(
            SessionsFile::parse("{"),
            Err(SessionsError::Json(_))
        ));
        assert!(matches!(
            SessionsFile::parse(r#"{"devices":[],"extra":1}"#),
            Err(SessionsError::Json(_))
        ));
    }
}
