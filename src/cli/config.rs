//! Configuration, from four places, the first that sets a value winning: a command-line flag,
//! its `ZONECAST_<NAME>` environment variable (NAME: the flag's name in capitals with `_` for
//! `-`, e.g. `--evict-after-ms` is `ZONECAST_EVICT_AFTER_MS`), the TOML configuration file
//! (`--config FILE` or `ZONECAST_CONFIG`), then the built-in default shown by `--help`.
//!
//! The file has a table per command, keyed by flag names (`-` or `_`), and top-level keys for
//! every command (`log`, `log_format`, `token`, ...); `zonecast.example.toml` in the repository
//! lists them all with their defaults. A value from the file is handed to the command as its
//! environment variable when that is not set, so clap sees one precedence chain. Keys that
//! are no flag of their command are refused (a typo must not be silently ignored), and
//! `zonecast config check FILE` parses and validates every table without running anything.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::Command;

use super::Failure;

/// The environment variable of the flag with id `id`.
pub fn env_name(id: &str) -> String {
    format!("ZONECAST_{}", id.replace('-', "_").to_uppercase())
}

/// `cmd` with an environment variable on every long flag that has none yet, in every
/// subcommand.
pub fn with_env(cmd: Command) -> Command {
    cmd.mut_args(|a| {
        let id = a.get_id().as_str().to_string();
        if a.get_long().is_none() || a.get_env().is_some() || id == "help" || id == "version" {
            a
        } else {
            // Built once per process: leaking the few dozen names is what `&'static` needs.
            a.env(&*Box::leak(env_name(&id).into_boxed_str()))
        }
    })
    .mut_subcommands(with_env)
}

/// The configuration file named by `--config FILE` (or `--config=FILE`) in `argv`, else by
/// `ZONECAST_CONFIG`.
fn file_in(argv: &[OsString]) -> Option<PathBuf> {
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        let a = a.to_string_lossy();
        if a == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(f) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(f));
        }
    }
    std::env::var_os("ZONECAST_CONFIG").map(PathBuf::from)
}

/// The subcommand `argv` runs: its first argument that names one of `cmd`'s.
fn command_in<'c>(cmd: &'c Command, argv: &[OsString]) -> Option<&'c Command> {
    argv.iter()
        .skip(1)
        .find_map(|a| cmd.find_subcommand(a.to_string_lossy().as_ref()))
}

/// A parsed configuration file: top-level values and a table per command.
pub struct File {
    path: PathBuf,
    table: toml::Table,
}

impl File {
    pub fn read(path: &Path) -> Result<File, Failure> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Failure::usage(format!("{}: {e}", path.display())))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e| Failure::usage(format!("{}: {e}", path.display())))?;
        Ok(File {
            path: path.to_path_buf(),
            table,
        })
    }

    /// The values for subcommand `sub` of `root`: top-level keys (those `sub` has), then
    /// its table (which wins), as (flag id, value) pairs. Unknown keys and tables are
    /// errors.
    pub fn values_for(
        &self,
        root: &Command,
        sub: &Command,
    ) -> Result<Vec<(String, String)>, Failure> {
        let mut out = Vec::new();
        for (key, value) in &self.table {
            if let toml::Value::Table(t) = value {
                if root.find_subcommand(key).is_none() {
                    return Err(self.error(format!("[{key}] is not a zonecast command")));
                }
                if key != sub.get_name() {
                    continue;
                }
                for (k, v) in t {
                    let id = k.replace('-', "_");
                    if !has_flag(sub, &id) {
                        return Err(self.error(format!(
                            "[{key}] {k}: `zonecast {key}` has no --{}",
                            id.replace('_', "-")
                        )));
                    }
                    out.retain(|(i, _)| i != &id);
                    out.push((id, self.scalar(k, v)?));
                }
            } else {
                let id = key.replace('-', "_");
                if !root.get_subcommands().any(|c| has_flag(c, &id)) && !has_flag(root, &id) {
                    return Err(self.error(format!(
                        "{key}: no zonecast command has --{}",
                        id.replace('_', "-")
                    )));
                }
                if has_flag(sub, &id) || has_flag(root, &id) {
                    out.push((id, self.scalar(key, value)?));
                }
            }
        }
        Ok(out)
    }

    fn scalar(&self, key: &str, v: &toml::Value) -> Result<String, Failure> {
        Ok(match v {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            _ => return Err(self.error(format!("{key}: give a string, a number or a boolean"))),
        })
    }

    fn error(&self, message: String) -> Failure {
        Failure::usage(format!("{}: {message}", self.path.display()))
    }

    /// The tables of the file (the commands it configures).
    pub fn commands(&self) -> Vec<String> {
        self.table
            .iter()
            .filter(|(_, v)| v.is_table())
            .map(|(k, _)| k.clone())
            .collect()
    }
}

fn has_flag(cmd: &Command, id: &str) -> bool {
    cmd.get_arguments()
        .any(|a| a.get_id().as_str() == id && a.get_long().is_some())
}

/// Reads the configuration file `argv` names, if any, and sets the environment variable of
/// every value in it that is not set already (so flags and the environment win).
pub fn apply_file(root: &Command, argv: &[OsString]) -> Result<(), Failure> {
    let Some(path) = file_in(argv) else {
        return Ok(());
    };
    let file = File::read(&path)?;
    let Some(sub) = command_in(root, argv) else {
        return Ok(());
    };
    for (id, value) in file.values_for(root, sub)? {
        let name = env_name(&id);
        if std::env::var_os(&name).is_none() {
            // Single-threaded still: nothing else reads the environment yet.
            std::env::set_var(name, value);
        }
    }
    Ok(())
}

/// The command lines `zonecast config check` validates: one per table, its values as flags
/// (a `false` boolean is left out, a `true` one is the bare flag).
pub fn check_lines(root: &Command, file: &File) -> Result<Vec<Vec<String>>, Failure> {
    let mut lines = Vec::new();
    for name in file.commands() {
        let sub = root
            .find_subcommand(&name)
            .ok_or_else(|| file.error(format!("[{name}] is not a zonecast command")))?;
        let mut argv = vec!["zonecast".to_string(), name.clone()];
        for (id, value) in file.values_for(root, sub)? {
            let flag = format!("--{}", id.replace('_', "-"));
            match value.as_str() {
                "false" if is_switch(root, sub, &id) => {}
                "true" if is_switch(root, sub, &id) => argv.push(flag),
                _ => {
                    argv.push(flag);
                    argv.push(value);
                }
            }
        }
        lines.push(argv);
    }
    Ok(lines)
}

fn is_switch(root: &Command, sub: &Command, id: &str) -> bool {
    sub.get_arguments()
        .chain(root.get_arguments())
        .find(|a| a.get_id().as_str() == id)
        .is_some_and(|a| !a.get_action().takes_values())
}
