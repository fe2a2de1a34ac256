//! Typed value parsers for clap: each flag's text becomes its value once, at parse time, and a
//! bad value becomes the one-line reason `exit::usage` prints (exit 2). Pure: no I/O.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use ctguard::select;

/// A value together with the words the operator typed for it (the audit line repeats them).
#[derive(Debug, Clone)]
pub struct Given<T> {
    /// The parsed value.
    pub value: T,
    /// The text as given on the command line.
    pub text: String,
}

impl<T> fmt::Display for Given<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A parser that keeps the text next to what `parse` makes of it.
pub fn given<T: 'static, E: std::fmt::Display + 'static>(
    parse: fn(&str) -> Result<T, E>,
) -> impl Fn(&str) -> Result<Given<T>, String> + Clone + Send + Sync + 'static {
    move |s| Ok(Given { value: parse(s).map_err(|e| e.to_string())?, text: s.to_string() })
}

/// A count flag's value: a positive whole number (`what` names the unit, e.g. " of flows").
pub fn positive_of(flag: &'static str, what: &'static str, s: &str) -> Result<u64, String> {
    s.parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("invalid {flag} '{s}' (a positive number{what})"))
}

/// `flag` takes a positive whole number.
pub fn positive(
    flag: &'static str,
) -> impl Fn(&str) -> Result<u64, String> + Clone + Send + Sync + 'static {
    move |s| positive_of(flag, "", s)
}

/// `flag` takes a positive number of things held in memory (`-n`: groups shown).
pub fn positive_usize(
    flag: &'static str,
) -> impl Fn(&str) -> Result<usize, String> + Clone + Send + Sync + 'static {
    move |s| {
        let n = positive_of(flag, "", s)?;
        usize::try_from(n).map_err(|_| format!("invalid {flag} '{s}' (a positive number)"))
    }
}

/// `flag` takes a duration, kept in whole seconds (what the kernel's timeouts count in).
pub fn seconds(
    flag: &'static str,
) -> impl Fn(&str) -> Result<u32, String> + Clone + Send + Sync + 'static {
    move |s| {
        let d = select::parse_duration(s).map_err(|e| format!("{flag}: {e}"))?;
        u32::try_from(d.as_secs()).map_err(|_| format!("{flag}: duration '{s}' is too long"))
    }
}

/// `flag` takes a duration longer than zero.
pub fn duration(
    flag: &'static str,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |s| nonzero_duration(flag, s)
}

/// A duration longer than zero for `flag`.
pub fn nonzero_duration(flag: &str, s: &str) -> Result<Duration, String> {
    let d = select::parse_duration(s).map_err(|e| format!("{flag}: {e}"))?;
    if d.is_zero() {
        return Err(format!("{flag}: '{s}' must be longer than zero"));
    }
    Ok(d)
}

/// `what` is a number of type `T` (a zone, a port, an ICMP type).
pub fn number<T: FromStr>(
    what: &'static str,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static {
    move |s| s.parse().map_err(|_| format!("invalid {what} '{s}'"))
}

/// The zone: `invalid zone 'X'` when it is not one.
pub fn zone(s: &str) -> Result<u16, String> {
    number::<u16>("zone")(s)
}

/// `what` is an address (`source`, `reply destination`).
pub fn addr(
    what: &'static str,
) -> impl Fn(&str) -> Result<IpAddr, String> + Clone + Send + Sync + 'static {
    move |s| s.parse().map_err(|_| format!("invalid {what} address '{s}'"))
}

/// Parses a byte size: `65536`, `256K`, `64M`, `1G` (powers of 1024; `KiB`, `MB` also read).
pub fn size(s: &str) -> Result<usize, String> {
    let bad = || format!("invalid --buffer '{s}' (bytes, or a size like 256K, 64M, 1G)");
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let n: usize = t[..digits].parse().map_err(|_| bad())?;
    let unit = t[digits..].trim().to_ascii_lowercase();
    let shift = match unit.trim_end_matches("ib").trim_end_matches('b') {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        _ => return Err(bad()),
    };
    let bytes = n.checked_shl(shift).filter(|b| b >> shift == n).ok_or_else(bad)?;
    if bytes == 0 || bytes > i32::MAX as usize {
        return Err(format!("invalid --buffer '{s}': between 1 byte and 2G"));
    }
    Ok(bytes)
}

/// `N` or `N/s`, a positive number of deletes a second.
pub fn rate(s: &str) -> Result<u32, String> {
    let n = s.strip_suffix("/s").unwrap_or(s);
    n.parse::<u32>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("invalid --rate '{s}' (deletes per second: N or N/s, N > 0)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size("65536"), Ok(65536));
        assert_eq!(size("64M"), Ok(64 << 20));
        assert_eq!(size("256KiB"), Ok(256 << 10));
        assert_eq!(size("1g"), Ok(1 << 30));
        assert!(size("3G").is_err() && size("0").is_err() && size("12X").is_err());
        assert!(size("").is_err() && size("M").is_err());
    }

    #[test]
    fn rates_parse() {
        assert_eq!(rate("50000/s"), Ok(50_000));
        assert_eq!(rate("10"), Ok(10));
        for bad in ["0", "-5", "fast", "10/m", ""] {
            let e = rate(bad).unwrap_err();
            assert!(e.contains("--rate") && !e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn issue_11_6_one_positive_parser_names_its_flag_and_unit() {
        assert_eq!(positive("-n")("5"), Ok(5));
        assert_eq!(positive("-n")("0"), Err("invalid -n '0' (a positive number)".into()));
        assert_eq!(
            positive_of("--limit", " of flows", "x"),
            Err("invalid --limit 'x' (a positive number of flows)".into())
        );
    }

    #[test]
    fn issue_11_3_given_keeps_the_words_typed() {
        let g = given(select::parse_cidr)("10.0.0.0/8").expect("a CIDR");
        assert_eq!(g.to_string(), "10.0.0.0/8");
        assert_eq!(g.value, select::parse_cidr("10.0.0.0/8").expect("a CIDR"));
    }
}
