//! `created_by` texts of history entries, byte for byte as BuildKit's Dockerfile frontend
//! writes them (Go's `%q` and `%v` formatting included), so tools that show an image's
//! history see what they see for a BuildKit image.

use std::time::Duration;

use crate::dockerfile::dump::go_quote;

/// The `comment` of every entry the Dockerfile frontend writes.
pub const COMMENT: &str = "buildkit.dockerfile.v0";

/// Go's `fmt.Sprintf("%q", []string{…})`: `["a" "b"]`.
pub fn go_quoted_list(items: &[String]) -> String {
    let inner: Vec<String> = items.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", inner.join(" "))
}

/// Go's `fmt.Sprintf("%v", []string{…})`: `[a b]`.
pub fn go_list(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

/// Go's `time.Duration.String()`.
pub fn go_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    fn frac(value: u128, unit: u128) -> String {
        let whole = value / unit;
        let rest = value % unit;
        if rest == 0 {
            return whole.to_string();
        }
        let digits = unit.to_string().len() - 1;
        let f = format!("{rest:0digits$}");
        format!("{whole}.{}", f.trim_end_matches('0'))
    }
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return format!("{}µs", frac(ns, 1_000));
    }
    if ns < 1_000_000_000 {
        return format!("{}ms", frac(ns, 1_000_000));
    }
    let secs_total = ns / 1_000_000_000;
    let sub = ns % 1_000_000_000;
    let h = secs_total / 3600;
    let m = (secs_total % 3600) / 60;
    let s = secs_total % 60;
    let secs = frac(s * 1_000_000_000 + sub, 1_000_000_000);
    match (h, m) {
        (0, 0) => format!("{secs}s"),
        (0, m) => format!("{m}m{secs}s"),
        (h, m) => format!("{h}h{m}m{secs}s"),
    }
}

/// `RUN`: the argv (shell prepended for the shell form), with `|N K=V …` in front when
/// ARGs were declared in the stage.
pub fn run(argv: &[String], build_args: &[(String, String)]) -> String {
    let mut parts: Vec<String> = Vec::new();
    if !build_args.is_empty() {
        parts.push(format!("|{}", build_args.len()));
        parts.extend(build_args.iter().map(|(k, v)| format!("{k}={v}")));
    }
    parts.extend(argv.iter().cloned());
    format!("RUN {} # buildkit", parts.join(" "))
}

/// `HEALTHCHECK %+v` of Docker's `HealthcheckConfig`.
pub fn healthcheck(h: &super::Healthcheck) -> String {
    let d = |ns: u64| go_duration(Duration::from_nanos(ns));
    format!(
        "HEALTHCHECK {{Test:{} Interval:{} Timeout:{} StartPeriod:{} StartInterval:{} Retries:{}}}",
        go_list(&h.test),
        d(h.interval),
        d(h.timeout),
        d(h.start_period),
        d(h.start_interval),
        h.retries
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_as_go() {
        assert_eq!(go_duration(Duration::from_secs(30)), "30s");
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(go_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn run_lists_build_args() {
        let argv = vec!["/bin/sh".to_string(), "-c".into(), "echo hi".into()];
        assert_eq!(run(&argv, &[]), "RUN /bin/sh -c echo hi # buildkit");
        assert_eq!(
            run(&argv, &[("A".into(), "1".into())]),
            "RUN |1 A=1 /bin/sh -c echo hi # buildkit"
        );
        assert_eq!(
            go_quoted_list(&["sh".into(), "-c".into()]),
            r#"["sh" "-c"]"#
        );
    }
}
