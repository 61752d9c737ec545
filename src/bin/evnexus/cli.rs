//! The command line: options, their defaults and ranges, and `--help`.
//!
//! Hand-written rather than with clap: the binary shares the package's
//! `[dependencies]`, so an argument-parsing crate would be compiled by every
//! user of the library.

use std::ffi::OsString;
use std::time::Duration;

pub(crate) const USAGE: &str = "\
usage: evnexus [--backend uring|epoll|hooks] [--ring-entries N] [--domains N]
               [--threads T] [--seconds S] [--rate R]
               [--rss-every S] [--rss-warmup S]

Load simulation of the evnexus engine: N domains, each a socketpair channel,
a heartbeat timer and a periodic keepalive, carried by the engine's built-in
loop (uring, epoll) or by the application's own poll() loop (hooks), while a
churn thread re-registers watches and timers and T threads report occurred
calls that
race the loop: replayed, forged, wrong-fd and wrong-kind tokens, duplicate
reports (and with hooks the genuine events too, late and out of order).
Checks itself and prints a summary; the last line is `misdeliveries: N`.
SIGTERM ends the load early; the run then finishes as usual.

options:
  --backend B       who carries the registrations: uring (the built-in
                    loop on io_uring; without this option it falls back to
                    epoll where the kernel refuses io_uring, asked for
                    explicitly it does not), epoll (the built-in loop on
                    epoll), hooks (this program's poll() loop)     [uring]
  --ring-entries N  io_uring submission queue entries (uring only) [256]
  --domains N       simulated domains                               [64]
  --threads T       threads that deliver occurred calls             [4]
  --seconds S       seconds of load (fractions allowed), then a drain
                    phase and teardown checks                       [10]
  --rate R          messages per second written by the traffic thread;
                    with uring/epoll the delivery threads also get about
                    R/2 + 5000 racing reports per second           [100000]
  --rss-every S     sample the resident set (VmRSS) every S seconds of
                    the load and report its curve: first, min, max,
                    last, and max/min after the warm-up       [no sampling]
  --rss-warmup S    seconds of load before the curve is expected to be
                    flat                  [60, at most half of --seconds]
  -h, --help        print this help

exit status: 0 every check passed; 1 a check failed (misdelivery, lost
event, accounting mismatch, engine error); 2 bad usage.";

/// Which backend the simulation asks for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum SimBackend {
    /// No `--backend`: io_uring, falling back to epoll where the kernel
    /// refuses it (as `Engine::new` does).
    Default,
    Uring,
    Epoll,
    Hooks,
}

impl SimBackend {
    pub(crate) fn builtin(self) -> bool {
        self != SimBackend::Hooks
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    pub(crate) backend: SimBackend,
    pub(crate) ring_entries: Option<u32>,
    pub(crate) domains: usize,
    pub(crate) threads: usize,
    pub(crate) seconds: f64,
    pub(crate) rate: u64,
    /// Seconds between RSS samples; `None`: no sampling.
    pub(crate) rss_every: Option<f64>,
    /// Seconds of warm-up; `None`: [`Config::rss_warmup`] decides.
    pub(crate) rss_warmup: Option<f64>,
}

impl Config {
    /// The RSS curve's warm-up: as asked, else 60 s or half the load,
    /// whichever is shorter (the resident set still steps up now and then
    /// in the first 40 s or so: hash tables, queues and the allocator's
    /// per-thread arenas reaching their working size).
    pub(crate) fn rss_warmup(&self) -> Duration {
        Duration::from_secs_f64(self.rss_warmup.unwrap_or(self.seconds.min(120.0) / 2.0))
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            backend: SimBackend::Default,
            ring_entries: None,
            domains: 64,
            threads: 4,
            seconds: 10.0,
            rate: 100_000,
            rss_every: None,
            rss_warmup: None,
        }
    }
}

/// `Ok(None)`: help was asked for.
pub(crate) fn parse_args(args: Vec<OsString>) -> Result<Option<Config>, String> {
    let mut cfg = Config::default();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let arg = arg
            .into_string()
            .map_err(|a| format!("argument {a:?} is not valid UTF-8"))?;
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        const OPTIONS: [&str; 8] = [
            "--backend",
            "--ring-entries",
            "--domains",
            "--threads",
            "--seconds",
            "--rate",
            "--rss-every",
            "--rss-warmup",
        ];
        if !OPTIONS.contains(&name.as_str()) {
            return Err(format!("unknown argument '{arg}'"));
        }
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .ok_or_else(|| format!("{name} needs a value"))?
                .into_string()
                .map_err(|a| format!("value {a:?} of {name} is not valid UTF-8"))?,
        };
        match name.as_str() {
            "--backend" => {
                cfg.backend = match value.trim() {
                    "uring" => SimBackend::Uring,
                    "epoll" => SimBackend::Epoll,
                    "hooks" => SimBackend::Hooks,
                    other => {
                        return Err(format!(
                            "--backend: unknown backend '{other}' (uring, epoll or hooks)"
                        ))
                    }
                }
            }
            "--ring-entries" => {
                cfg.ring_entries = Some(parse_count(&name, &value, 1, 32_768)? as u32);
            }
            "--domains" => cfg.domains = parse_count(&name, &value, 1, 100_000)? as usize,
            "--threads" => cfg.threads = parse_count(&name, &value, 1, 1024)? as usize,
            "--rate" => cfg.rate = parse_count(&name, &value, 0, 100_000_000)?,
            "--seconds" => cfg.seconds = parse_seconds(&name, &value, false)?,
            "--rss-every" => cfg.rss_every = Some(parse_seconds(&name, &value, false)?),
            _ => cfg.rss_warmup = Some(parse_seconds(&name, &value, true)?),
        }
    }
    if cfg.ring_entries.is_some() && !matches!(cfg.backend, SimBackend::Default | SimBackend::Uring)
    {
        return Err("--ring-entries applies to the uring backend only".to_owned());
    }
    Ok(Some(cfg))
}

/// Seconds, fractions allowed: `0 < S <= 86400` (`0 <= S` if `zero_ok`).
fn parse_seconds(name: &str, value: &str, zero_ok: bool) -> Result<f64, String> {
    let s: f64 = value
        .trim()
        .parse()
        .map_err(|_| format!("{name}: '{value}' is not a number of seconds"))?;
    let low_ok = s > 0.0 || (zero_ok && s == 0.0);
    if !(s.is_finite() && low_ok && s <= 86_400.0) {
        let low = if zero_ok { "0 <=" } else { "0 <" };
        return Err(format!(
            "{name}: {value} is out of range ({low} S <= 86400)"
        ));
    }
    Ok(s)
}

/// A whole number in `min..=max` (`_` separators allowed).
fn parse_count(name: &str, value: &str, min: u64, max: u64) -> Result<u64, String> {
    let n: u64 = value
        .trim()
        .replace('_', "")
        .parse()
        .map_err(|_| format!("{name}: '{value}' is not a whole number"))?;
    if n < min || n > max {
        return Err(format!("{name}: {n} is out of range ({min}..={max})"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Config>, String> {
        parse_args(args.iter().map(OsString::from).collect())
    }

    #[test]
    fn no_arguments_give_the_defaults() {
        let cfg = parse(&[]).unwrap().unwrap();
        assert_eq!(cfg.backend, SimBackend::Default);
        assert_eq!((cfg.domains, cfg.threads, cfg.rate), (64, 4, 100_000));
        assert_eq!(cfg.rss_every, None);
        assert_eq!(cfg.rss_warmup(), Duration::from_secs(5));
    }

    #[test]
    fn options_take_separate_or_inline_values() {
        let cfg = parse(&["--backend", "hooks", "--seconds=2.5", "--rss-every", "10"])
            .unwrap()
            .unwrap();
        assert_eq!(cfg.backend, SimBackend::Hooks);
        assert_eq!(cfg.seconds, 2.5);
        assert_eq!(cfg.rss_every, Some(10.0));
    }

    #[test]
    fn rss_warm_up_is_60_s_at_most_half_the_load_unless_given() {
        let cfg = parse(&["--seconds", "3600"]).unwrap().unwrap();
        assert_eq!(cfg.rss_warmup(), Duration::from_secs(60));
        let cfg = parse(&["--seconds", "3600", "--rss-warmup", "0"])
            .unwrap()
            .unwrap();
        assert_eq!(cfg.rss_warmup(), Duration::ZERO);
    }

    #[test]
    fn help_is_not_a_config() {
        assert_eq!(
            parse(&["--seconds", "1", "-h"]).unwrap().map(|c| c.seconds),
            None
        );
    }

    #[test]
    fn bad_input_is_an_error_that_names_the_option() {
        for (args, needle) in [
            (&["--seconds", "0"][..], "--seconds"),
            (&["--rss-every", "-1"][..], "--rss-every"),
            (&["--rss-every", "nan"][..], "--rss-every"),
            (&["--domains", "0"][..], "--domains"),
            (&["--threads"][..], "--threads needs a value"),
            (&["--backend", "kqueue"][..], "unknown backend"),
            (
                &["--backend", "epoll", "--ring-entries", "4"][..],
                "uring backend only",
            ),
            (&["--frobnicate"][..], "unknown argument"),
        ] {
            let err = parse(args).unwrap_err();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }
}
