//! Command-line reading shared by the `perf/` drivers (`dispatch`,
//! `reports`): `--flag value` or `--flag=value`, and counts with `_` or `,`
//! separators and a k/m suffix. Not an example of its own (a file in a
//! folder of `examples/`); each driver includes it with `#[path]`.

/// The arguments after the program name, read flag by flag.
pub struct Flags {
    args: std::iter::Skip<std::env::Args>,
    usage: &'static str,
}

impl Flags {
    /// `usage` is printed for `-h` or `--help`, which then exit.
    pub fn new(usage: &'static str) -> Flags {
        Flags {
            args: std::env::args().skip(1),
            usage,
        }
    }

    /// The next flag, and its value when it came as `--flag=value`.
    pub fn next_flag(&mut self) -> Option<(String, Option<String>)> {
        let arg = self.args.next()?;
        if arg == "-h" || arg == "--help" {
            println!("{}", self.usage);
            std::process::exit(0);
        }
        Some(match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg, None),
        })
    }

    /// The value of `flag`: the inline one, else the next argument.
    pub fn value(&mut self, flag: &str, inline: Option<String>) -> Result<String, String> {
        inline
            .or_else(|| self.args.next())
            .ok_or_else(|| format!("{flag} needs a value"))
    }
}

/// A count; `_` and `,` separators and a k/m suffix are allowed.
pub fn number(s: &str) -> Result<u64, String> {
    let t: String = s.chars().filter(|c| *c != '_' && *c != ',').collect();
    let (digits, mult) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1_000),
        Some('m' | 'M') => (&t[..t.len() - 1], 1_000_000),
        _ => (&t[..], 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("not a count: {s:?}"))
}
