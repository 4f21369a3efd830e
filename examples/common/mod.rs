//! What the command-line examples share: the shape of `main` (help, usage
//! errors, failures and their exit codes) and reading `--flag value` or
//! `--flag=value` arguments.

// Each example uses the part it needs.
#![allow(dead_code)]

use std::fmt::Display;
use std::io::{self, Write};
use std::process::ExitCode;
use std::str::FromStr;

/// Runs an example named `name`: parses the arguments after the program
/// name with `parse` and hands the result to `run`.
///
/// `parse` returns `Ok(None)` for `--help`, which prints `usage` and
/// succeeds. A bad command line prints the message, the first line of
/// `usage` and exits with 2; an error from `run` exits with 1.
pub(crate) fn main<C, E: Display>(
    name: &str,
    usage: &str,
    parse: impl FnOnce(&mut Flags) -> Result<Option<C>, String>,
    run: impl FnOnce(&C) -> Result<(), E>,
) -> ExitCode {
    let mut flags = Flags::new(std::env::args().skip(1));
    match parse(&mut flags) {
        Ok(Some(config)) => match run(&config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{name}: {e}");
                ExitCode::FAILURE
            }
        },
        Ok(None) => {
            // A closed stdout (`--help | head -1`) is not worth a panic.
            let _ = writeln!(io::stdout(), "{usage}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!(
                "{name}: {message}\n{}\n(see --help)",
                usage.lines().next().unwrap_or_default()
            );
            ExitCode::from(2)
        }
    }
}

/// Command-line arguments read as flags, each followed by its value either
/// as the next argument (`--addr 127.0.0.1:0`) or after `=`
/// (`--addr=127.0.0.1:0`).
#[derive(Debug)]
pub(crate) struct Flags {
    args: std::vec::IntoIter<String>,
    /// The flag [`next_flag`](Flags::next_flag) returned last.
    flag: String,
    /// Its value, if it came after `=`.
    inline: Option<String>,
}

impl Flags {
    pub(crate) fn new(args: impl IntoIterator<Item = String>) -> Flags {
        Flags {
            args: args.into_iter().collect::<Vec<_>>().into_iter(),
            flag: String::new(),
            inline: None,
        }
    }

    /// The next flag, without any `=value`; `None` after the last.
    pub(crate) fn next_flag(&mut self) -> Option<String> {
        let arg = self.args.next()?;
        (self.flag, self.inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_string(), Some(value.to_string()))
            }
            _ => (arg, None),
        };
        Some(self.flag.clone())
    }

    /// The value of the current flag.
    pub(crate) fn value(&mut self) -> Result<String, String> {
        self.inline
            .take()
            .or_else(|| self.args.next())
            .ok_or_else(|| format!("{} needs a value", self.flag))
    }

    /// The value of the current flag as a `T` for which `ok` holds; the
    /// error says the value is not `what`.
    pub(crate) fn parse<T: FromStr>(
        &mut self,
        what: &str,
        ok: impl FnOnce(&T) -> bool,
    ) -> Result<T, String> {
        let text = self.value()?;
        text.parse()
            .ok()
            .filter(ok)
            .ok_or_else(|| format!("{}: {text:?} is not {what}", self.flag))
    }

    /// The value of the current flag as a number of milliseconds.
    pub(crate) fn millis(&mut self) -> Result<u64, String> {
        self.parse("a number of milliseconds", |_| true)
    }

    /// The error for a flag the example does not know.
    pub(crate) fn unknown(&self) -> String {
        format!("unknown argument {:?}", self.flag)
    }
}

#[cfg(test)]
mod tests {
    use super::Flags;

    fn flags(args: &[&str]) -> Flags {
        Flags::new(args.iter().map(|a| a.to_string()))
    }

    #[test]
    fn values_follow_or_come_after_equals() {
        let mut f = flags(&["--addr", "127.0.0.1:0", "--timeout-ms=250", "-h"]);
        assert_eq!(f.next_flag().as_deref(), Some("--addr"));
        assert_eq!(f.value().unwrap(), "127.0.0.1:0");
        assert_eq!(f.next_flag().as_deref(), Some("--timeout-ms"));
        assert_eq!(f.millis().unwrap(), 250);
        assert_eq!(f.next_flag().as_deref(), Some("-h"));
        assert_eq!(f.next_flag(), None);
    }

    #[test]
    fn bad_values_are_named() {
        let mut f = flags(&["--size=0", "--count", "x", "--addr"]);
        f.next_flag();
        assert_eq!(
            f.parse::<usize>("in 1..=64", |n| (1..=64).contains(n)),
            Err(r#"--size: "0" is not in 1..=64"#.to_string())
        );
        f.next_flag();
        assert_eq!(
            f.millis(),
            Err(r#"--count: "x" is not a number of milliseconds"#.to_string())
        );
        f.next_flag();
        assert_eq!(f.value(), Err("--addr needs a value".to_string()));
        assert_eq!(f.unknown(), r#"unknown argument "--addr""#);
    }

    #[test]
    fn an_equals_sign_in_a_value_is_kept() {
        let mut f = flags(&["--addr", "a=b", "--x=y=z"]);
        f.next_flag();
        assert_eq!(f.value().unwrap(), "a=b");
        assert_eq!(f.next_flag().as_deref(), Some("--x"));
        assert_eq!(f.value().unwrap(), "y=z");
    }
}
