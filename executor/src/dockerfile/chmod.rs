//! `--chmod` of COPY and ADD: an octal mode or symbolic clauses, parsed when the build is
//! planned and applied to each copied file's own mode.

/// A `--chmod` value BuildKit would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid chmod parameter {0:?}")]
pub struct ChmodError(pub String);

/// `--chmod`: an octal mode, or symbolic clauses (`u+x,go-w`, `a=rX`) applied to each
/// file's own mode, as BuildKit accepts them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chmod {
    Octal(u32),
    Symbolic(Vec<(u32, char, String)>),
}

impl Chmod {
    pub fn parse(s: &str) -> Result<Chmod, ChmodError> {
        let bad = || ChmodError(s.to_string());
        if !s.is_empty() && s.chars().all(|c| c.is_digit(8)) {
            let m = u32::from_str_radix(s, 8).map_err(|_| bad())?;
            return if m <= 0o7777 {
                Ok(Chmod::Octal(m))
            } else {
                Err(bad())
            };
        }
        let mut clauses = Vec::new();
        for clause in s.split(',') {
            let op_at = clause.find(['+', '-', '=']).ok_or_else(bad)?;
            let (who, rest) = clause.split_at(op_at);
            let mut mask = 0;
            for c in who.chars() {
                mask |= match c {
                    'u' => 0o4700,
                    'g' => 0o2070,
                    'o' => 0o1007,
                    'a' => 0o7777,
                    _ => return Err(bad()),
                };
            }
            if who.is_empty() {
                mask = 0o7777;
            }
            let mut chars = rest.chars();
            let op = chars.next().ok_or_else(bad)?;
            let perms: String = chars.collect();
            if !perms.chars().all(|c| "rwxXst".contains(c)) {
                return Err(bad());
            }
            clauses.push((mask, op, perms));
        }
        Ok(Chmod::Symbolic(clauses))
    }

    /// The new mode of a file whose mode is `old`.
    pub fn apply(&self, old: u32, is_dir: bool) -> u32 {
        match self {
            Chmod::Octal(m) => *m,
            Chmod::Symbolic(clauses) => {
                let mut mode = old;
                for (mask, op, perms) in clauses {
                    let mut bits = 0;
                    for p in perms.chars() {
                        bits |= match p {
                            'r' => 0o444,
                            'w' => 0o222,
                            'x' => 0o111,
                            'X' if is_dir || mode & 0o111 != 0 => 0o111,
                            's' => 0o6000,
                            't' => 0o1000,
                            _ => 0,
                        };
                    }
                    let bits = bits & mask;
                    mode = match op {
                        '+' => mode | bits,
                        '-' => mode & !bits,
                        _ => (mode & !(mask & 0o7777)) | bits,
                    };
                }
                mode & 0o7777
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chmod_octal_and_symbolic() {
        assert_eq!(Chmod::parse("755").unwrap().apply(0o600, false), 0o755);
        assert_eq!(Chmod::parse("u+x").unwrap().apply(0o644, false), 0o744);
        assert_eq!(Chmod::parse("go-w,a+r").unwrap().apply(0o666, false), 0o644);
        assert_eq!(Chmod::parse("a=rX").unwrap().apply(0o640, true), 0o555);
        assert_eq!(Chmod::parse("a=rX").unwrap().apply(0o640, false), 0o444);
        assert!(Chmod::parse("9").is_err());
        assert!(Chmod::parse("u*x").is_err());
    }
}
