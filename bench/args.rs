//! Command-line numbers of the single-file benchmarks (`--name value`), shared by `bus`,
//! `control` and `rehome` through `#[path]`.

/// The number after `name` on the command line, or `default`; a value that is not a number
/// stops the benchmark with a message.
pub fn arg(name: &str, default: f64) -> f64 {
    let argv: Vec<String> = std::env::args().collect();
    argv.iter()
        .position(|a| a == name)
        .and_then(|i| argv.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} takes a number"))
        })
        .unwrap_or(default)
}
