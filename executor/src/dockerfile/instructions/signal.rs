//! `STOPSIGNAL` values, checked the way BuildKit checks them when it dispatches the
//! instruction (after expansion, so only stages the target needs are checked).
//!
//! A value is a signal when it is
//! - a decimal integer (optional sign, 64-bit) other than 0: any such number is accepted,
//!   even one no kernel has; or
//! - a Linux signal name, in any case, with or without the `SIG` prefix: `TERM`,
//!   `sigkill`, `SIGRTMIN+3`, `RTMAX-2`.
//!
//! Anything else is `invalid signal: <value>`.

/// A STOPSIGNAL value that names no signal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid signal: {0}")]
pub struct InvalidSignal(pub String);

/// Signal names without `SIG`, as Linux numbers them (the realtime ones are generated).
const NAMED: &[(&str, i32)] = &[
    ("ABRT", 6),
    ("ALRM", 14),
    ("BUS", 7),
    ("CHLD", 17),
    ("CLD", 17),
    ("CONT", 18),
    ("FPE", 8),
    ("HUP", 1),
    ("ILL", 4),
    ("INT", 2),
    ("IO", 29),
    ("IOT", 6),
    ("KILL", 9),
    ("PIPE", 13),
    ("POLL", 29),
    ("PROF", 27),
    ("PWR", 30),
    ("QUIT", 3),
    ("SEGV", 11),
    ("STKFLT", 16),
    ("STOP", 19),
    ("SYS", 31),
    ("TERM", 15),
    ("TRAP", 5),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("USR1", 10),
    ("USR2", 12),
    ("VTALRM", 26),
    ("WINCH", 28),
    ("XCPU", 24),
    ("XFSZ", 25),
];

const RT_MIN: i32 = 34;
const RT_MAX: i32 = 64;

/// The signal number `value` stands for.
pub fn parse_stop_signal(value: &str) -> Result<i64, InvalidSignal> {
    let invalid = || InvalidSignal(value.to_string());
    if let Some(n) = go_atoi(value) {
        return if n == 0 { Err(invalid()) } else { Ok(n) };
    }
    let upper = value.to_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some((_, n)) = NAMED.iter().find(|(k, _)| *k == name) {
        return Ok(i64::from(*n));
    }
    realtime(name).map(i64::from).ok_or_else(invalid)
}

/// `RTMIN`, `RTMIN+1` … `RTMIN+15`, `RTMAX-14` … `RTMAX-1`, `RTMAX`.
fn realtime(name: &str) -> Option<i32> {
    let offset = |s: &str, max: i32| -> Option<i32> {
        let n: i32 = s.parse().ok()?;
        // Written without a sign or leading zeros, as the names are.
        (n.to_string() == s && (1..=max).contains(&n)).then_some(n)
    };
    match name {
        "RTMIN" => Some(RT_MIN),
        "RTMAX" => Some(RT_MAX),
        _ => {
            if let Some(rest) = name.strip_prefix("RTMIN+") {
                offset(rest, 15).map(|n| RT_MIN + n)
            } else {
                let rest = name.strip_prefix("RTMAX-")?;
                offset(rest, 14).map(|n| RT_MAX - n)
            }
        }
    }
}

/// Go's `strconv.Atoi`: an optional `+`/`-`, then ASCII digits, fitting in 64 bits.
fn go_atoi(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i64 = digits.parse().ok()?;
    Some(if s.starts_with('-') { -n } else { n })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_any_case_with_or_without_sig() {
        assert_eq!(parse_stop_signal("SIGTERM"), Ok(15));
        assert_eq!(parse_stop_signal("term"), Ok(15));
        assert_eq!(parse_stop_signal("SigKill"), Ok(9));
        assert_eq!(parse_stop_signal("SIGRTMIN+3"), Ok(37));
        assert_eq!(parse_stop_signal("rtmax-2"), Ok(62));
        assert_eq!(parse_stop_signal("RTMAX"), Ok(64));
    }

    #[test]
    fn any_nonzero_number_is_a_signal() {
        assert_eq!(parse_stop_signal("9"), Ok(9));
        assert_eq!(parse_stop_signal("+9"), Ok(9));
        assert_eq!(parse_stop_signal("1000"), Ok(1000));
        assert_eq!(parse_stop_signal("-1"), Ok(-1));
    }

    #[test]
    fn everything_else_is_invalid() {
        for bad in [
            "0",
            "-0",
            "",
            "SIGFOO",
            "SIG",
            "TERM ",
            "RTMIN+16",
            "RTMAX-15",
            "RTMIN+01",
            "RTMIN+",
            "99999999999999999999",
            "1.5",
        ] {
            assert_eq!(
                parse_stop_signal(bad),
                Err(InvalidSignal(bad.to_string())),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse_stop_signal("SIGFOO").unwrap_err().to_string(),
            "invalid signal: SIGFOO"
        );
    }
}
